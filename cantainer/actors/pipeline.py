"""The pipeline: start the actors, feed them the log, keep them alive.

One tailer reads the log and tells each actor the records after the last one
it delivered to that actor, so the catch-up after a start, a restarted actor
and live events all take the same path.  The log sends no notifications:
the tailer polls, quickly (``POLL_MIN``) while events arrive and backing off
to ``idle_poll`` seconds (``IDLE_POLL``) when the log is quiet, and wakes at
once (``wake``) when this host appends or a peer pokes it after appending.
Every ``TICK`` seconds the pipeline restarts dead actors (with a fresh
projection, so they replay from seq 1); every ``reconcile_every`` seconds
(``RECONCILE_EVERY``; 0: never) it nudges the live ones to compare the kernel
with their projection (the actors also watch the kernel themselves: a
deleted link or entry, a container's exit).  Start order is ``ACTORS``;
stop order its reverse.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pykka

from cantainer.actors._base import ActorContext, Deliver, ProjectionActor, Reconcile
from cantainer.actors.ipam import IpamActor
from cantainer.actors.membership import MembershipActor
from cantainer.actors.overlay import OverlayActor
from cantainer.actors.runtime import RuntimeActor
from cantainer.errors import CantainerError, LogUnavailable
from cantainer.events import EventLog

log = logging.getLogger(__name__)

ACTORS: tuple[type[ProjectionActor], ...] = (MembershipActor, IpamActor, OverlayActor,
                                              RuntimeActor)
BATCH = 1000
POLL_MIN, IDLE_POLL = 0.01, 2.0  # pokes from appending hosts cut the wait (heartbeat.py)
TICK = 2.0
SLOW_READ = 0.5  # seconds: a read slower than this is logged
RECONCILE_EVERY = 10.0  # a full kernel comparison; most drift is noticed when it happens
RESTART_BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # seconds alive after which a restarted actor's backoff resets


class Pipeline:
    def __init__(self, log_: EventLog, context: ActorContext,
                 actors: tuple[type[ProjectionActor], ...] = ACTORS,
                 fixed_poll: float | None = None, idle_poll: float = IDLE_POLL,
                 reconcile_every: float = RECONCILE_EVERY) -> None:
        self.log = log_
        self.idle_poll = idle_poll
        self.reconcile_every = reconcile_every
        # The benchmarks' anchor: the original tool's design, a fixed poll and no wakes.
        self.fixed_poll = fixed_poll
        self.context = context
        self.classes = {cls.name: cls for cls in actors}
        self.refs: dict[str, pykka.ActorRef] = {}
        self.delivered: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._progressed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.context.progressed = lambda: loop.call_soon_threadsafe(self._progressed.set)
        for name in self.classes:
            self._start(name)
        self._tasks = [asyncio.create_task(self._tail()), asyncio.create_task(self._tick())]

    def _start(self, name: str) -> None:
        self.context.rejected[name] = {}
        self.refs[name] = self.classes[name].start(self.context)
        self._started_at[name] = time.monotonic()
        self.delivered[name] = 0
        self.context.progress[name] = 0

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in reversed(list(self.refs)):
            ref = self.refs.pop(name)
            if ref.is_alive():
                await asyncio.to_thread(lambda: ref.stop(block=True, timeout=10))

    # -- feeding --------------------------------------------------------------------

    def wake(self) -> None:
        """Read the log now: this host just appended, or a peer did."""
        if self.fixed_poll is None:
            self._wake.set()

    async def _tail(self) -> None:
        interval = POLL_MIN
        while True:
            self._wake.clear()  # before the read: a wake during it must not be lost
            after = min(self.delivered.values())
            started = time.monotonic()
            try:
                batch = await self.log.read(after=after, limit=BATCH)
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
            self._deliver(after, batch)
            if len(batch) == BATCH:
                continue
            interval = POLL_MIN if batch else min(interval * 2, self.idle_poll)
            if self.fixed_poll is not None:
                interval = self.fixed_poll
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass

    def _deliver(self, after: int, batch) -> None:
        for name, ref in self.refs.items():
            if self.delivered[name] < after:
                continue  # restarted during the read: its replay starts at seq 1, next round
            new = tuple(r for r in batch if r.seq > self.delivered[name])
            if not new:
                continue
            try:
                ref.tell(Deliver(new))
            except pykka.ActorDeadError:
                continue  # supervise() starts a fresh one, which replays from seq 1
            self.delivered[name] = new[-1].seq

    async def _tick(self) -> None:
        ticks_per_reconcile = max(1, round(self.reconcile_every / TICK))
        for n in itertools.count(1):
            await asyncio.sleep(TICK)
            self.supervise()
            if not self.reconcile_every or n % ticks_per_reconcile:
                continue
            for ref in self.refs.values():
                try:
                    ref.tell(Reconcile(periodic=True))
                except pykka.ActorDeadError:
                    pass  # restarted by supervise() after its backoff

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
                log.error("%s actor died; restarting it in %.0fs with a fresh replay",
                          name, self._backoff[name])
            elif now >= self._restart_at[name]:
                del self._restart_at[name]
                self._start(name)
                self.wake()

    # -- questions from the API -------------------------------------------------------

    def applied(self) -> int:
        """The seq every actor has applied."""
        return min(self.context.progress.values(), default=0)

    async def wait_applied(self, name: str, seq: int, timeout: float = 10.0) -> None:
        self.wake()
        try:
            async with asyncio.timeout(timeout):
                while self.context.progress.get(name, 0) < seq:
                    self._progressed.clear()
                    if self.context.progress.get(name, 0) >= seq:
                        break
                    await self._progressed.wait()
        except TimeoutError:
            raise CantainerError(f"the {name} actor has not applied seq {seq} "
                                 f"after {timeout:g}s") from None

    async def ask(self, name: str, method: str, *args, timeout: float = 10.0):
        """Call an actor's method and wait for the answer without blocking the loop."""
        ref = self.refs.get(name)
        if ref is None or not ref.is_alive():
            raise CantainerError(f"the {name} actor is restarting; try again")
        future = getattr(ref.proxy(), method)(*args)
        return await asyncio.to_thread(lambda: future.get(timeout=timeout))

    async def rejection(self, name: str, seqs: list[int]) -> tuple[int, str] | None:
        """Wait for actor ``name`` to apply ``seqs``; the first it rejected, and why."""
        await self.wait_applied(name, max(seqs))
        rejected = self.context.rejected.get(name, {})
        return next(((seq, rejected[seq]) for seq in seqs if seq in rejected), None)

