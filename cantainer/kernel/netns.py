"""Network namespaces, bridges and veth pairs, through pyroute2.

Each call is idempotent: creating what exists or removing what is gone is
not an error.
"""

from __future__ import annotations

import os

from pyroute2 import NetNS, netns

NETNS_DIR = "/run/netns"


def create(name: str) -> None:
    if name not in netns.listnetns():
        netns.create(name)


def remove(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)


def names(prefix: str = "") -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def enter(name: str) -> None:
    """Move the calling thread (or a freshly forked child) into namespace ``name``."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        os.setns(fd, os.CLONE_NEWNET)
    finally:
        os.close(fd)


def _index(ns: NetNS, ifname: str) -> int | None:
    found = ns.link_lookup(ifname=ifname)
    return found[0] if found else None


def ensure_bridge(ns_name: str, bridge: str) -> None:
    with NetNS(ns_name) as ns:
        if _index(ns, bridge) is None:
            ns.link("add", ifname=bridge, kind="bridge")
        ns.link("set", index=_index(ns, bridge), state="up")


def ensure_uplink(bridge_ns: str, bridge: str, port: str, host_ns: str, ifname: str,
                  address: str, prefixlen: int, mtu: int = 1500) -> None:
    """A veth from ``bridge`` in ``bridge_ns`` to ``ifname`` with ``address`` in ``host_ns``."""
    with NetNS(bridge_ns) as ns:
        if _index(ns, port) is None:
            ns.link("add", ifname=port, kind="veth", mtu=mtu,
                    peer={"ifname": ifname, "net_ns_fd": host_ns, "mtu": mtu})
        ns.link("set", index=_index(ns, port), master=_index(ns, bridge), state="up")
    with NetNS(host_ns) as ns:
        index = _index(ns, ifname)
        if not any(a.get("IFA_ADDRESS") == address for a in ns.get_addr(index=index)):
            ns.addr("add", index=index, address=address, prefixlen=prefixlen)
        ns.link("set", index=index, state="up")
        ns.link("set", index=_index(ns, "lo"), state="up")


def set_link_state(ns_name: str, ifname: str, up: bool) -> None:
    with NetNS(ns_name) as ns:
        ns.link("set", index=_index(ns, ifname), state="up" if up else "down")


def run_in(name: str, fn):
    """Call ``fn()`` in a thread that lives in namespace ``name``; return its result.

    Network namespaces belong to threads, so sockets (and pyroute2 objects)
    created by ``fn`` are that namespace's.
    """
    import threading

    result: dict = {}

    def target() -> None:
        try:
            enter(name)
            result["value"] = fn()
        except BaseException as exc:  # handed back to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
