"""A ctypes binding to Canonical's libdqlite: one embedded dqlite node.

Only the handful of calls a node's life needs: create, bind address, the
connect function, snapshot parameters, start, stop, destroy, error message and
node-id generation.
The node runs its own libuv thread inside libdqlite; ``start`` returns once it
accepts connections.  With a ``connect`` function (``trust/dqlite.py``) the
node binds where it is told (an abstract unix socket) and dials its peers
through that function: libdqlite itself has no TLS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from cantainer.errors import DqliteError

#: Raft node id of the node that bootstraps a new cluster (see dqlite.h).
BOOTSTRAP_ID = 1
RAFT_NOCONNECTION = 16  # what a connect function returns when it cannot connect

#: int (*)(void *arg, const char *address, int *fd): 0 and *fd set, or an error
CONNECT_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                ctypes.POINTER(ctypes.c_int))

# Raft snapshots: libdqlite keeps every Raft entry since the last snapshot, plus
# ``trailing`` before it, in memory (and on disk); each entry is one transaction's
# pages, 0.18 MB for a batch of a thousand events.  Its defaults (a snapshot every
# 1024 entries, 8192 kept) held every batch of 100 000 events: 335 MiB of RSS.  At
# 1 M events (``bench.restart``, --retain 20000) 64/64 left 94-103 MiB, 16/16 82-86
# MiB; but a snapshot copies and writes the database: at 16 the API's appends of 100
# fell to 0.55x raw dqlite (``bench.log_append``), at 64 they kept their ratios
# (0.64 / 0.74 / 0.77x at batches of 1 / 10 / 100, the tree before 0.62 / 0.79 /
# 0.84x, run back to back).  A follower further behind than ``trailing`` entries is
# sent the snapshot.  What a snapshot costs is not the copy: libraft 0.15 closes its
# open segment for it, and the io_destroy of that segment's AIO context took 33 ms
# in the node's loop (``strace -T``), on the leader and the followers alike, so the
# next appends wait ~35 ms each.  At 24/24 or 16/16 a voter held 76-80 MiB after
# 200 000 events of history (95-98 at 64/64), and 80.6-83.9 MiB at 24/24 after
# 1 000 000 (``bench.restart``); appends of 1 and 10 events went 0.47-0.59x as fast
# at 24/24, 0.46-0.50x at 16/16, the API's and raw dqlite's alike
# (``bench.log_append``, 150 batches a cell).
SNAPSHOT_THRESHOLD = 64
SNAPSHOT_TRAILING = 64  # libdqlite's rule: no fewer than the threshold

_LIBRARY = "libdqlite.so.0"
_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(_LIBRARY)
    except OSError as exc:
        raise DqliteError(
            f"cannot load {_LIBRARY} ({exc}); install the Debian package libdqlite0"
        ) from None
    node_p = ctypes.c_void_p
    lib.dqlite_node_create.argtypes = [
        ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(node_p)]
    lib.dqlite_node_create.restype = ctypes.c_int
    lib.dqlite_node_set_bind_address.argtypes = [node_p, ctypes.c_char_p]
    lib.dqlite_node_set_bind_address.restype = ctypes.c_int
    lib.dqlite_node_set_connect_func.argtypes = [node_p, CONNECT_FUNC, ctypes.c_void_p]
    lib.dqlite_node_set_connect_func.restype = ctypes.c_int
    lib.dqlite_node_set_network_latency_ms.argtypes = [node_p, ctypes.c_uint]
    lib.dqlite_node_set_network_latency_ms.restype = ctypes.c_int
    lib.dqlite_node_set_snapshot_params.argtypes = [node_p, ctypes.c_uint, ctypes.c_uint]
    lib.dqlite_node_set_snapshot_params.restype = ctypes.c_int
    lib.dqlite_node_start.argtypes = [node_p]
    lib.dqlite_node_start.restype = ctypes.c_int
    lib.dqlite_node_stop.argtypes = [node_p]
    lib.dqlite_node_stop.restype = ctypes.c_int
    lib.dqlite_node_destroy.argtypes = [node_p]
    lib.dqlite_node_destroy.restype = None
    lib.dqlite_node_errmsg.argtypes = [node_p]
    lib.dqlite_node_errmsg.restype = ctypes.c_char_p
    lib.dqlite_generate_node_id.argtypes = [ctypes.c_char_p]
    lib.dqlite_generate_node_id.restype = ctypes.c_ulonglong
    lib.dqlite_version_number.argtypes = []
    lib.dqlite_version_number.restype = ctypes.c_int
    _lib = lib
    return lib


def version() -> int:
    """libdqlite's version number, e.g. 11001 for 1.10.1."""
    return _load().dqlite_version_number()


