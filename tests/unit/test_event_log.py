"""The EventLog against a real one-node dqlite on loopback (no root, no namespaces).

The idempotent append is the log's core rule: an id already in the log appends
nothing and gets back its original seq, alone or inside a batch.
"""

import asyncio
import socket

import pytest

from cantainer.errors import InvalidEvent
from cantainer.events import NetworkCreated, NodeLeft
from cantainer.events.engine import BOOTSTRAP_ID, DqliteNode
from cantainer.events.log import EventLog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def log(tmp_path):
    """``log(coroutine_function)`` runs it with an EventLog on a fresh node."""
    from dqliteclient import MemoryNodeStore

    address = f"127.0.0.1:{free_port()}"
    node = DqliteNode(BOOTSTRAP_ID, address, str(tmp_path / "dqlite"))
    node.start()

    def run(body):
        async def go():
            events = EventLog(MemoryNodeStore([address]), node="t", timeout=5)
            try:
                return await body(events)
            finally:
                await events.close()
        return asyncio.run(go())

    try:
        yield run
    finally:
        node.close()


def net(i: int) -> NetworkCreated:
    return NetworkCreated(name=f"n{i}", cidr=f"198.19.{i}.0/24")


def test_an_id_already_in_the_log_appends_nothing(log):
    async def body(events):
        first = await events.append([net(1)], ["once"])
        again = await events.append([net(1)], ["once"])
        different = await events.append([net(2)], ["other"])
        return first, again, different, await events.head(), await events.read()

    first, again, different, head, records = log(body)
    assert first == again == [1] and different == [2] and head == 2
    assert [(r.seq, r.id, r.event) for r in records] == [(1, "once", net(1)),
                                                        (2, "other", net(2))]


def test_a_batch_that_holds_known_ids_appends_only_the_new_ones(log):
    async def body(events):
        await events.append([net(i) for i in range(3)], ["a", "b", "c"])
        mixed = await events.append([net(9), net(1), net(8), net(2)], ["x", "b", "y", "c"])
        return mixed, [(r.seq, r.id) for r in await events.read()]

    mixed, rows = log(body)
    assert mixed == [4, 2, 5, 3], "original seqs for known ids, new ones in order for the rest"
    assert rows == [(1, "a"), (2, "b"), (3, "c"), (4, "x"), (5, "y")]


def test_a_large_batch_is_one_contiguous_transaction(log):
    async def body(events):
        await events.append([NodeLeft(name="first")], ["first"])
        return await events.append([net(i % 250) for i in range(1000)],
                                   [f"b{i}" for i in range(1000)])

    seqs = log(body)
    assert seqs == list(range(2, 1002))


def test_ids_and_events_must_pair_up(log):
    async def body(events):
        with pytest.raises(InvalidEvent, match="one id per event"):
            await events.append([net(1), net(2)], ["only-one"])
        with pytest.raises(InvalidEvent, match="event id 'bad id' is not valid"):
            await events.append([net(1)], ["bad id"])
        return await events.head()

    assert log(body) == 0, "nothing appended"
