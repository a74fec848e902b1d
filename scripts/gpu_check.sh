#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): at most 8 minutes on one CUDA GPU, one JSON of figures;
# on a machine without CUDA the same steps, smaller (CI runs it so, to keep it working).
#
# A GPU machine that reaches no package registry gets what it lacks from wheels carried in
# .whl/ beside this checkout: prepare them where pip works with `bash scripts/gpu_wheels.sh`.
# Its own python3 must hold a CUDA build of torch (transformers and peft too, or their wheels).
#
#   bash scripts/gpu_check.sh                 # figures into $OUT, else bench/results/gpu_check/
#   UGRO_GPU_CHECK_PYTHON=.venv/bin/python bash scripts/gpu_check.sh --skip-throughput
set -euo pipefail
cd "$(dirname "$0")/.."
python=${UGRO_GPU_CHECK_PYTHON:-python3}
# Installed only where the machine lacks them (a checkout with its own .venv has them all).
if compgen -G ".whl/*.whl" >/dev/null && ! "$python" -c "import ansible_runner, pydantic" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/ugro-gpu-site .whl/*.whl
  export PYTHONPATH=/tmp/ugro-gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
# ugro runs from this checkout; the built-in cluster names the user running it.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export USER=${USER:-$(id -un)}
export PYTHONUNBUFFERED=1
exec "$python" bench/gpu_check.py --out "${OUT:-bench/results/gpu_check}" "$@"
