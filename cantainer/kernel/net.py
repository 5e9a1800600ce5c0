"""Addresses and routes through pyroute2 netlink."""

from __future__ import annotations

import socket

from pyroute2 import IPRoute


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
