"""Liveness outside the log: UDP heartbeats between daemons, and the leader's suspicion.

Every ``INTERVAL`` seconds each daemon sends ``{"n": name, "a": applied}`` to
the heartbeat port (dqlite port + 1) of its watchers (``watchers``: the Raft
leader and ``WATCHERS`` ring successors, a fixed number whatever the cluster's
size), and records when it last heard from each name and what seq that host had
applied.  The Raft leader, which every host tells, turns a long silence into
``NodeSuspected`` and its end into ``NodeRecovered`` (``Suspicion``); ``cantainer
status`` shows the applied seq of every host this one hears (the leader: all).

The same socket carries pokes, ``{"n": name, "poke": 1}``: a daemon that has
just appended tells its peers to read the log now, so they need not poll
it often.  A daemon that stops gracefully says so, ``{"n": name, "bye": 1}``, to
every peer: until its next heartbeat it is ``gone`` and no leader counts it online
for Raft seats (a seat it has just handed over would otherwise come back to it
while its last heartbeat is still fresh).  Suspicion is unchanged: silence still
counts from the last heartbeat.  Pokes closer together than ``POKE_GAP`` go as one, at its end: a
peer that has just read new records polls that often anyway, and each datagram
costs its sender a send through the whole path to the peer (a burst of appends
at batch 1 spent a quarter of the appending daemon's busy time sending pokes,
py-spy).  A lost poke costs latency only: the tailer still polls.  Both are
authenticated and not replayable (``Heartbeats``): a forged or replayed
datagram neither keeps a dead host alive nor wakes anyone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable

from cantainer.events import Event
from cantainer.projections.membership import Membership

log = logging.getLogger(__name__)

INTERVAL = 1.0
MAX_DATAGRAM = 512
MAGIC = b"CTH1"
MAC_SIZE = 16  # bytes of HMAC-SHA256 kept
FRESH_NS = 30 * 10**9  # a datagram's time within 30 s of the receiver's clock
START_SLACK_NS = 10**9  # and sent at most 1 s before the receiver started
POKE_GAP = 0.01  # seconds: pokes closer than this are merged (the runner's POLL_MIN)
LEADER_GRACE = 6.0  # seconds a new leader waits for every host's heartbeats (> ROLES_INTERVAL)
WATCHERS = 3  # ring successors each host's heartbeats go to, besides the leader


def _ring(me: str, members) -> tuple[list[str], int]:
    """The members and ``me`` ordered by a hash of their names (so a host's neighbours
    are not its alphabetical ones), and where ``me`` is."""
    ring = sorted(set(members) | {me}, key=lambda name: hashlib.sha256(name.encode()).digest())
    return ring, ring.index(me)


def watchers(me: str, members: list[str], leader: str | None,
             count: int = WATCHERS) -> list[str]:
    """Who ``me``'s heartbeats go to: its ``count`` successors on the ring of
    ``members`` (so each host is watched by ``count`` others), and the leader.  A fixed
    number a second, however many members there are; the leader hears every one."""
    ring, at = _ring(me, members)
    out = [ring[(at + i) % len(ring)] for i in range(1, min(count, len(ring) - 1) + 1)]
    if leader is not None and leader != me and leader not in out and leader in members:
        out.append(leader)
    return out


def watched_by(me: str, members, count: int = WATCHERS) -> set[str]:
    """The members whose ring successors ``me`` is one of: those it hears however
    the leadership goes."""
    ring, at = _ring(me, members)
    return {ring[(at - i) % len(ring)] for i in range(1, min(count, len(ring) - 1) + 1)}


class Heartbeats(asyncio.DatagramProtocol):
    """The datagrams, authenticated and not replayable.

    Each one is ``MAGIC + JSON + HMAC-SHA256`` keyed with the key the sender shares
    with that receiver alone (X25519 of the one's private key and the other's public
    key in the log, ``trust/kx.pair_key``): no one else can make one, not even
    another member, and a member that left is no one's partner any more.  The JSON
    carries the sender's wall clock in nanoseconds; a receiver takes only a time
    later than the last it took from that sender, and within ``FRESH`` of its own
    clock, and not before the receiver started (less a second): a recorded datagram
    replayed is dropped (hosts' clocks must agree within that).  ``keys(name)`` gives the key shared with member ``name`` (None: none)."""

    def __init__(self, name: str, peers: Callable[[], list[tuple[str, tuple[str, int]]]],
                 applied: Callable[[], int], on_poke: Callable[[], None],
                 keys: Callable[[str], bytes | None],
                 leader: Callable[[], str | None] = lambda: None) -> None:
        self.name = name
        self.peers = peers  # every live member but this host: pokes go to them all
        self.leader = leader  # the Raft leader's name, as this host last saw it
        self.applied = applied
        self.on_poke = on_poke
        self.keys = keys
        self.last_heard: dict[str, float] = {}
        self.peer_applied: dict[str, int] = {}
        self.gone: set[str] = set()  # members that said goodbye and have not beaten since
        self.refused = 0  # datagrams that failed a check: forged, replayed, stale, garbage
        self.sent = {"heartbeat": 0, "poke": 0, "bye": 0}  # datagrams sent, by kind (the metrics')
        self.taken = 0  # datagrams that passed every check
        self._last_time: dict[str, int] = {}
        # Nothing sent before this daemon started counts: a datagram recorded then and
        # replayed now would find no later one taken yet (clocks agree within a second).
        self._floor = time.time_ns() - START_SLACK_NS
        self._transport: asyncio.DatagramTransport | None = None
        self._last_poke = float("-inf")  # when the last poke went (monotonic)
        self._poke_due: asyncio.Handle | None = None  # the next, merged one

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                                 local_addr=(host, port))

    def close(self) -> None:
        """Stop, telling every peer this host is going (a merged poke still due is dropped)."""
        if self._poke_due is not None:
            self._poke_due.cancel()
            self._poke_due = None
        if self._transport is not None:
            self._send_all({"bye": 1})
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr) -> None:
        beat = self._open(data)
        if beat is None:
            self.refused += 1
            log.debug("ignoring a heartbeat from %s that does not verify", addr)
            return
        name = beat["n"]
        self.taken += 1
        if beat.get("bye"):
            self.gone.add(name)
            return
        self.gone.discard(name)
        self.last_heard[name] = time.monotonic()
        if isinstance(beat.get("a"), int):
            self.peer_applied[name] = beat["a"]
        if beat.get("poke"):
            self.on_poke()

    def _open(self, data: bytes) -> dict | None:
        """The datagram's content if it is authentic and fresh, else None."""
        if len(data) > MAX_DATAGRAM or not data.startswith(MAGIC) or \
                len(data) < len(MAGIC) + MAC_SIZE:
            return None
        body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
        try:
            beat = json.loads(body[len(MAGIC):])
            name, sent = beat["n"], beat["t"]
            if not isinstance(name, str) or not isinstance(sent, int):
                return None
        except (ValueError, KeyError, TypeError):
            return None
        key = self.keys(name) if name != self.name else None
        if key is None or not hmac.compare_digest(
                mac, hmac.new(key, body, hashlib.sha256).digest()[:MAC_SIZE]):
            return None
        if sent <= self._last_time.get(name, self._floor) or \
                abs(time.time_ns() - sent) > FRESH_NS:
            return None  # replayed, or recorded long ago
        self._last_time[name] = sent
        return beat

    def _send_all(self, message: dict, only: list[str] | None = None) -> None:
        if self._transport is None:
            return  # closed
        kind = "poke" if message.get("poke") else "bye" if message.get("bye") else "heartbeat"
        message = {**message, "n": self.name, "t": time.time_ns()}
        body = MAGIC + json.dumps(message, separators=(",", ":")).encode()
        for peer, address in self.peers():
            if only is not None and peer not in only:
                continue
            key = self.keys(peer)
            if key is None:
                continue  # not a member we share a key with (yet)
            datagram = body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_SIZE]
            try:
                self._transport.sendto(datagram, address)
                self.sent[kind] += 1
            except OSError as exc:  # an unreachable peer is what heartbeats measure
                log.debug("heartbeat to %s: %s", address, exc)

    def poke(self) -> None:
        """Tell every peer to read the log now, or, within ``POKE_GAP`` of the last poke,
        at the gap's end (on the event loop)."""
        if self._transport is None or self._poke_due is not None:
            return
        # Never inline: the appender's answer goes out first (this runs on its path).
        loop = asyncio.get_running_loop()
        wait = self._last_poke + POKE_GAP - time.monotonic()
        self._poke_due = (loop.call_later(wait, self._poke_now) if wait > 0
                          else loop.call_soon(self._poke_now))

    def _poke_now(self) -> None:
        self._poke_due = None
        self._last_poke = time.monotonic()
        if self._transport is not None:
            self._send_all({"poke": 1})

    async def run(self) -> None:
        while True:
            self.last_heard[self.name] = time.monotonic()  # a host hears itself
            self.peer_applied[self.name] = self.applied()
            self._send_all({"a": self.applied()},
                           only=watchers(self.name, [p for p, _ in self.peers()], self.leader()))
            await asyncio.sleep(INTERVAL)

    def seen(self) -> dict[str, dict]:
        now = time.monotonic()
        return {name: {"applied": self.peer_applied.get(name, 0),
                       "heard": round(now - t, 1)} for name, t in self.last_heard.items()}


