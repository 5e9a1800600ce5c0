"""A container's network: its namespace and a veth into the network's bridge.

    netns ct<id12>        the container's network namespace   (names: kernel/names.py)
    vh<id12>              the host end, enslaved to bridge ctbr<VNI>
    eth0 (in the netns)   the container end: the IPAM address and MAC, MTU of the overlay
    default route         via the network's .1 on this host's bridge, unless the
                          network is internal (no way out)

Idempotent: ``ensure`` completes what is missing, ``remove`` what is there.
"""

from __future__ import annotations

import errno
import os
import time

from cantainer.kernel import names, netns, rtnl
from cantainer.kernel.net import index_of


ENSURE_ATTEMPTS = 20


def ensure(container_id: str, bridge: str, address: str, prefixlen: int, mac: str,
           mtu: int, gateway: str | None = None) -> str:
    """Build the container's namespace and veth; returns the namespace's name.

    The overlay actor may remove an empty bridge at the same moment (it can be a
    few events behind): then the bridge is gone mid-way (ENODEV, EINVAL) and the
    whole, idempotent, build is done again.
    """
    for attempt in range(ENSURE_ATTEMPTS):
        try:
            return _ensure(container_id, bridge, address, prefixlen, mac, mtu, gateway)
        except rtnl.NetlinkError as exc:
            if exc.errno not in (errno.ENODEV, errno.EINVAL) or attempt == ENSURE_ATTEMPTS - 1:
                raise
            time.sleep(0.01)
    raise AssertionError("unreachable")


def veths() -> dict[str, tuple[str | None, bool]]:
    """Every container veth of this network namespace (``vh`` + 12 hex digits) ->
    (the name of the bridge it is in or None, whether it is up); one link dump."""
    links = rtnl.links()
    by_index = {link.index: link.name for link in links}
    return {link.name: (by_index.get(link.master), link.up)
            for link in links if names.VETH_RE.match(link.name)}


def has_netns(container_id: str) -> bool:
    return netns.exists(names.netns(container_id))


def restore_netns(container_id: str, pid: int) -> None:
    """Name the network namespace of a running container again (its mount under
    ``/run/netns`` was removed by hand): the namespace lives on in its process."""
    netns.bind(names.netns(container_id), f"/proc/{pid}/ns/net")


def remove_veth(name: str) -> None:
    index = index_of(name)
    if index is not None:
        rtnl.del_link(index)


def _ensure(container_id: str, bridge: str, address: str, prefixlen: int, mac: str,
            mtu: int, gateway: str | None) -> str:
    ns, veth = names.netns(container_id), names.veth(container_id)
    fresh = netns.create(ns)
    if index_of(bridge) is None:
        try:  # the overlay actor may create it at the same moment
            rtnl.add_bridge(bridge)
        except rtnl.NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise
    bridge_index = index_of(bridge)
    if bridge_index is None:  # removed since: the veth would be left out of it
        raise rtnl.NetlinkError(errno.ENODEV, f"bridge {bridge} is gone")
    rtnl.set_link(bridge_index, up=True)
    made = index_of(veth) is None
    if made:
        if not fresh:  # a start cut short: its eth0 is left without a peer
            _remove_stale_eth0(ns)
        rtnl.add_veth(veth, mtu=mtu, peer="eth0", peer_netns=netns.path(ns), peer_mac=mac)
    rtnl.set_link(index_of(veth), master=bridge_index, mtu=mtu, up=True)

    def configure() -> None:
        eth0 = index_of("eth0")
        # An eth0 made just now has its MAC and MTU, and no address yet: two
        # requests fewer on every container's start.
        if not made:
            rtnl.set_link(eth0, mac=mac, mtu=mtu)
        if made or not any(a.split("/")[0] == address
                           for a in rtnl.addresses().get(eth0, ())):
            rtnl.add_address(eth0, address, prefixlen)
        rtnl.set_link(eth0, up=True)
        rtnl.set_link(index_of("lo"), up=True)
        if gateway is not None:
            rtnl.replace_default_route(gateway, eth0)

    netns.run_in(ns, configure)
    return ns


def _remove_stale_eth0(ns: str) -> None:
    def remove() -> None:
        index = index_of("eth0")
        if index is not None:
            rtnl.del_link(index)

    netns.run_in(ns, remove)


def remove(container_id: str) -> None:
    remove_veth(names.veth(container_id))
    netns.remove(names.netns(container_id))
