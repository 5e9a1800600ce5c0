"""Addresses and routes through pyroute2 netlink; the neighbour table's limits."""

from __future__ import annotations

import os
import socket

from pyroute2 import IPRoute


def index_of(ifname: str) -> int | None:
    """A link's index in the calling thread's network namespace (one ioctl: pyroute2's
    ``link_lookup`` dumps every link, which at 50 containers a host cost the overlay
    actor more than the FDB and neighbour changes it looked the index up for)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None


def default_address() -> str | None:
    """The source address of the default route, as ``ip route get`` would pick it."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            gateway = route.get("RTA_GATEWAY")
            if gateway is None:
                continue
            for found in ipr.route("get", dst=gateway):
                source = found.get("RTA_PREFSRC")
                if source:
                    return source
    return None


def mtu_of(address: str) -> int:
    """The MTU of the link that holds ``address`` (1500 if none does)."""
    with IPRoute() as ipr:
        for addr in ipr.get_addr(family=socket.AF_INET):
            if addr.get("IFA_ADDRESS") == address:
                return ipr.get_links(addr["index"])[0].get("IFLA_MTU")
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
