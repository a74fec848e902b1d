"""A UGRO job as one sbatch script: Slurm allocates its nodes, UGRO launches on them, and the
script's one srun starts each node's supervisor.

The script asks for the job's nodes by name, or for a number of them that Slurm picks (a
range on a retry: `--nodes=2-3`), and waits on the node Slurm runs it on (the first of the
allocation) for a steps script. UGRO's controller, seeing the allocation in squeue, runs the
launch playbook on exactly those nodes (each node's code, launch.sh with the rendezvous on the
first allocated node, supervise.sh, none started), then writes the steps script there; srun
runs it once per node, and each node execs its own supervisor, found by the name its slurmd
goes by (no reliance on Slurm's task order). A node that is not one UGRO launched on exits 97.

Nodes share no file system: the script's words go into the job directory of the node it runs
on. Paths are written into the scripts single-quoted: one holding a quote, a space or a shell
character is refused before anything is submitted (`unsafe_paths`). Pinned by golden files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# A path the scripts can carry as one word.
_SAFE = re.compile(r"[A-Za-z0-9/._+@%=,:-]+")
WRONG_NODE_EXIT = 97
# How long the script waits for UGRO's launch on its allocation before it gives the nodes back.
RELEASE_WAIT_S = 600


@dataclass(frozen=True)
class BatchJob:
    job_id: str  # UGRO's: the Slurm job's name
    attempt: int
    partition: str
    job_dirs: Mapping[str, str]  # each node Slurm may give the job, in rank order: its job dir
    nodes: Sequence[str] = ()  # exactly these nodes; empty: any `count` of job_dirs' nodes
    count: int = 0  # how many nodes, when Slurm picks them
    fewest: int = 0  # Slurm may start it on as few as this (a retry's --min-nodes); 0: count
    exclude: Sequence[str] = ()  # nodes Slurm must not pick (a retry's unanswering nodes)
    gpus_per_node: int = 0  # GPUs on each node (--gres); 0: none asked for

    def node_request(self) -> list[str]:
        if self.nodes:
            return [f"--nodes={len(self.nodes)}", f"--nodelist={','.join(self.nodes)}"]
        fewest = self.fewest or self.count
        wanted = [f"--nodes={fewest}" if fewest == self.count else f"--nodes={fewest}-{self.count}"]
        return wanted + ([f"--exclude={','.join(self.exclude)}"] if self.exclude else [])


def unsafe_paths(job_dirs: Mapping[str, str]) -> list[str]:
    """One line per node whose job directory the scripts could not carry as one word."""
    return [
        f"{node}: its job directory {path!r} holds a character UGRO's Slurm scripts cannot "
        "carry (a space, a quote, a shell character); choose paths of letters, digits and "
        "/._-+@ for Slurm"
        for node, path in job_dirs.items()
        if not _SAFE.fullmatch(path)
    ]


def steps_path(job_dir: str, slurm_id: str) -> str:
    """Where UGRO writes the steps script for Slurm's job `slurm_id` on the node running it."""
    return f"{job_dir}/slurm/steps-{slurm_id}.sh"


def _node_cases(job_dirs: Mapping[str, str], action: str) -> str:
    """A `case` on the node's name: `action` with $job_dir set for each node, 97 for others."""
    cases = "".join(f"  {node}) job_dir='{path}' ;;\n" for node, path in job_dirs.items())
    return (
        'case "$SLURMD_NODENAME" in\n'
        f"{cases}"
        f'  *) echo "UGRO: $SLURMD_NODENAME is not one of this job\'s nodes" >&2; '
        f"exit {WRONG_NODE_EXIT} ;;\n"
        "esac\n"
        f"{action}"
    )


def batch_script(job: BatchJob) -> str:
    """The sbatch script (given to sbatch on its stdin)."""
    if problems := unsafe_paths(job.job_dirs):
        raise ValueError(problems[0])
    gres = [f"--gres=gpu:{job.gpus_per_node}"] if job.gpus_per_node else []
    options = [
        f"--job-name={job.job_id}",
        f"--partition={job.partition}",
        *job.node_request(),
        "--ntasks-per-node=1",
        # Whole nodes: a training job takes every GPU and core it finds, as under UGRO.
        "--exclusive",
        *gres,
        "--chdir=/",
        # Its words go into the job directory of the node it runs on (below).
        "--output=/dev/null",
    ]
    return (
        "#!/bin/bash\n"
        f"# Written by UGRO for {job.job_id}, attempt {job.attempt}: Slurm allocates its nodes,\n"
        "# UGRO launches on them and writes the steps this script waits for (ugro.slurm.batch).\n"
        + "".join(f"#SBATCH {option}\n" for option in options)
        + "set -euo pipefail\n"
        + _node_cases(
            job.job_dirs,
            'mkdir -p "$job_dir/logs" "$job_dir/slurm"\n'
            'exec >>"$job_dir/logs/slurm-$SLURM_JOB_ID.out" 2>&1\n'
            f'steps="{steps_path("$job_dir", "$SLURM_JOB_ID")}"\n'
            "waited=0\n"
            'until [ -f "$steps" ]; do\n'
            f'  if [ "$waited" -ge {RELEASE_WAIT_S} ]; then\n'
            f'    echo "UGRO did not launch on the allocation within {RELEASE_WAIT_S} s"; exit 1\n'
            "  fi\n"
            "  sleep 1; waited=$((waited + 1))\n"
            "done\n"
            # Each node's supervisor records its own exit code; one that fails must not end
            # the others' steps before UGRO's controller has seen why.
            'srun --kill-on-bad-exit=0 --ntasks-per-node=1 /bin/bash "$steps"\n',
        )
    )


def steps_script(job_dirs: Mapping[str, str]) -> str:
    """What srun runs on each allocated node: that node's supervisor, by its slurmd's name."""
    if problems := unsafe_paths(job_dirs):
        raise ValueError(problems[0])
    return (
        "#!/bin/bash\n"
        "# Written by UGRO once each node below had its job files (ugro.slurm.batch).\n"
        + _node_cases(job_dirs, 'exec /bin/bash "$job_dir/supervise.sh"\n')
    )


def allocated_in_rank_order(allocated: Sequence[str], ranked: Sequence[str]) -> list[str]:
    """The allocation's nodes in the cluster's rank order (the first leads the job)."""
    chosen = set(allocated)
    return [node for node in ranked if node in chosen]
