#!/usr/bin/env bash
# Ansible managed
# UGRO job exp1_20261129_101010 on gpu1: the torchrun agent for
# 1 of the job's ranks. Run by supervise.sh; safe to read, not to edit.
set -euo pipefail
cd /home/ob/projects/UGRO/data/experiments/exp1_20261129_101010

# Every process of the job inherits this tag: `ugro stop` finds them all by it.
export UGRO_JOB_ID=exp1_20261129_101010
export UGRO_NODE=gpu1
# 1 for the launch, then one more per retry or resume: a script may resume when it is above 1.
export UGRO_ATTEMPT=1
export UGRO_OUTPUT_DIR=/home/ob/projects/UGRO/data/experiments/exp1_20261129_101010
# The lead node's first rank writes the job's metrics and artifacts (on the master: straight into
# its experiment directory; on a worker: brought there by the collect).
export UGRO_PRIMARY=0
export UGRO_DIST_TIMEOUT=300
export OMP_NUM_THREADS=22
export PYTHONUNBUFFERED=1
# Collectives must use the interface that holds this node's cluster address, not whatever a
# hostname resolves to (often 127.0.1.1).
export GLOO_SOCKET_IFNAME=eno1
export NCCL_SOCKET_IFNAME=eno1
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
# How the ranks split each micro-step's samples (train_production.py's trainlib/balance.py):
# equal, auto (probed), or manual (this node's micro_batch_size from cluster.yaml).
export UGRO_BALANCE=equal
# cluster.yaml's hardware.vram_gb: the memory a rank's micro-batch must fit (on a CPU node, the
# declared budget that stands in for device memory).
export UGRO_MEMORY_BUDGET_GB=8.0

if [ -f .secrets/hf_token ]; then
  HF_TOKEN="$(cat .secrets/hf_token)"
  export HF_TOKEN
  rm -f .secrets/hf_token
fi

exec /home/ob/projects/UGRO/.pixi/envs/main/bin/python -m torch.distributed.run --nnodes 3 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 192.168.1.100:29500 --rdzv-id exp1_20261129_101010 --rdzv-conf is_host=0,join_timeout=300 --max-restarts 0 --local-addr 192.168.1.101 /home/ob/projects/UGRO/data/experiments/exp1_20261129_101010/code/scripts/ugro_rank.py --log-dir /home/ob/projects/UGRO/data/experiments/exp1_20261129_101010/logs -- /home/ob/projects/UGRO/data/experiments/exp1_20261129_101010/code/scripts/train_production.py --epochs 1 '$(rm -rf ~) '"'"'quoted'"'"' `x`'
