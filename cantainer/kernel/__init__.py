"""The only code that touches the OS.

    net.py      addresses and routes, through pyroute2 netlink
    netns.py    network namespaces and the veth/bridge plumbing of the lab

Modules here are thin and idempotent: "ensure X" creates X when missing and
leaves it alone when present.
"""
