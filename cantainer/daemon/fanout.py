"""The log's fan-out: a few members read it from the leader and relay it to the rest.

(Not ``trust/relay.c``, which carries dqlite's own connections over TLS.)

dqlite serves reads only at the leader, so a host that reads the log itself costs
the leader a query (and a TLS session) at every poll.  Instead, the ``--relays``
members the log names first on a ring of their names (``relays``; never the
leader) read it from the leader as before, and every other host follows one of
them over the peer port (``api/log.py: log_follow``), ranked by a hash of the
pair so the followers spread over the relays.  The leader's cost per record then
follows the number of relays, not of hosts.

Who relays is derived from the state, on every host alike: a relay keeps the
records it applied last (``Recent``) and streams each new batch to its followers
as it applies it, with the age of its own last read from a quorum (``fresh``).

A follower's tailer reads from its ``Feed``: the records the stream brought, when
one is live, else the leader.  The stream must continue exactly where the last
record it gave ended, one seq after the other: a relay that repeats or skips a
record, goes silent, or has not reached the log for ``stale_after`` seconds, is
dropped (and avoided for a while) and the next relay, or the leader, takes over
from the seq this host has applied.  A relay that cannot give the records right
after that seq (they were compacted) says so (``gap``): the leader's database
then shows the gap to the runner, which crosses it from a checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable

from cantainer.config import RELAYS
from cantainer.daemon import peers
from cantainer.errors import CantainerError, Unavailable
from cantainer.events import unpack_rows
from cantainer.projections.membership import JOINED

log = logging.getLogger(__name__)

KEEP = 4096  # records a relay keeps to give to followers that are a little behind
AHEAD = 20_000  # records a follower takes from its stream ahead of its tailer
# A follower asks its relay to say how fresh it is every stale_after / 4 seconds (1 s
# at the default --suspect-after), and drops it after two of those without a line:
# the follower's own answer is then at most that plus the relay's, which stays below
# the lease's fence (daemon/lease.py: half of --suspect-after).
SILENT_KEEPALIVES = 2
AVOID = 10.0  # seconds a relay dropped mid-stream is not asked again (RETRY: one that
#              never streamed: it may be starting)
RETRY = 2.0  # seconds between looks for a relay when there is none to follow


def relays(members: dict, leader: str | None, count: int = RELAYS) -> list[str]:
    """The members that read the log from the leader for the others: the first
    ``count`` joined members, but the leader, on the ring of their names' hashes."""
    ring = sorted((n for n, node in members.items() if node.state == JOINED and n != leader),
                  key=lambda n: hashlib.sha256(n.encode()).digest())
    return ring[:count]


def ranked(me: str, among: list[str]) -> list[str]:
    """``among`` in the order host ``me`` asks them (rendezvous hashing: each relay
    gets its share of the followers, and keeps it when another comes or goes)."""
    return sorted(among, key=lambda r: hashlib.sha256(f"{me}\0{r}".encode()).digest())


class Recent:
    """The records a host applied last, as the database lists them after ``base``:
    what it relays.  Fed by the runner (``add``) on the daemon's loop."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.base: int | None = None  # the rows are those with seqs base+1 .. last
        self.rows: list[list] = []
        self._added = asyncio.Event()

    @property
    def last(self) -> int | None:
        return None if self.base is None else self.base + len(self.rows)

    def add(self, after: int, rows: list[list]) -> None:
        """``rows``: the database's records after seq ``after``, one seq after another."""
        if not rows:
            return
        if self.base is None or after != self.last:
            self.base, self.rows = after, []
        self.rows += rows
        if len(self.rows) > self.keep:
            drop = len(self.rows) - self.keep
            del self.rows[:drop]
            self.base += drop
        self._added.set()
        self._added = asyncio.Event()

    def after(self, seq: int, limit: int) -> list[list] | None:
        """The records after ``seq`` (none yet: empty), or None if they begin before
        what is kept."""
        if self.base is None or seq < self.base:
            return None
        return self.rows[seq - self.base:seq - self.base + limit]

    async def added(self, timeout: float) -> bool:
        """Until records are added (true), or ``timeout`` seconds (false)."""
        try:
            await asyncio.wait_for(self._added.wait(), timeout)
            return True
        except TimeoutError:
            return False


