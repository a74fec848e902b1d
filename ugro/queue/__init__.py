"""The queue: where waiting jobs go (schedule, pure), sweeps, submitting and dispatching
(submit), and ending a job at a user's word, queued or running (cancel)."""
