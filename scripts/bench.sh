#!/usr/bin/env bash
# Set up this checkout and run UGRO's benchmarks (root: they run on a sandbox). Extra arguments
# go to bench/run.py, e.g. --smoke, --reps 3, --sizes 3,8.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# mitogen, for the Ansible-settings table (the strategy is measured, not used by ugro); trl and
# datasets, for bench/throughput.py's anchor (TRL's SFTTrainer).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[bench]" "${UGRO_TORCH_SPEC:-torch==2.13.0}"
if [ -z "${UGRO_WHEELHOUSE:-}" ] && [ -d /opt/wheels ]; then
  export UGRO_WHEELHOUSE=/opt/wheels
fi
exec .venv/bin/python bench/run.py "$@"
