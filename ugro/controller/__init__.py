"""A job's controller: one detached process on the master that owns the job until it is over.

    python -m ugro.controller EXPERIMENT_DIR      (started by the launch, the daemon's dispatch
                                                   or any command that finds it dead)

Its loop (ugro.controller.loop) reconciles what the history says with what the nodes say:
observe, decide, act. Its parts: watching an attempt (watch), the nodes' heartbeats and when a
silent node is lost (lost_nodes), what the heartbeats say failed first (detect), ending an
attempt (teardown), the retry rules and the batch a retry keeps (retry, pure) and starting the
next attempt (retrying), leftovers on nodes that were unreachable (leftovers), a launch whose
launcher died (orphans); and, from outside, following a job (follow).

Nothing here is imported by the layers below: the launch starts a controller as a process
(ugro.records.controller_files), never by importing it.
"""
