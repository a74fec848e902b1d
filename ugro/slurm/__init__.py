"""Slurm on a UGRO cluster: its settings, its configuration files, and deploying it."""
