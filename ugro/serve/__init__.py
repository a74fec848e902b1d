"""Serving what jobs trained (`ugro serve`): a deployment is one base model with jobs' adapters
on one node, started and then watched by a controller of its own on the master.

`adapters` (which jobs, their adapters and their common base), `engines` (vLLM or UGRO's own
server, and why), `placement` (which node, from a fresh look at the candidates), `deploy` (up:
the files, the playbook, the controller), `controller` (the loop that keeps it serving), and
`__main__` (the controller's process: `python -m ugro.serve <deployment dir>`).
"""
