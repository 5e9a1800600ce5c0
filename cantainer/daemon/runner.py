"""The runner: read the log in order, apply each record once, give the actors their plans.

The one ``ClusterState`` of this host lives here, on the daemon's event loop:
the tailer applies every record to it once, and the API reads it on the same
loop (no locks, no copies).  After each read that reaches the log's head, each
kernel actor is told its plan as of that seq (``Desired``), derived from the
state by the actor's ``derive`` and frozen: no actor ever sees the state.
"Wait until applied" (the state) and "wait until reconciled" (an actor's
kernel) are the runner's own methods.

The log sends no notifications: every host that appends pokes the others, and the
tailer reads at once (``wake``) when poked or when this host appends; it also polls,
``POLL_MIN`` after records came and backing off to ``idle_poll`` while the log is
quiet, for a poke that was lost.  Every
``TICK`` seconds the runner restarts dead actors (a fresh one gets the current
plan); every ``reconcile_every`` seconds (0: never) it nudges the live ones to
compare the kernel with their plan.  Start order is ``actors``; stop order its
reverse.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

import pykka

from cantainer.actors import ACTORS, ActorContext, Desired, KernelActor, Reconcile
from cantainer.errors import CantainerError, LogUnavailable, Unavailable
from cantainer.events import Event, decode_rows, row_of
from cantainer.projections.state import ClusterState

log = logging.getLogger(__name__)

BATCH = 1000
# The first look after records came, unless a poke comes first.  Not sooner: each look
# at the head is a query the leader answers, and one every 10 ms (the first design)
# made more empty reads per append the further apart appends came: the leader's CPU
# per event grew 1.3x from 4 to 16 hosts on this 2-core lab, 1.06x with pokes alone
# (bench.leader_load).
POLL_MIN = 0.1
TICK = 2.0
SLOW_READ = 0.5  # seconds: a read slower than this is logged
RESTART_BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # seconds alive after which a restarted actor's backoff resets


class Runner:
    def __init__(self, log_, state: ClusterState, *, node: str, address: str, data_dir: str,
                 report: Callable[[Event, str], None], underlay_mtu: int = 1500,
                 actors: tuple[type[KernelActor], ...] = ACTORS, idle_poll: float = 2.0,
                 reconcile_every: float = 10.0, fixed_poll: float | None = None,
                 on_state: Callable[[ClusterState], None] = lambda state: None,
                 quiet_most: float = float("inf"),
                 lease: tuple[str, float] | None = None, checkpoints=None,
                 archive=None, recent=None) -> None:
        self.log = log_
        self.state = state
        self.node = node
        self._report = report
        self.idle_poll = idle_poll
        # The longest a quiet log goes unread (the fence needs a read this often), and
        # when a read (or an append) last reached a quorum.
        self.quiet_most = quiet_most
        self.last_read_ok = time.monotonic()
        self.checkpoints = checkpoints  # daemon/checkpoints.py: the state saved at seqs
        self.archive = archive  # daemon/archive.py: the records, in segments
        self.recent = recent  # daemon/fanout.py: the records applied last, to relay
        self.lag = 0.0  # seconds from the newest record read to its application here
        self.reconcile_every = reconcile_every
        # The benchmarks' anchor: the original tool's design, a fixed poll and no wakes.
        self.fixed_poll = fixed_poll
        self._on_state = on_state  # at each publish, on the loop, before the plans go out
        self.context = ActorContext(node=node, address=address, data_dir=data_dir,
                                    listener=self, underlay_mtu=underlay_mtu, lease=lease)
        self.classes = {cls.name: cls for cls in actors}
        self.refs: dict[str, pykka.ActorRef] = {}
        self.reconciled_seq: dict[str, int] = {}
        self._told: dict[str, tuple[int, object]] = {}  # actor -> (seq, plan) last sent
        self._holds_until: dict[str, int] = {}  # actor -> last seq its plan was derived at
        self._published = 0
        self._restart_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._progressed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.archive is not None:
            self.archive.reset(self.state.applied)
        for name in self.classes:
            self._start(name)
        self._tasks = [asyncio.create_task(self._tail()), asyncio.create_task(self._tick())]

    def _start(self, name: str) -> None:
        self.refs[name] = self.classes[name].start(self.context)
        self._started_at[name] = time.monotonic()
        self.reconciled_seq[name] = 0
        self._told.pop(name, None)
        if self._published:  # a restarted actor: its plan now
            self._send_plan(name)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in reversed(list(self.refs)):
            ref = self.refs.pop(name)
            if ref.is_alive():
                await asyncio.to_thread(lambda: ref.stop(block=True, timeout=10))

    # -- the Listener of the actors (their threads) ------------------------------------------

    def reconciled(self, actor: str, seq: int) -> None:
        self._loop.call_soon_threadsafe(self._set_reconciled, actor, seq)

    def _set_reconciled(self, actor: str, seq: int) -> None:
        told = self._told.get(actor)
        if told is not None and seq == told[0]:  # that plan holds until a later seq
            seq = self._holds_until.get(actor, seq)
        self.reconciled_seq[actor] = max(seq, self.reconciled_seq.get(actor, 0))
        self._progressed.set()

    def report(self, event: Event, event_id: str) -> None:
        self.noticed()  # what it reports is on disk already
        self._report(event, event_id)

    def noticed(self) -> None:
        # A waiter that looks at files too may look now (api/containers.py: run).
        self._loop.call_soon_threadsafe(self._progressed.set)

    # -- feeding --------------------------------------------------------------------------

    def wake(self) -> None:
        """Read the log now: this host just appended, or a peer did."""
        if self.fixed_poll is None:
            self._wake.set()

    async def _tail(self) -> None:
        interval = POLL_MIN
        while True:
            self._wake.clear()  # before the read: a wake during it must not be lost
            after = self.state.applied
            started = time.monotonic()
            try:
                rows = await self.log.read_rows(after=after, limit=BATCH)
                if (took := time.monotonic() - started) > SLOW_READ:
                    log.warning("tailer: reading the log after seq %d took %.2f s", after, took)
            except LogUnavailable as exc:
                log.warning("tailer: %s", exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:  # never let this host stop reading the log
                log.exception("tailer: reading the log failed; retrying")
                await asyncio.sleep(1.0)
                continue
            # A relay's records reached a quorum when it read them (daemon/fanout.py: Feed).
            answered = getattr(self.log, "answered", None) or time.monotonic()
            if rows and rows[0][0] != after + 1:  # the log holds no gaps but compaction's
                if not await self._cross(rows[0][0] - 1):
                    await asyncio.sleep(1.0)
                continue  # not applied: no answer for the fence, nor for followers
            self.last_read_ok = answered
            if self.recent is not None:
                self.recent.add(after, rows)
            batch = decode_rows(rows)
            self._apply(batch, rows)
            if batch:  # the metrics' convergence lag: its append (the leader's clock) to now
                self.lag = time.time() - batch[-1].time
            if batch:
                self._progressed.set()
            if len(batch) == BATCH:
                continue  # catch up first: plans follow once at the head
            self._publish()
            interval = POLL_MIN if batch else min(interval * 2, self.idle_poll,
                                                  self.quiet_most)
            if self.fixed_poll is not None:
                interval = self.fixed_poll
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass

    def offer(self, records) -> bool:
        """Records this host has just appended: when they are the next ones in order,
        they are applied here and now, not read back from the leader; whether they were
        (if not, the tailer must read: ``wake``)."""
        if records:
            self.last_read_ok = time.monotonic()  # a quorum took them
        if records and records[0].seq == self.state.applied + 1:
            rows = [row_of(rec) for rec in records]
            if self.recent is not None:
                self.recent.add(self.state.applied, rows)
            self._apply(records, rows)
            self._progressed.set()
            self._loop.call_soon(self._publish)  # after the appender's answer
            return True
        return False

    async def _cross(self, seq: int) -> bool:
        """The records after this state's seq up to ``seq`` are archived: the state
        becomes the newest checkpoint at ``seq`` or later the log vouches for (this
        host's or a member's), or stays as it is (false) and nothing is applied."""
        try:
            if self.checkpoints is None:
                raise Unavailable("this host keeps no checkpoints")
            loaded, digest = await self.checkpoints.newest(self.log, seq)
        except Exception as exc:  # noqa: BLE001 -- never let the tailer die of it
            log.error("tailer: the records after seq %d up to %d are archived, and no "
                      "checkpoint from there on can be had: %s", self.state.applied, seq,
                      exc if isinstance(exc, CantainerError) else f"{type(exc).__name__}: {exc}")
            return False
        log.warning("tailer: the records after seq %d up to %d are archived: starting "
                    "from the checkpoint at seq %d (sha256 %s)", self.state.applied, seq,
                    loaded.applied, digest[:12])
        self.state.take(loaded)
        self.state.checkpoints[loaded.applied] = digest
        if self.archive is not None:
            self.archive.reset(loaded.applied)
        self._progressed.set()
        return True

    def _apply(self, records, rows) -> None:
        """Apply records in order (``rows``: the same, as stored: the archive's); at a
        checkpoint's seq, save the state as it is then."""
        if self.archive is not None:
            self.archive.add(rows)
        cp = self.checkpoints
        if cp is None or not records or not cp.due(records[0].seq, records[-1].seq):
            self.state.apply_all(records)
            return
        for rec in records:
            before = self.state.applied
            self.state.apply(rec)
            if self.state.applied != before and rec.seq % cp.every == 0:
                cp.take(self.state)

    def _publish(self) -> None:
        """Each actor's plan as of the state's seq, if the state moved since the last."""
        if self.state.applied == self._published:
            return
        self._published = self.state.applied
        self._on_state(self.state)  # first: a network's name server listens before its
        for name in self.refs:      # first container here starts and asks it
            self._send_plan(name)

    def _send_plan(self, name: str) -> None:
        """The actor's plan as of ``_published``, unless it holds that plan already."""
        seq, plan = self._published, self.classes[name].derive(self.state, self.node)
        self._holds_until[name] = seq
        told = self._told.get(name)
        if told is not None and told[1] == plan:
            if self.reconciled_seq.get(name, 0) >= told[0]:  # made true already
                self._set_reconciled(name, told[0])
            return
        self._told[name] = (seq, plan)
        self.tell(name, Desired(seq, plan))

    def tell(self, name: str, message) -> None:
        """A message to actor ``name`` (one that is restarting gets its plan anew)."""
        try:
            self.refs[name].tell(message)
        except pykka.ActorDeadError:
            pass  # supervise() starts a fresh one, which gets the plan then

    async def _tick(self) -> None:
        ticks_per_reconcile = max(1, round(self.reconcile_every / TICK))
        for n in itertools.count(1):
            await asyncio.sleep(TICK)
            self.supervise()
            if not self.reconcile_every or n % ticks_per_reconcile:
                continue
            for name in self.refs:
                self.tell(name, Reconcile(periodic=True))

    def supervise(self) -> None:
        """Start a fresh actor in place of a dead one, with backoff against crash loops."""
        now = time.monotonic()
        for name, ref in list(self.refs.items()):
            if ref.is_alive():
                if now - self._started_at[name] > HEALTHY_AFTER:
                    self._backoff.pop(name, None)
                continue
            if name not in self._restart_at:
                self._backoff[name] = min(self._backoff.get(name, 0.5) * 2, RESTART_BACKOFF_MAX)
                self._restart_at[name] = now + self._backoff[name]
                log.error("%s actor died; restarting it in %.0fs", name, self._backoff[name])
            elif now >= self._restart_at[name]:
                del self._restart_at[name]
                self._start(name)

    # -- waiting, for the API ---------------------------------------------------------------

    async def wait_applied(self, seq: int, timeout: float = 10.0) -> None:
        """Until the state has applied ``seq``."""
        await self.until(lambda: self.state.applied >= seq, timeout,
                         f"this host to apply seq {seq}")

    async def wait_reconciled(self, actor: str, seq: int, timeout: float = 10.0) -> None:
        """Until ``actor`` has made the kernel match its plan as of ``seq``."""
        await self.until(lambda: self.reconciled_seq.get(actor, 0) >= seq, timeout,
                         f"the {actor} actor to act on seq {seq}")

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``done()`` holds, asked again whenever records are applied or an actor
        reports; ``Unavailable`` after ``timeout`` seconds.  The tailer is woken to read
        only when it is not true already (an append applied here by ``offer`` is)."""
        if done():
            return
        self.wake()
        try:
            async with asyncio.timeout(None if timeout == float("inf") else timeout):
                while not done():
                    self._progressed.clear()
                    if done():
                        break
                    await self._progressed.wait()
        except TimeoutError:
            raise Unavailable(f"waited {timeout:g}s for {what}") from None

    async def changed(self, timeout: float) -> None:
        """Until records are applied or an actor reports, or ``timeout`` seconds."""
        self._progressed.clear()
        try:
            await asyncio.wait_for(self._progressed.wait(), timeout)
        except TimeoutError:
            pass

    async def ask(self, actor: str, method: str, *args, timeout: float = 10.0):
        """Call an actor's method and wait for the answer without blocking the loop."""
        ref = self.refs.get(actor)
        if ref is None or not ref.is_alive():
            raise Unavailable(f"the {actor} actor is restarting; try again")
        future = getattr(ref.proxy(), method)(*args)
        return await asyncio.to_thread(lambda: future.get(timeout=timeout))
