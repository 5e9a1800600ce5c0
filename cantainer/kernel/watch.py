"""Kernel change notifications: a thread that calls back when links or neighbours go.

``watch_removals(callback)`` listens on rtnetlink's link and neighbour
groups (RTMGRP_LINK, RTMGRP_NEIGH) and calls ``callback()`` for every
``RTM_DELLINK`` or ``RTM_DELNEIGH`` (FDB entries included) in this network
namespace, so an actor can restore what someone deleted at once instead of
dumping the kernel's tables every few seconds.  Only the message type is
read; the actor's reconcile compares the whole picture anyway.
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
NLMSG_HEADER = struct.Struct("=LHHLL")  # length, type, flags, seq, pid


class Removals:
    """The watching thread; ``close()`` ends it within a second."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
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
            offset, removed = 0, False
            while offset + NLMSG_HEADER.size <= len(data):
                length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
                removed |= kind in (RTM_DELLINK, RTM_DELNEIGH)
                offset += max((length + 3) & ~3, NLMSG_HEADER.size)
            if removed:
                self._callback()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()
