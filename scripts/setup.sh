#!/usr/bin/env bash
# Set up this checkout for ugro: system packages (when run as root), then a virtualenv in .venv
# holding ugro (editable) with its training and development extras.
#
#   UGRO_TORCH_SPEC  the torch to install (default torch==2.13.0). Always pinned: an unpinned
#                    torch pulls a multi-GB CUDA build. Use a CUDA build on GPU machines.
#   UGRO_PYTHON      the interpreter to build .venv from (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

torch_spec="${UGRO_TORCH_SPEC:-torch==2.13.0}"
python="${UGRO_PYTHON:-python3}"

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # The sandbox's hosts (iproute2, openssh-server), the nodes' Python (python3-venv),
  # systemd-analyze (systemd) to check the daemon's unit file, a browser (chromium) for
  # the dashboard's tests (playwright drives it; its own browser download is not used), and
  # Slurm with munge and sudo for `ugro sandbox up --slurm` (the ugro_slurm role's tests).
  echo "setup: installing system packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client iproute2 rsync procps python3 python3-venv systemd chromium \
    sudo munge slurmctld slurmd slurm-client >/dev/null
else
  echo "setup: not root (or no apt-get): skipping system packages; sandbox tests will be skipped"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
echo "setup: installing ugro[train,dev] and $torch_spec into .venv"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[train,dev]" "$torch_spec"
echo "setup: done. Activate with: source .venv/bin/activate"
