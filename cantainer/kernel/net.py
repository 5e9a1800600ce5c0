"""A link's index, the underlay's address and MTU (``kernel/rtnl.py``); the neighbour
table's limits and IPv4 forwarding."""

from __future__ import annotations

import os
import socket

from cantainer.kernel import rtnl


def index_of(ifname: str) -> int | None:
    """A link's index in the calling thread's network namespace (one ioctl: a link dump
    to find it, at 50 containers a host, cost the overlay actor more than the FDB and
    neighbour changes it looked the index up for)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def default_address() -> str | None:
    """The source address of the default route, as ``ip route get`` would pick it."""
    return rtnl.default_source()


def mtu_of(address: str) -> int:
    """The MTU of the link that holds ``address`` (1500 if none does)."""
    for index, held in rtnl.addresses().items():
        if any(a.split("/")[0] == address for a in held):
            return next((link.mtu for link in rtnl.links() if link.index == index), None) or 1500
    return 1500


# The kernel keeps one IPv4 neighbour (ARP) table for the whole machine, every
# network namespace included, and refuses new entries past gc_thresh3 (1024 by
# default): with a few hundred containers talking to each other, ARP fails
# ("neighbour table overflow") and so do their first packets.  Only raised.
NEIGHBOUR_TABLE = {"gc_thresh1": 4096, "gc_thresh2": 16384, "gc_thresh3": 32768}
_NEIGH_DIR = "/proc/sys/net/ipv4/neigh/default"


def ensure_neighbour_table(directory: str = _NEIGH_DIR) -> list[str]:
    """Raise the machine's neighbour table limits to ``NEIGHBOUR_TABLE``; what changed.

    The limits live in the initial network namespace only; elsewhere (a lab's
    hosts, whose lab raises them) this changes nothing."""
    if not os.path.isdir(directory):
        return []
    changed = []
    for name, minimum in NEIGHBOUR_TABLE.items():
        path = os.path.join(directory, name)
        with open(path) as f:
            current = int(f.read())
        if current < minimum:
            with open(path, "w") as f:
                f.write(str(minimum))
            changed.append(f"net.ipv4.neigh.default.{name} {current} -> {minimum}")
    return changed


IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def forward_ipv4(path: str = IP_FORWARD) -> bool:
    """Turn IPv4 forwarding on in this network namespace (Docker does it too: containers'
    traffic out is routed through the host); whether it was off."""
    with open(path) as f:
        if f.read().strip() == "1":
            return False
    with open(path, "w") as f:
        f.write("1")
    return True
