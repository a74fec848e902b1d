"""What jobs left, read on the master: curves and per-rank figures (metrics), a job's figures
and summary.json (summary), what differs between jobs (compare), plots, and rank logs
(logview). Reads files only; never a node."""
