"""The core every other package stands on: errors, the resolved cluster, job names and what a
job directory holds, files written atomically, processes on this machine, logging. Imports
nothing of ugro's above it."""
