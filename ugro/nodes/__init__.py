"""Reaching the nodes: where ugro's playbooks and node-side programs live (assets, scripts), the
inventory, SSH, ansible-runner, a job's heartbeat line to a node (link), and the sync's
preview."""
