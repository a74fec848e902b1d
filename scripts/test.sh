#!/usr/bin/env bash
# Set up a fresh checkout and run every gate: linters, then the whole test suite (unit,
# integration against a real sandbox cluster when root, molecule). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A wheel source for the sandbox nodes' environment, where this machine keeps one.
if [ -z "${UGRO_WHEELHOUSE:-}" ] && [ -d /opt/wheels ]; then
  export UGRO_WHEELHOUSE=/opt/wheels
fi
export PATH="$PWD/.venv/bin:$PATH"
echo "test: ruff";         ruff check .
echo "test: yamllint";     yamllint --strict .
echo "test: ansible-lint"; ANSIBLE_HOME="$(mktemp -d)" ansible-lint --offline -q
echo "test: mypy";         mypy --strict ugro
echo "test: imports";      lint-imports --no-cache
echo "test: pytest"
# The suite is a budget: every run lists its slowest tests (the whole of .ci/run stays under
# 20 minutes on a 2-core machine; README's Development section has the figures).
if [ "$#" -gt 0 ]; then
  exec python -m pytest --durations=40 "$@"
fi
# Two runs side by side (one core of two sat idle through a serial suite: the sandbox's tests
# mostly wait on nodes, heartbeats and timeouts). The sandbox's lane: its tests in order, on the
# session's one sandbox. Beside it, every other test (the unit tier, molecule, the built-in
# cluster's jobs, the bench and enrolment on sandboxes of their own), as root in a PID
# namespace of its own: both lanes' masters are this machine, and a job's launch must not see
# the other lane's jobs there, as it would not on another host. Its report follows the first's.
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
  exec python -m pytest --durations=40
fi
beside="$(mktemp)"
unshare --pid --fork --kill-child --mount-proc \
  python tests/first_process.py python -m pytest -m "not sandbox" --durations=30 >"$beside" 2>&1 &
beside_pid=$!
status=0
python -m pytest -m sandbox --durations=30 || status=$?
wait "$beside_pid" || status=$?
echo "test: pytest -m 'not sandbox' (run beside the sandbox's lane, in a PID namespace of its own)"
cat "$beside"
rm -f "$beside"
exit "$status"
