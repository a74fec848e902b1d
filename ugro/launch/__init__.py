"""Starting a job: what it is (definition), a new or resumed start (start), one attempt on its
nodes (attempt), why a launch is refused (refusals), each node's torchrun command (torchrun),
how the ranks split a batch (balance), and the stop and collect playbooks (job_playbooks)."""
