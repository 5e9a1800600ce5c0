"""The pipeline feeds every actor in order and restarts a crashed one from seq 1."""

import asyncio

import pytest

from cantainer.actors import ActorContext, Deliver, Pipeline, ProjectionActor
from cantainer.actors import pipeline as pipeline_module
from cantainer.actors.membership import Membership
from cantainer.events import NodeJoined, NodeLeft, Recorded


class MemoryLog:
    """Stands in for the EventLog: the pipeline only reads."""

    def __init__(self, events):
        self.records = [Recorded(i, f"id{i}", e.type_name(), 1, "t", 0.0, e)
                        for i, e in enumerate(events, 1)]

    def add(self, event):
        seq = len(self.records) + 1
        self.records.append(Recorded(seq, f"id{seq}", event.type_name(), 1, "t", 0.0, event))

    async def read(self, after=0, limit=1000, types=None):
        return [r for r in self.records if r.seq > after][:limit]


class Recording(ProjectionActor):
    name = "recording"
    seen = []

    def __init__(self, context):
        super().__init__(context, Membership())

    def on_receive(self, message):
        super().on_receive(message)
        if isinstance(message, Deliver):
            Recording.seen.extend(r.seq for r in message.records)


class CrashesOnce(ProjectionActor):
    name = "crashy"
    crashed = []

    def __init__(self, context):
        super().__init__(context, Membership())

    def reconcile(self, changed_only=False):
        if "h2" in self.projection.nodes and not CrashesOnce.crashed:
            CrashesOnce.crashed.append(self.projection.applied)
            raise RuntimeError("kernel said no")


def host_context():
    return ActorContext(node="h1", address="192.0.2.1", append=lambda e, i: None)


def joined(name, i):
    return NodeJoined(name=name, address=f"192.0.2.{i}", dqlite_address=f"192.0.2.{i}:9000")


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setattr(pipeline_module, "TICK", 0.05)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_actors_get_every_record_in_order_then_live_ones():
    log = MemoryLog([joined("h1", 1), joined("h2", 2)])
    Recording.seen = []
    context = host_context()

    async def go():
        p = Pipeline(log, context, actors=(Recording,), idle_poll=0.02)
        p.start()
        try:
            await p.wait_applied("recording", 2)
            log.add(NodeLeft(name="h2"))
            p.wake()
            await p.wait_applied("recording", 3)
            assert await p.ask("recording", "applied") == 3
        finally:
            await p.stop()

    run(go())
    assert Recording.seen == [1, 2, 3], "every record once, in order"


def test_a_crashed_actor_is_restarted_from_a_fresh_replay():
    log = MemoryLog([joined("h1", 1), joined("h2", 2), NodeLeft(name="h2")])
    CrashesOnce.crashed = []
    context = host_context()

    async def go():
        p = Pipeline(log, context, actors=(CrashesOnce, Recording), idle_poll=0.02)
        p.start()
        try:
            first = p.refs["crashy"]
            await asyncio.sleep(0.01)
            while first.is_alive():
                await asyncio.sleep(0.01)
            # A fresh actor replays from seq 1 and ends where the log ends.
            while p.refs["crashy"] is first or not p.refs["crashy"].is_alive():
                await asyncio.sleep(0.02)
            await p.wait_applied("crashy", 3)
            assert await p.ask("crashy", "applied") == 3
            assert p.refs["recording"].is_alive(), "one actor's crash leaves the others alone"
        finally:
            await p.stop()

    run(go())
    assert CrashesOnce.crashed == [3]


def test_a_dead_actor_does_not_stop_the_others_from_being_fed():
    log = MemoryLog([joined("h1", 1), joined("h2", 2)])
    CrashesOnce.crashed = []
    context = host_context()

    async def go():
        p = Pipeline(log, context, actors=(CrashesOnce, Recording), idle_poll=0.02)
        p.start()
        try:
            first = p.refs["crashy"]
            while first.is_alive():
                await asyncio.sleep(0.01)
            for i in range(3, 8):  # new records while the crashed actor waits for its restart
                log.add(NodeLeft(name="h2") if i == 3 else joined(f"x{i}", i))
                p.wake()
                await p.wait_applied("recording", i)
            await p.wait_applied("crashy", 7)
            assert await p.ask("crashy", "applied") == 7
        finally:
            await p.stop()

    run(go())


class Counting(ProjectionActor):
    """Counts full comparisons with the kernel (no kernel: a unit of the base class)."""

    name = "counting"
    full = []

    def __init__(self, context):
        super().__init__(context, Membership())

    def reconcile(self, changed_only=False):
        if not changed_only:
            Counting.full.append(self.projection.applied)


def test_a_burst_of_removals_costs_one_full_comparison():
    import pykka

    from cantainer.actors._base import Reconcile, Vanished

    Counting.full = []
    ref = Counting.start(host_context())
    try:
        actor = ref.proxy()
        ref.tell(Deliver(tuple(MemoryLog([joined("h1", 1)]).records)))  # the first look
        actor.applied().get(timeout=5)
        assert Counting.full == [1]
        # Twenty removals reported while the actor is busy: all sent before the one full
        # comparison that the first of them starts, so the other nineteen are moot.
        busy = pykka.ThreadingFuture()
        ref.tell(_Block(busy))
        for _ in range(20):
            ref.tell(Vanished((("link", "ctbr4096"),)))
        busy.set(None)
        actor.applied().get(timeout=5)
        assert Counting.full == [1, 1]
        ref.tell(Reconcile())  # sent after it: a new comparison
        actor.applied().get(timeout=5)
        assert Counting.full == [1, 1, 1]
    finally:
        ref.stop()


class _Block:
    """Holds the actor's thread until ``future`` is set."""

    def __init__(self, future):
        self.future = future


def _blocking_receive(self, message):
    if isinstance(message, _Block):
        message.future.get(timeout=5)
    else:
        ProjectionActor.on_receive(self, message)


Counting.on_receive = _blocking_receive


def test_without_a_wake_a_quiet_log_is_read_within_the_idle_poll():
    """A lost poke costs at most the idle poll; a wake costs nothing."""
    log = MemoryLog([joined("h1", 1)])
    Recording.seen = []
    context = host_context()

    async def go():
        p = Pipeline(log, context, actors=(Recording,), idle_poll=0.5)
        p.start()
        try:
            await p.wait_applied("recording", 1)
            await asyncio.sleep(2)  # quiet: the tailer's wait has grown to the idle poll
            log.add(NodeLeft(name="h1"))
            started = asyncio.get_running_loop().time()
            await p.wait_applied("recording", 2, timeout=5)
            unwoken = asyncio.get_running_loop().time() - started
            await asyncio.sleep(2)
            log.add(joined("h1", 1))
            started = asyncio.get_running_loop().time()
            p.wake()
            await p.wait_applied("recording", 3, timeout=5)
            woken = asyncio.get_running_loop().time() - started
        finally:
            await p.stop()
        return unwoken, woken

    unwoken, woken = run(go())
    assert unwoken <= 0.5 + 0.2, unwoken
    assert woken < 0.05, woken
