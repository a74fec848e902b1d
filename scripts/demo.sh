#!/usr/bin/env bash
# Set up a fresh checkout and run the main job on the built-in default cluster (this machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo
echo "demo: ugro health on the built-in local cluster"
exec .venv/bin/ugro health
