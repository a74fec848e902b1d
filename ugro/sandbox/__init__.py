"""`ugro sandbox`: a real multi-host cluster on one machine, the way kind is for Kubernetes.

Each worker is a network namespace on a bridge, with its own address, hostname (UTS namespace),
sshd and Unix user; the master is the host side of the bridge. Nothing routes off the machine.
"""
