"""Kernel change notifications: a thread that reports which of our links and entries went.

``Removals(callback, links=PREFIXES, neighbours=PREFIXES)`` listens on
rtnetlink's link and neighbour groups (RTMGRP_LINK, RTMGRP_NEIGH) in this
network namespace and calls ``callback(removed)`` with what a batch of
messages removed: ``("link", NAME)`` for a deleted link whose name starts
with one of ``links``, ``("neigh", DEVICE, KEY)`` for a neighbour entry (KEY
an IP) or FDB entry (KEY a MAC) of a device whose name starts with one of
``neighbours``, and ``("lost",)`` when the kernel dropped notifications
(ENOBUFS).  The actor decides whether its plan wants any of it back: our
own deletions (a container's entries going with it) and what the kernel
learns and forgets by itself must not cost a full reconcile each, which at
8 hosts × 50 containers was most of the convergence tail (bench/gaps.md).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

from cantainer.kernel.rtnl import (IFINFOMSG, IFLA_IFNAME, NDA_DST, NDA_LLADDR, NDMSG,
                                   NLMSG_HEADER, RTM_DELLINK, RTM_DELNEIGH, attributes, mac)

log = logging.getLogger(__name__)

RTMGRP_LINK, RTMGRP_NEIGH = 0x1, 0x4

Removed = tuple  # ("link", name) | ("neigh", device, key) | ("lost",)


def _neighbour_key(family: int, attrs: dict[int, bytes]) -> str | None:
    if family == socket.AF_BRIDGE and len(attrs.get(NDA_LLADDR, b"")) == 6:
        return mac(attrs[NDA_LLADDR])
    if family == socket.AF_INET and len(attrs.get(NDA_DST, b"")) == 4:
        return socket.inet_ntoa(attrs[NDA_DST])
    return None


def _device(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:  # gone already (its entries went with it)
        return ""


def removed(data: bytes, links: tuple[str, ...],
            neighbours: tuple[str, ...]) -> list[Removed]:
    """Our links and entries that a batch of rtnetlink messages removes."""
    found: list[Removed] = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        body, end = offset + NLMSG_HEADER.size, offset + length
        if end > len(data):  # cut short (a full receive buffer): a reconcile covers it
            found.append(("lost",))
            break
        if kind == RTM_DELLINK and links and end >= body + IFINFOMSG.size:
            name = attributes(data, body + IFINFOMSG.size, end).get(IFLA_IFNAME, b"")
            name = name.split(b"\0", 1)[0].decode(errors="replace")
            if name.startswith(links):
                found.append(("link", name))
        elif kind == RTM_DELNEIGH and neighbours and end >= body + NDMSG.size:
            family, ifindex, _, _, _ = NDMSG.unpack_from(data, body)
            device = _device(ifindex)
            key = _neighbour_key(family, attributes(data, body + NDMSG.size, end))
            # A device already gone took its entries with it: its own removal says so.
            if device and device.startswith(neighbours) and key is not None:
                found.append(("neigh", device, key))
        offset += max((length + 3) & ~3, NLMSG_HEADER.size)
    return found


class Removals:
    """The watching thread; ``close()`` ends it within a second."""

    def __init__(self, callback: Callable[[list[Removed]], None], *,
                 links: tuple[str, ...] = (),
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
                self._callback([("lost",)])
                continue
            if gone := removed(data, self._links, self._neighbours):
                self._callback(gone)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()
