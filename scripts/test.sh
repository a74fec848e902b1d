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
# Two runs side by side: the sandbox's lane, its tests in order on the session's one sandbox
# (they mostly wait on nodes, heartbeats and timeouts: one core of two sat idle through a serial
# suite) with the tests that start UGRO jobs on this machine (the sandbox's master: a job there
# would see their processes as another job's); and beside it every test that shares nothing
# with them (most of the unit tier, molecule, torchrun on loopback, the wheel). The second
# one's report follows the first's.
beside="$(mktemp)"
python -m pytest -m "not sandbox and not master_jobs" --durations=20 >"$beside" 2>&1 &
beside_pid=$!
status=0
python -m pytest -m "sandbox or master_jobs" --durations=40 || status=$?
wait "$beside_pid" || status=$?
echo "test: pytest -m 'not sandbox and not master_jobs' (run beside the sandbox's lane)"
cat "$beside"
rm -f "$beside"
exit "$status"
