#!/usr/bin/env bash
# Wheels for the GPU check (scripts/gpu_check.sh) on a machine that reaches no package registry:
# what ugro and the throughput bench need beyond the GPU machine's own Python (which holds torch,
# transformers, peft, accelerate, click, rich, pyyaml, jinja2, matplotlib, tensorboard, nvidia-ml-py
# and psutil). Run where pip works; the wheels land in .whl/ (ignored by git), to be carried
# with the checkout. PYTHON_VERSION: the GPU machine's (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${PYTHON_VERSION:-3.12}
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 -d .whl \
  "ansible-core==2.19.*" ansible-runner pexpect ptyprocess python-daemon lockfile resolvelib \
  cryptography cffi pycparser "pydantic==2.14.4" "pydantic-core==2.50.5" annotated-types typing-inspection \
  filelock starlette uvicorn \
  trl datasets dill multiprocess
ls .whl