def generate_node_id(address: str) -> int:
    """A fresh random node id (libdqlite mixes the address with the clock)."""
    return _load().dqlite_generate_node_id(address.encode())


class DqliteNode:
    """One dqlite node: ``DqliteNode(id, "host:port", data_dir).start()``.

    ``bind_address`` (default: ``address``, the one its peers know) is where it
    listens; ``connect(address) -> fd`` dials its peers (on a libuv worker
    thread: it must not block for long, and it must not raise: it is wrapped)."""

    def __init__(self, node_id: int, address: str, data_dir: str,
                 network_latency_ms: int | None = None, bind_address: str | None = None,
                 connect=None) -> None:
        lib = _load()
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        self.node_id = node_id
        self.address = address
        self._lib = lib
        self._node = ctypes.c_void_p()
        self._started = False
        self._connect_thunk = None
        rc = lib.dqlite_node_create(node_id, address.encode(), data_dir.encode(),
                                    ctypes.byref(self._node))
        if rc != 0:
            message = self._errmsg()
            self.close()
            raise DqliteError(f"dqlite node {address}: create failed: {message} (rc={rc})")
        self._check(lib.dqlite_node_set_bind_address(
            self._node, (bind_address or address).encode()), "bind address")
        if connect is not None:
            def thunk(_arg, peer, fd_out) -> int:
                # An exception here would be printed and 0 ("connected") returned with
                # *fd unset: libdqlite would write to whatever fd that is.
                try:
                    fd_out[0] = connect(peer.decode())
                    return 0
                except BaseException:  # noqa: BLE001 - never cross into C
                    return RAFT_NOCONNECTION
            # Referenced until destroy: libdqlite keeps only the bare function pointer.
            self._connect_thunk = CONNECT_FUNC(thunk)
            self._check(lib.dqlite_node_set_connect_func(self._node, self._connect_thunk,
                                                         None), "connect function")
        self._check(lib.dqlite_node_set_snapshot_params(self._node, SNAPSHOT_THRESHOLD,
                                                        SNAPSHOT_TRAILING), "snapshot parameters")
        if network_latency_ms is not None:
            self._check(lib.dqlite_node_set_network_latency_ms(self._node, network_latency_ms),
                        "network latency")

    def _errmsg(self) -> str:
        if not self._node:
            return "no node"
        raw = self._lib.dqlite_node_errmsg(self._node)
        return raw.decode(errors="replace") if raw else "unknown error"

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            message = self._errmsg()
            self.close()
            raise DqliteError(f"dqlite node {self.address}: {what} failed: {message} (rc={rc})")

    def start(self) -> None:
        self._check(self._lib.dqlite_node_start(self._node), "start")
        self._started = True

    def stop(self) -> None:
        """Stop serving; blocks until in-flight requests are done."""
        if self._started:
            self._started = False
            self._lib.dqlite_node_stop(self._node)

    def close(self) -> None:
        self.stop()
        if self._node:
            self._lib.dqlite_node_destroy(self._node)
            self._node = ctypes.c_void_p()