class Feed:
    """Where this host's tailer reads the log: its relay's stream, or the leader.

    ``read_rows`` is the runner's read; ``answered`` is when a quorum last answered
    it, as far as this host knows (the relay's own read, for a streamed record):
    the lease's fence (``daemon/lease.py``) counts from it."""

    def __init__(self, log_, *, node: str, count: int = RELAYS,
                 stale_after: float = 5.0) -> None:
        self.log = log_  # an EventLog session: the leader
        self.node = node
        self.count = count
        self.stale_after = stale_after
        self.answered = time.monotonic()
        self.source: str | None = None  # the relay streaming now; None: the leader
        self.switches = 0  # relays dropped (the metrics)
        self._base = 0  # the stream's rows: seqs _base+1 .. _base+len(_rows)
        self._rows: list[list] = []
        self._relay_answered = 0.0
        self._avoid: dict[str, float] = {}
        self._room = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.handle = None  # daemon/handle.py, for the peer port; set by start
        self.leader: Callable[[], str | None] = lambda: None
        self.applied: Callable[[], int] = lambda: 0
        self.wake: Callable[[], None] = lambda: None

    # -- the runner's side -------------------------------------------------------------

    async def read_rows(self, after: int, limit: int, types=None) -> list[list]:
        if types is None and self.source is not None and after >= self._base:
            # Those up to ``after`` were applied (some perhaps by Runner.offer, before
            # the stream brought them: those it brings later are dropped here then).
            done = min(after - self._base, len(self._rows))
            del self._rows[:done]
            self._base += done
            self._room.set()
            self.answered = self._relay_answered
            return self._rows[:limit] if self._base == after else []
        rows = await self.log.read_rows(after=after, limit=limit, types=types)
        self.answered = time.monotonic()
        return rows

    def __getattr__(self, name: str):  # the rest of the session: head, first, close, ...
        return getattr(self.log, name)

    # -- following a relay -------------------------------------------------------------

    def start(self, handle, *, leader: Callable[[], str | None], applied: Callable[[], int],
              wake: Callable[[], None]) -> None:
        self.handle, self.leader, self.applied, self.wake = handle, leader, applied, wake
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._drop()

    def wanted(self) -> list[str]:
        """The relays this host would follow, best first; none if it is one itself,
        or leads."""
        members = self.handle.state.members.nodes
        leader = self.leader()
        among = relays(members, leader, self.count)
        if self.node in among or self.node == leader or self.node not in members:
            return []
        return ranked(self.node, among)

    def _choose(self) -> str | None:
        now = time.monotonic()
        return next((r for r in self.wanted() if self._avoid.get(r, 0) <= now), None)

    async def _follow(self) -> None:
        while True:
            relay = self._choose()
            if relay is None:
                await asyncio.sleep(RETRY)
                continue
            try:
                await self._stream(relay)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, ValueError, KeyError, TypeError, IndexError,
                    CantainerError) as exc:
                live = self.source is not None  # else: not up yet, or down already
                self._avoid[relay] = time.monotonic() + (AVOID if live else RETRY)
                self.switches += 1
                log.log(logging.WARNING if live else logging.INFO,
                        "log feed: dropped relay %s (%s); reading from %s", relay, exc,
                        self._choose() or "the leader")
            finally:
                self._drop()
            await asyncio.sleep(0.1)

    def _drop(self) -> None:
        self.source, self._rows = None, []
        self._room.set()
        self.wake()  # the tailer reads from whoever comes next, now

    async def _stream(self, relay: str) -> None:
        """Follow ``relay`` until it fails (raises) or is no longer wanted (returns)."""
        after, every = self.applied(), round(max(0.1, self.stale_after / 4), 2)
        reader, writer = await peers.connect(self.handle, relay)
        try:
            writer.write(json.dumps({"op": "log_follow", "after": after,
                                     "every": every}).encode() + b"\n")
            last, rows = after, []
            while True:
                msg = await peers.message(reader, SILENT_KEEPALIVES * every,
                                          "it ended the stream")
                if msg.get("gap"):
                    raise Unavailable(f"it has no records right after seq {last}")
                if (fresh := float(msg["fresh"])) > self.stale_after:
                    raise Unavailable(f"it has not read the log for {fresh:.1f} s")
                if "records" in msg:
                    batch = list(unpack_rows(base64.b64decode(msg["records"])))
                    if not batch:
                        raise Unavailable("it sent an empty batch")
                    expect = [last + 1 + i for i in range(len(batch))]
                    if int(msg["after"]) != last or [r[0] for r in batch] != expect:
                        raise Unavailable(f"it sent seqs {batch[0][0]}..{batch[-1][0]} "
                                          f"after seq {msg['after']}, where seq {last + 1} "
                                          "comes next")
                    rows += batch
                    last = batch[-1][0]
                self._relay_answered = time.monotonic() - fresh
                if self.source is None:  # live: the tailer reads from here from now on
                    self.source, self._base, self._rows = relay, after, rows
                    log.info("log feed: following relay %s from seq %d", relay, after)
                rows = self._rows
                self.wake()  # records, or news of the relay's freshness: the fence's
                if relay not in self.wanted():
                    log.info("log feed: relay %s is no longer this host's", relay)
                    return
                while len(self._rows) > AHEAD:  # the tailer is behind: let it catch up
                    self._room.clear()
                    await self._room.wait()
        finally:
            writer.close()
