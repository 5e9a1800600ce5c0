"""The runner applies the log once, in order, gives each actor its plan, and restarts a
crashed actor with the current plan; the actor base class keeps removals cheap."""

import asyncio

import pykka
import pytest

from cantainer.actors.base import ActorContext, Desired, KernelActor, Reconcile, Vanished
from cantainer.daemon import runner as runner_module
from cantainer.daemon.runner import Runner
from cantainer.events import NetworkCreated, NodeJoined, NodeLeft, Recorded, row_of
from cantainer.projections.state import ClusterState


class MemoryLog:
    """Stands in for the EventLog: the runner only reads."""

    def __init__(self, events):
        self.records = []
        self.reads = 0
        for e in events:
            self.add(e)

    def add(self, event):
        seq = len(self.records) + 1
        self.records.append(Recorded(seq, f"id{seq}", event.type_name(), 1, "t", 0.0, event))

    async def read_rows(self, after=0, limit=1000, types=None):
        self.reads += 1
        return [row_of(r) for r in self.records if r.seq > after][:limit]


def members(state, host):
    """A plan: the names of the live members."""
    return tuple(sorted(state.members.live()))


class Recording(KernelActor):
    name = "recording"
    derive = staticmethod(members)
    plans = []

    def reconcile(self, changed_only=False):
        Recording.plans.append((self.seq, self.plan, changed_only))


class CrashesOnce(KernelActor):
    name = "crashy"
    derive = staticmethod(members)
    crashed = []
    plans = []

    def reconcile(self, changed_only=False):
        if "h2" in self.plan and not CrashesOnce.crashed:
            CrashesOnce.crashed.append(self.seq)
            raise RuntimeError("kernel said no")
        CrashesOnce.plans.append((self.seq, self.plan, changed_only))


def joined(name, i):
    return NodeJoined(name=name, address=f"192.0.2.{i}", dqlite_address=f"192.0.2.{i}:9000")


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setattr(runner_module, "TICK", 0.05)
    Recording.plans, CrashesOnce.plans, CrashesOnce.crashed = [], [], []


def start(log, actors, **kwargs):
    r = Runner(log, ClusterState(), node="h1", address="192.0.2.1", data_dir="/nonexistent",
               report=lambda e, i: None, actors=actors, **{"idle_poll": 0.02, **kwargs})
    r.start()
    return r


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_each_record_is_applied_once_in_order_and_plans_follow():
    log = MemoryLog([joined("h1", 1), joined("h2", 2)])

    async def go():
        r = start(log, (Recording,))
        try:
            await r.wait_reconciled("recording", 2)
            assert r.state.applied == 2
            log.add(NodeLeft(name="h2"))
            r.wake()
            await r.wait_applied(3)
            await r.wait_reconciled("recording", 3)
        finally:
            await r.stop()

    run(go())
    assert Recording.plans == [(2, ("h1", "h2"), False), (3, ("h1",), True)], \
        "the first plan compared in full, then only what changed"


class Told(Recording):
    name = "told"
    received = []

    def on_receive(self, message):
        if isinstance(message, Desired):
            Told.received.append(message.seq)
        super().on_receive(message)


def test_a_plan_that_did_not_change_is_not_sent_but_counts_as_reconciled():
    log = MemoryLog([joined("h1", 1), joined("h2", 2)])
    Told.received = []

    async def go():
        r = start(log, (Told,))
        try:
            await r.wait_reconciled("told", 2)
            log.add(NetworkCreated(name="n1", cidr="198.18.0.0/24"))  # no member changes
            r.wake()
            await r.wait_applied(3)
            await r.wait_reconciled("told", 3)
            log.add(NodeLeft(name="h2"))
            r.wake()
            await r.wait_reconciled("told", 4)
        finally:
            await r.stop()

    run(go())
    assert Told.received == [2, 4], "seq 3 changed no plan: nothing sent, yet reconciled"


def test_the_daemon_gets_each_state_before_the_actors_get_its_plan():
    # The name server binds in on_state; the runtime starts the container on its plan.
    log = MemoryLog([joined("h1", 1)])
    order = []  # both are called on the loop, in the order the runner makes them

    async def go():
        r = start(log, (Recording,), on_state=lambda state: order.append(("state",
                                                                           state.applied)))
        tell = r.tell

        def noted(name, message):
            if isinstance(message, Desired):
                order.append(("plan", message.seq))
            tell(name, message)
        r.tell = noted
        try:
            await r.wait_reconciled("recording", 1)
            log.add(joined("h2", 2))
            r.wake()
            await r.wait_reconciled("recording", 2)
        finally:
            await r.stop()

    run(go())
    assert order == [("state", 1), ("plan", 1), ("state", 2), ("plan", 2)], order


def test_a_long_log_is_caught_up_before_any_plan(monkeypatch):
    monkeypatch.setattr(runner_module, "BATCH", 2)
    log = MemoryLog([joined(f"h{i}", i) for i in range(1, 8)])

    async def go():
        r = start(log, (Recording,))
        try:
            await r.wait_reconciled("recording", 7)
        finally:
            await r.stop()

    run(go())
    assert [seq for seq, _, _ in Recording.plans] == [7], "no plan of a half-read log"


