"""Network namespaces, bridges and veth pairs.

Named namespaces live where ``ip netns`` keeps them: a bind mount of the
namespace on ``/run/netns/NAME``, with ``/run/netns`` itself a shared mount
so that other mount namespaces see new ones.  A namespace is made by a
short-lived thread that unshares its network namespace and bind-mounts it
(no process is forked: this is on every container's start path).  Each
call is idempotent: creating what exists or removing what is gone is not
an error.
"""

from __future__ import annotations

import os
import threading

from pyroute2 import IPRoute

from cantainer.kernel import syscalls as sc
from cantainer.kernel.net import index_of

NETNS_DIR = "/run/netns"
_shared = threading.Lock()


def _share_dir() -> None:
    """Make ``/run/netns`` a shared mount point, as ``ip netns add`` does."""
    with _shared:
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        try:
            sc.mount("", NETNS_DIR, None, sc.MS_SHARED | sc.MS_REC)
        except OSError:  # not a mount point yet: bind it on itself, then share it
            sc.mount(NETNS_DIR, NETNS_DIR, None, sc.MS_BIND | sc.MS_REC)
            sc.mount("", NETNS_DIR, None, sc.MS_SHARED | sc.MS_REC)


def exists(name: str) -> bool:
    return os.path.ismount(os.path.join(NETNS_DIR, name))


def bind(name: str, source: str) -> None:
    """Name an existing network namespace (``/proc/PID/ns/net``) ``name``."""
    path = os.path.join(NETNS_DIR, name)
    _share_dir()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o444))
    try:
        sc.mount(source, path, None, sc.MS_BIND)
    except OSError:
        os.unlink(path)
        raise


def create(name: str) -> bool:
    """Create namespace ``name``; False if it was already there."""
    path = os.path.join(NETNS_DIR, name)
    if os.path.ismount(path):
        return False
    _share_dir()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o444))
    failure: list[OSError] = []

    def make() -> None:
        try:
            os.unshare(os.CLONE_NEWNET)  # this thread only
            sc.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None,
                     sc.MS_BIND)
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if failure:
        os.unlink(path)
        raise failure[0]
    return True


def remove(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    if os.path.ismount(path):
        sc.umount2(path, sc.MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def names(prefix: str = "") -> list[str]:
    try:
        found = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in found if n.startswith(prefix))


def enter(name: str) -> None:
    """Move the calling thread (or a freshly forked child) into namespace ``name``."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        os.setns(fd, os.CLONE_NEWNET)
    finally:
        os.close(fd)


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
