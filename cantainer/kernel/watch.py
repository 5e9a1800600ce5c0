"""Kernel change notifications: a thread that calls back when our links or entries go.

``Removals(callback, links=PREFIXES, neighbours=PREFIXES)`` listens on
rtnetlink's link and neighbour groups (RTMGRP_LINK, RTMGRP_NEIGH) in this
network namespace and calls ``callback()`` when a link whose name starts
with one of ``links`` is deleted (``RTM_DELLINK``), or a neighbour or FDB
entry of such a device of ``neighbours`` (``RTM_DELNEIGH``): what an actor
put there, so it can restore it at once instead of dumping the kernel's
tables every few seconds.  Entries the kernel learns and forgets by itself
elsewhere (a bridge port's learned MACs, the host's ARP cache) do not
count: at scale they come and go all the time, and each callback costs a
full reconcile (this was most of the 8-host convergence tail: bench/gaps.md).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

RTMGRP_LINK, RTMGRP_NEIGH = 0x1, 0x4
RTM_DELLINK, RTM_DELNEIGH = 17, 29
IFLA_IFNAME = 3
NLMSG_HEADER = struct.Struct("=LHHLL")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
RTATTR = struct.Struct("=HH")  # length, type


def _ifname(data: bytes, start: int, end: int) -> str:
    at = start + IFINFOMSG.size
    while at + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, at)
        if length < RTATTR.size:
            break
        if kind == IFLA_IFNAME:
            return data[at + RTATTR.size:at + length].split(b"\0", 1)[0].decode(errors="replace")
        at += (length + 3) & ~3
    return ""


def _device(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:  # gone already (its entries went with it)
        return ""


def ours(data: bytes, links: tuple[str, ...], neighbours: tuple[str, ...]) -> bool:
    """Whether a batch of rtnetlink messages removes one of our links or entries."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        body, end = offset + NLMSG_HEADER.size, offset + length
        if kind == RTM_DELLINK and links and end >= body + IFINFOMSG.size:
            if _ifname(data, body, end).startswith(links):
                return True
        elif kind == RTM_DELNEIGH and neighbours and end >= body + NDMSG.size:
            if _device(NDMSG.unpack_from(data, body)[1]).startswith(neighbours):
                return True
        offset += max((length + 3) & ~3, NLMSG_HEADER.size)
    return False


class Removals:
    """The watching thread; ``close()`` ends it within a second."""

    def __init__(self, callback: Callable[[], None], *, links: tuple[str, ...] = (),
                 neighbours: tuple[str, ...] = ()) -> None:
        self._callback = callback
        self._links, self._neighbours = links, neighbours
        self._closed = threading.Event()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, RTMGRP_LINK | RTMGRP_NEIGH))
        self._sock.settimeout(1.0)
        self._thread = threading.Thread(target=self._run, name="kernel-removals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError as exc:  # ENOBUFS: events were lost; a reconcile covers them
                if self._closed.is_set():
                    return
                log.debug("rtnetlink: %s", exc)
                self._callback()
                continue
            if ours(data, self._links, self._neighbours):
                self._callback()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()