def test_a_crashed_actor_is_restarted_with_the_current_plan():
    log = MemoryLog([joined("h1", 1), joined("h2", 2)])

    async def go():
        r = start(log, (CrashesOnce, Recording))
        try:
            first = r.refs["crashy"]
            while first.is_alive():
                await asyncio.sleep(0.01)
            log.add(NodeLeft(name="h2"))  # while it waits for its restart
            r.wake()
            await r.wait_applied(3)
            assert r.refs["recording"].is_alive(), "one actor's crash leaves the others alone"
            while r.refs["crashy"] is first or not r.refs["crashy"].is_alive():
                await asyncio.sleep(0.02)
            await r.wait_reconciled("crashy", 3)
        finally:
            await r.stop()

    run(go())
    assert CrashesOnce.crashed == [2]
    assert CrashesOnce.plans == [(3, ("h1",), False)], "a fresh actor, the plan of now, in full"


def test_a_quiet_log_is_read_within_the_idle_poll_and_at_once_when_woken():
    """A lost poke costs at most the idle poll; a wake costs nothing.  (Waiting here
    polls the state: the runner's own waits wake the tailer.)"""
    log = MemoryLog([joined("h1", 1)])

    async def applied(r, seq, timeout=5):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while r.state.applied < seq:
            assert loop.time() < deadline, f"seq {seq} not applied in {timeout}s"
            await asyncio.sleep(0.001)

    async def go():
        r = start(log, (Recording,), idle_poll=0.5)
        loop = asyncio.get_running_loop()
        try:
            await applied(r, 1)
            await asyncio.sleep(2)  # quiet: the tailer's wait has grown to the idle poll
            log.add(NodeLeft(name="h1"))
            started = loop.time()
            await applied(r, 2)
            unwoken = loop.time() - started
            await asyncio.sleep(2)
            log.add(joined("h1", 1))
            started = loop.time()
            r.wake()
            await applied(r, 3)
            woken = loop.time() - started
        finally:
            await r.stop()
        return unwoken, woken

    unwoken, woken = run(go())
    assert 0.05 < unwoken <= 0.5 + 0.2, unwoken
    assert woken < 0.05, woken


class Counting(KernelActor):
    """Counts full comparisons with the kernel (no kernel: a unit of the base class)."""

    name = "counting"
    derive = staticmethod(members)
    full = []

    def reconcile(self, changed_only=False):
        if not changed_only:
            Counting.full.append(self.seq)

    def on_receive(self, message):
        if isinstance(message, _Block):
            message.future.get(timeout=5)
        else:
            super().on_receive(message)


class _Block:
    """Holds the actor's thread until ``future`` is set."""

    def __init__(self, future):
        self.future = future


class _Quiet:
    def reconciled(self, actor, seq):
        pass

    def report(self, event, event_id):
        pass

    def noticed(self):
        pass


def test_a_burst_of_removals_costs_one_full_comparison():
    Counting.full = []
    ref = Counting.start(ActorContext(node="h1", address="192.0.2.1", data_dir="/x",
                                      listener=_Quiet()))
    try:
        ping = lambda: ref.ask(Reconcile(full=False), timeout=5)  # noqa: E731 - a round trip
        ref.tell(Desired(1, ("h1",)))  # the first look: in full
        ping()
        assert Counting.full == [1]
        # Twenty removals reported while the actor is busy: all sent before the one full
        # comparison that the first of them starts, so the other nineteen are moot.
        busy = pykka.ThreadingFuture()
        ref.tell(_Block(busy))
        for _ in range(20):
            ref.tell(Vanished((("link", "ctbr4096"),)))
        busy.set(None)
        ping()
        assert Counting.full == [1, 1]
        ref.tell(Reconcile())  # sent after it: a new comparison
        ping()
        assert Counting.full == [1, 1, 1]
    finally:
        ref.stop()


class Compacted(MemoryLog):
    """A log whose records up to ``upto`` are archived: the database holds the rest."""

    def __init__(self, events, upto):
        super().__init__(events)
        self.upto = upto

    async def read_rows(self, after=0, limit=1000, types=None):
        return [row for row in await super().read_rows(after, limit) if row[0] > self.upto]


class AtCheckpoint:
    """``Checkpoints.newest`` that has the state at one seq, or none (an error)."""

    every = 0

    def __init__(self, state=None):
        self.state, self.asked = state, []

    async def newest(self, reader, seq):
        self.asked.append(seq)
        if self.state is None:
            raise runner_module.Unavailable("no member has it")
        return self.state, "ab" * 32

    def due(self, first, last):
        return False


def test_a_state_behind_the_archived_records_starts_from_the_checkpoint_they_follow():
    events = [joined("h1", 1), joined("h2", 2), NodeLeft(name="h2"), joined("h3", 3)]
    at_3 = ClusterState()
    at_3.apply_all(MemoryLog(events[:3]).records)
    checkpoint = AtCheckpoint(at_3)

    async def go():
        r = start(Compacted(events, upto=3), (), checkpoints=checkpoint)
        try:
            await r.wait_applied(4)
            return r.state
        finally:
            await r.stop()

    state = run(go())
    assert checkpoint.asked == [3]
    assert sorted(state.members.live()) == ["h1", "h3"], "the checkpoint, then seq 4"


def test_with_no_checkpoint_to_be_had_nothing_past_the_gap_is_applied(caplog):
    events = [joined("h1", 1), joined("h2", 2), joined("h3", 3)]
    checkpoint = AtCheckpoint()

    async def go():
        r = start(Compacted(events, upto=2), (), checkpoints=checkpoint)
        before = r.last_read_ok
        try:
            await asyncio.sleep(0.3)
            assert r.last_read_ok == before, \
                "reads it cannot apply are no answer (the fence; a relay's followers)"
            return r.state.applied
        finally:
            await r.stop()

    assert run(go()) == 0, "seq 3 is never applied to a state without seqs 1 and 2"
    assert checkpoint.asked == [2]
    assert "the records after seq 0 up to 2 are archived, and no checkpoint from there on " \
           "can be had: no member has it" in caplog.text
