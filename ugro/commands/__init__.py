"""One module per verb: what `ugro <verb>` does, once `ugro.cli` has parsed its arguments.

Each takes the shared `Context` (which cluster, how verbose) and the verb's options, does the
work through the library modules (config, runner, launch, control, follow, jobs, health), prints
what the user asked for, and returns an exit code. `ugro run <playbook>` reaches the same
functions for ugro's own playbooks, so each verb has one path.
"""