class Suspicion:
    """What the Raft leader appends about silent members: ``NodeSuspected`` after
    ``suspect_after`` seconds without a heartbeat, ``NodeDown`` ``reschedule_after``
    seconds later, ``NodeRecovered`` once one comes.

    A member is silent since its last heartbeat, or, if none came since this daemon
    first saw it in the log (this time: a host that joins again is new), since
    then: a slow joiner is not suspected for the time it took.  A member not heard
    since this daemon became the leader, and whose ring watchers this daemon is not
    one of, is silent only from then plus ``LEADER_GRACE``: until the hosts learn who
    the new leader is (``RaftMember.look_after``, every ``ROLES_INTERVAL``) their
    heartbeats still go to the old one.
    """

    def __init__(self, node: str, suspect_after: float, reschedule_after: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.suspect_after = suspect_after
        self.reschedule_after = reschedule_after
        self._clock = clock
        self._first_seen: dict[tuple[str, int], float] = {}  # (name, its NodeJoined's seq)
        self._leading_since: float | None = None
        # This daemon led when it started (it made the cluster, or restarted leading):
        # no host had another leader to tell, so its first leadership has no grace.
        self.led_at_start = False

    def events(self, members: Membership, last_heard: dict[str, float],
               is_leader: bool) -> list[tuple[Event, str]]:
        now = self._clock()
        live = members.live()
        first = {name: self._first_seen.setdefault((name, node.joined), now)
                 for name, node in live.items()}
        if not is_leader:
            self._leading_since, self.led_at_start = None, False
            return []
        if self._leading_since is None:
            self._leading_since = float("-inf") if self.led_at_start else now
        leading = self._leading_since
        mine = watched_by(self.node, live)

        def quiet_since(name: str) -> float:
            heard = last_heard.get(name)
            since = max(heard if heard is not None else first[name], first[name])
            if (heard is None or heard < leading) and name not in mine:
                since = max(since, leading + LEADER_GRACE)  # it may not know who leads
            return since
        silent = {name: now - quiet_since(name) for name in live}
        silent[self.node] = 0.0
        return list(members.liveness_events(silent, self.suspect_after,
                                            self.reschedule_after))

