"""The lab's own plumbing: the underlay bridge and the hosts' uplinks, in namespaces.

Nothing of the product uses these: a real host has its own network.
"""

from __future__ import annotations

from pyroute2 import IPRoute

from cantainer.kernel.net import index_of
from cantainer.kernel.netns import run_in


def _netlink_in(ns_name: str, change) -> None:
    """``change(ipr)`` with an IPRoute of namespace ``ns_name`` (a thread, no fork)."""

    def run() -> None:
        with IPRoute() as ipr:
            change(ipr)

    run_in(ns_name, run)


def ensure_bridge(ns_name: str, bridge: str) -> None:
    def change(ipr: IPRoute) -> None:
        if index_of(bridge) is None:
            ipr.link("add", ifname=bridge, kind="bridge")
        ipr.link("set", index=index_of(bridge), state="up")

    _netlink_in(ns_name, change)


def ensure_uplink(bridge_ns: str, bridge: str, port: str, host_ns: str, ifname: str,
                  address: str, prefixlen: int, mtu: int = 1500) -> None:
    """A veth from ``bridge`` in ``bridge_ns`` to ``ifname`` with ``address`` in ``host_ns``."""

    def plug(ipr: IPRoute) -> None:
        if index_of(port) is None:
            ipr.link("add", ifname=port, kind="veth", mtu=mtu,
                     peer={"ifname": ifname, "net_ns_fd": host_ns, "mtu": mtu})
        ipr.link("set", index=index_of(port), master=index_of(bridge), state="up")

    def configure(ipr: IPRoute) -> None:
        index = index_of(ifname)
        if not any(a.get("IFA_ADDRESS") == address for a in ipr.get_addr(index=index)):
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
        ipr.link("set", index=index, state="up")
        ipr.link("set", index=index_of("lo"), state="up")

    _netlink_in(bridge_ns, plug)
    _netlink_in(host_ns, configure)


def set_link_state(ns_name: str, ifname: str, up: bool) -> None:
    _netlink_in(ns_name, lambda ipr: ipr.link("set", index=index_of(ifname),
                                              state="up" if up else "down"))
