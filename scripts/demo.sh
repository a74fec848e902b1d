#!/usr/bin/env bash
# Set up a fresh checkout and run the main job on the built-in default cluster (this machine):
# a health check, then a real LoRA fine-tuning job (the tiny Llama, offline) under torchrun.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo
echo "demo: ugro health"
ugro health
echo
echo "demo: ugro launch --name demo (follows the job; the results table closes it)"
ugro launch --name demo
echo
echo "demo: see it again with: .venv/bin/ugro results demo; .venv/bin/ugro logs demo"
