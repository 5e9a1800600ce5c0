"""Liveness outside the log: UDP heartbeats between daemons, and the leader's suspicion.

Every ``INTERVAL`` seconds each daemon sends ``{"n": name, "a": applied}`` to
the heartbeat port (dqlite port + 1) of every member it knows, and records
when it last heard from each name and what seq that host had applied.  The
Raft leader turns a long silence into ``NodeSuspected`` and its end into
``NodeRecovered`` (``Suspicion``); ``cantainer status`` shows every host's
applied seq.

The same socket carries pokes, ``{"n": name, "poke": 1}``: a daemon that has
just appended tells its peers to read the log now, so they need not poll
it often.  A lost poke costs latency only: the tailer still polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from cantainer.events import Event
from cantainer.projections.membership import Membership

log = logging.getLogger(__name__)

INTERVAL = 1.0
MAX_DATAGRAM = 512


class Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, name: str, peers: Callable[[], list[tuple[str, int]]],
                 applied: Callable[[], int], on_poke: Callable[[], None]) -> None:
        self.name = name
        self.peers = peers
        self.applied = applied
        self.on_poke = on_poke
        self.last_heard: dict[str, float] = {}
        self.peer_applied: dict[str, int] = {}
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                                 local_addr=(host, port))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            beat = json.loads(data[:MAX_DATAGRAM])
            name, applied = beat["n"], beat.get("a")
            if not isinstance(name, str) or len(name) > 63 or \
                    not isinstance(applied, int | None):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            log.debug("ignoring a malformed heartbeat from %s", addr)
            return
        self.last_heard[name] = time.monotonic()
        if applied is not None:
            self.peer_applied[name] = applied
        if beat.get("poke"):
            self.on_poke()

    def _send_all(self, message: dict) -> None:
        datagram = json.dumps(message).encode()
        for peer in self.peers():
            try:
                self._transport.sendto(datagram, peer)
            except OSError as exc:  # an unreachable peer is what heartbeats measure
                log.debug("heartbeat to %s: %s", peer, exc)

    def poke(self) -> None:
        """Tell every peer to read the log now."""
        if self._transport is not None:
            self._send_all({"n": self.name, "poke": 1})

    async def run(self) -> None:
        while True:
            self.last_heard[self.name] = time.monotonic()  # a host hears itself
            self.peer_applied[self.name] = self.applied()
            self._send_all({"n": self.name, "a": self.applied()})
            await asyncio.sleep(INTERVAL)

    def seen(self) -> dict[str, dict]:
        now = time.monotonic()
        return {name: {"applied": self.peer_applied.get(name, 0),
                       "heard": round(now - t, 1)} for name, t in self.last_heard.items()}


class Suspicion:
    """What the Raft leader appends about silent members: ``NodeSuspected`` after
    ``suspect_after`` seconds without a heartbeat, ``NodeRecovered`` once one comes.

    A member never heard from counts as silent since this daemon first saw it in
    the log, so a slow joiner is not suspected for the time it took.
    """

    def __init__(self, node: str, suspect_after: float) -> None:
        self.node = node
        self.suspect_after = suspect_after
        self._first_seen: dict[str, float] = {}

    def events(self, members: Membership, last_heard: dict[str, float],
               is_leader: bool) -> list[tuple[Event, str]]:
        now = time.monotonic()
        live = members.live()
        for name in live:
            self._first_seen.setdefault(name, now)
        if not is_leader:
            return []
        silent = {name: now - last_heard.get(name, self._first_seen[name]) for name in live}
        silent[self.node] = 0.0
        return list(members.liveness_events(silent, self.suspect_after))
