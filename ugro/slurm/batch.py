"""A UGRO job as one sbatch script: Slurm allocates the job's nodes and starts, on each, the
supervisor that UGRO's launch wrote into the node's job directory.

Everything else stays UGRO's: the launch role writes each node's code, launch.sh (torchrun,
its rendezvous on the job's lead) and supervise.sh without starting them; the batch script's
one `srun --multi-prog` starts supervise.sh on every node at once, each by its own path. A
step checks that it landed on the node it was meant for (Slurm's task order is its node order,
which is slurm.conf's, which is the cluster's rank order) and exits 97 otherwise. The step's
words go into a file the batch script writes where it runs: nodes share no file system.

srun's --multi-prog splits a line at spaces and honours single quotes only: a path it could not
pass whole is refused before anything is submitted (`unsafe_paths`). Pinned by a golden file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# What srun's --multi-prog passes as one argument, unquoted.
_SAFE = re.compile(r"[A-Za-z0-9/._+@%=,:-]+")
# A step's check: $1 is the node it was meant for, $2 its supervisor (arguments, never text).
_STEP = 'test "$SLURMD_NODENAME" = "$1" || exit 97; exec /bin/bash "$2"'
WRONG_NODE_EXIT = 97


@dataclass(frozen=True)
class BatchJob:
    job_id: str  # UGRO's: the Slurm job's name
    attempt: int
    partition: str
    nodes: Sequence[str]  # in rank order: the first leads, and Slurm runs the batch script there
    job_dirs: Mapping[str, str]  # each node's job directory
    output: str  # the batch script's own output, in the lead's job directory

    @property
    def supervisors(self) -> dict[str, str]:
        return {node: f"{self.job_dirs[node]}/supervise.sh" for node in self.nodes}


def unsafe_paths(job: BatchJob) -> list[str]:
    """One line per node whose job directory srun could not pass as one argument."""
    return [
        f"{node}: its job directory {job.job_dirs[node]!r} holds a character srun's "
        "--multi-prog cannot pass (a space or a quote); choose paths of letters, digits and "
        "/._-+@ for Slurm"
        for node in job.nodes
        if not _SAFE.fullmatch(job.job_dirs[node])
    ]


def multi_prog(job: BatchJob) -> str:
    """srun's --multi-prog configuration: task i runs on the i-th node of the job."""
    lines = [
        f"{task} /bin/bash -c '{_STEP}' ugro-step {node} {job.supervisors[node]}"
        for task, node in enumerate(job.nodes)
    ]
    return "\n".join(lines) + "\n"


def batch_script(job: BatchJob) -> str:
    """The sbatch script (given to sbatch on its stdin)."""
    if problems := unsafe_paths(job):
        raise ValueError(problems[0])
    nodes = ",".join(job.nodes)
    return (
        "#!/bin/bash\n"
        f"# Written by UGRO for {job.job_id}, attempt {job.attempt}: Slurm allocates its nodes\n"
        "# and srun starts on each the supervisor UGRO's launch wrote there (ugro.slurm.batch).\n"
        f"#SBATCH --job-name={job.job_id}\n"
        f"#SBATCH --partition={job.partition}\n"
        f"#SBATCH --nodes={len(job.nodes)}\n"
        f"#SBATCH --nodelist={nodes}\n"
        "#SBATCH --ntasks-per-node=1\n"
        # Whole nodes: a training job takes every GPU and core it finds, as under UGRO.
        "#SBATCH --exclusive\n"
        f"#SBATCH --output={job.output}\n"
        "#SBATCH --open-mode=append\n"
        "set -euo pipefail\n"
        'steps="$(mktemp)"\n'
        "trap 'rm -f \"$steps\"' EXIT\n"
        "cat > \"$steps\" <<'UGRO_STEPS'\n"
        f"{multi_prog(job)}"
        "UGRO_STEPS\n"
        # Each node's supervisor records its own exit code; one that fails must not end the
        # others' steps before UGRO's controller has seen why.
        'srun --kill-on-bad-exit=0 --ntasks-per-node=1 --multi-prog "$steps"\n'
    )
