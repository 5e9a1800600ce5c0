"""Named network namespaces: create, name, enter, remove, and run code inside one.

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

from cantainer.kernel import syscalls as sc

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


def path(name: str) -> str:
    """Where namespace ``name`` is mounted (what ``setns`` and IFLA_NET_NS_FD open)."""
    return os.path.join(NETNS_DIR, name)  # the one join of the directory and a name


def exists(name: str) -> bool:
    return os.path.ismount(path(name))


def bind(name: str, source: str) -> None:
    """Name an existing network namespace (``/proc/PID/ns/net``) ``name``."""
    where = path(name)
    _share_dir()
    os.close(os.open(where, os.O_RDONLY | os.O_CREAT, 0o444))
    try:
        sc.mount(source, where, None, sc.MS_BIND)
    except OSError:
        os.unlink(where)
        raise


def create(name: str) -> bool:
    """Create namespace ``name``; False if it was already there."""
    where = path(name)
    if os.path.ismount(where):
        return False
    _share_dir()
    os.close(os.open(where, os.O_RDONLY | os.O_CREAT, 0o444))
    failure: list[OSError] = []

    def make() -> None:
        try:
            os.unshare(os.CLONE_NEWNET)  # this thread only
            sc.mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", where, None,
                     sc.MS_BIND)
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if failure:
        os.unlink(where)
        raise failure[0]
    return True


def remove(name: str) -> None:
    where = path(name)
    if os.path.ismount(where):
        sc.umount2(where, sc.MNT_DETACH)
    try:
        os.unlink(where)
    except FileNotFoundError:
        pass


def existing(prefix: str = "") -> list[str]:
    try:
        found = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in found if n.startswith(prefix))


def enter(name: str) -> None:
    """Move the calling thread (or a freshly forked child) into namespace ``name``."""
    fd = os.open(path(name), os.O_RDONLY)
    try:
        os.setns(fd, os.CLONE_NEWNET)
    finally:
        os.close(fd)


def run_in(name: str, fn):
    """Call ``fn()`` in a thread that lives in namespace ``name``; return its result.

    Network namespaces belong to threads, so sockets (``kernel/rtnl.py``'s among them)
    created by ``fn`` are that namespace's.
    """
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
