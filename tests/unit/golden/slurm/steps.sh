#!/bin/bash
# Written by UGRO once each node below had its job files (ugro.slurm.batch).
case "$SLURMD_NODENAME" in
  gpu-master) job_dir='/home/gpuadmin/UGRO/experiments/exp1_20261205_101010' ;;
  gpu1) job_dir='/home/ob/projects/UGRO/experiments/exp1_20261205_101010' ;;
  gpu2) job_dir='/home/ollie/projects/UGRO/experiments/exp1_20261205_101010' ;;
  *) echo "UGRO: $SLURMD_NODENAME is not one of this job's nodes" >&2; exit 97 ;;
esac
exec /bin/bash "$job_dir/supervise.sh"
