"""The log's fan-out (daemon/fanout.py): who relays, what a relay keeps, and a follower
that never skips or repeats a record whatever its relay sends, falling back to the
next relay or the leader."""

import asyncio
import base64
import json
from collections import Counter
from types import SimpleNamespace

import pytest

from cantainer.daemon import fanout
from cantainer.daemon.fanout import Feed, Recent, ranked, relays
from cantainer.events import pack_rows
from cantainer.projections.membership import JOINED, SUSPECTED


ME = "fo"  # a follower: last on the ring of NAMES, so no relay at --relays 2
NAMES = (ME, "ra", "rb", "rc", "leader")


def row(seq: int) -> list:
    return [seq, f"id{seq}", "NetworkRemoved", 1, "h1", 1.0, b"\x81\xa4name\xa1x"]


def members(*names, suspected=()):
    return {n: SimpleNamespace(state=SUSPECTED if n in suspected else JOINED) for n in names}


# -- who relays ---------------------------------------------------------------------------

def test_relays_are_the_first_joined_members_on_the_ring_but_the_leader():
    nodes = members(*(f"h{i}" for i in range(16)), suspected={"h3"})
    chosen = relays(nodes, "h0", 3)
    assert len(chosen) == 3 and "h0" not in chosen and "h3" not in chosen
    assert relays(nodes, "h0", 3) == chosen, "every host derives the same"
    assert set(relays(nodes, chosen[0], 3)) - set(chosen) != set(), \
        "a relay that becomes leader is replaced"
    assert len(set(relays(nodes, chosen[0], 3)) & set(chosen)) == 2, "only it is"
    assert relays(nodes, "h0", 0) == []


def test_followers_spread_over_the_relays():
    counts = Counter(ranked(f"host{i}", ["r1", "r2", "r3"])[0] for i in range(600))
    assert set(counts) == {"r1", "r2", "r3"} and min(counts.values()) > 150, counts


# -- what a relay keeps -------------------------------------------------------------------

def test_recent_keeps_the_last_records_one_after_another():
    async def go():
        recent = Recent(keep=5)
        assert recent.after(0, 10) is None, "nothing kept: ask the database"
        recent.add(10, [row(11), row(12)])
        assert [r[0] for r in recent.after(10, 10)] == [11, 12]
        assert recent.after(12, 10) == [], "nothing newer yet"
        assert recent.after(9, 10) is None, "older than what is kept"
        recent.add(12, [row(s) for s in range(13, 18)])
        assert (recent.base, recent.last) == (12, 17), "the newest five"
        recent.add(20, [row(21)])  # not right after 17 (a crossing): kept anew
        assert (recent.base, recent.last) == (20, 21)
        waiting = asyncio.ensure_future(recent.added(5))
        await asyncio.sleep(0)
        recent.add(21, [row(22)])
        assert await waiting
        assert not await recent.added(0.01)
    asyncio.run(go())


# -- a follower ---------------------------------------------------------------------------

class Leader:
    """The leader's database, as the follower's session reads it."""

    def __init__(self, head: int) -> None:
        self.rows = [row(s) for s in range(1, head + 1)]
        self.reads = 0

    async def read_rows(self, after, limit, types=None):
        self.reads += 1
        return [r for r in self.rows if r[0] > after][:limit]


def line(after, seqs, fresh=0.1) -> bytes:
    msg = {"fresh": fresh}
    if seqs:
        msg |= {"after": after, "records": base64.b64encode(
            pack_rows([row(s) for s in seqs])).decode()}
    return json.dumps(msg).encode() + b"\n"


class Relays:
    """peers.connect for the follower: each relay's script, the lines it sends when
    asked for the records after a seq, then silence (``hang``) or the end."""

    def __init__(self, scripts: dict, hang: bool = True) -> None:
        self.scripts, self.hang, self.asked, self.readers = scripts, hang, [], {}

    async def connect(self, handle, host):
        self.asked.append(host)
        if host not in self.scripts:
            raise OSError("connection refused")
        reader = self.readers[host] = asyncio.StreamReader()

        def write(request: bytes) -> None:
            for item in self.scripts[host](json.loads(request)["after"]):
                reader.feed_data(item)
            if not self.hang:
                reader.feed_eof()
        return reader, SimpleNamespace(write=write, close=lambda: None)


def from_(head: int):
    """A relay that sends every record after the seq asked for, up to ``head``."""
    return lambda after: [line(after, [])] + [line(s, [s + 1]) for s in range(after, head)]


async def follow(feed: Feed, relays_: Relays, monkeypatch, *, applied=lambda: 0,
                 names=None):
    monkeypatch.setattr(fanout.peers, "connect", relays_.connect)
    handle = SimpleNamespace(state=SimpleNamespace(members=SimpleNamespace(
        nodes=members(*(names or NAMES)))))
    feed.start(handle, leader=lambda: "leader", applied=applied, wake=lambda: None)


async def drain(feed: Feed, after: int, until: int) -> list[int]:
    """What a tailer applies, reading the feed as the runner does."""
    seen = []
    for _ in range(200):
        rows = await feed.read_rows(after, 1000)
        assert not rows or rows[0][0] == after + 1
        seen += [r[0] for r in rows]
        after = rows[-1][0] if rows else after
        if after >= until:
            return seen
        await asyncio.sleep(0.01)
    return seen


def test_a_follower_reads_its_relay_not_the_leader(monkeypatch):
    async def go():
        leader = Leader(6)
        feed = Feed(leader, node=ME, count=2)
        order = ranked(ME, relays(members(*NAMES), "leader", 2))
        assert ME not in order
        await follow(feed, Relays({order[0]: lambda after: [line(0, [1, 2, 3]),
                                                            line(3, [4, 5, 6])]}),
                     monkeypatch)
        await asyncio.sleep(0.05)
        assert feed.source == order[0]
        assert await drain(feed, 0, 6) == [1, 2, 3, 4, 5, 6]
        assert leader.reads == 0, "the leader is not read"
        await feed.stop()
    asyncio.run(go())


@pytest.mark.parametrize("bad", ["skip", "repeat", "stale"])
def test_a_relay_that_skips_repeats_or_is_stale_is_dropped_for_the_next(bad, monkeypatch):
    async def go():
        leader = Leader(8)
        feed = Feed(leader, node=ME, count=2, stale_after=5.0)
        first, second = ranked(ME, relays(members(*NAMES), "leader", 2))
        wrong = {"skip": line(3, [5, 6]), "repeat": line(3, [3, 4]),
                 "stale": line(3, [4], fresh=60.0)}[bad]
        scripts = {first: lambda after: [line(0, [1, 2, 3]), wrong], second: from_(8)}
        relays_ = Relays(scripts)
        applied = {"seq": 0}
        await follow(feed, relays_, monkeypatch, applied=lambda: applied["seq"])
        await asyncio.sleep(0.05)  # the first relay's stream is taken
        seen = []
        while len(seen) < 8:  # a tailer: each record once, from whoever has it
            rows = await feed.read_rows(applied["seq"], 1000)
            assert not rows or rows[0][0] == applied["seq"] + 1
            seen += [r[0] for r in rows]
            applied["seq"] = seen[-1] if seen else 0
            await asyncio.sleep(0.01)
        assert seen == [1, 2, 3, 4, 5, 6, 7, 8], "nothing skipped, nothing twice"
        await asyncio.sleep(0.2)
        assert feed.switches == 1 and feed.source == second, (feed.switches, feed.source)
        assert relays_.asked[:2] == [first, second]
        await feed.stop()
    asyncio.run(go())


def test_with_no_relay_left_the_follower_reads_the_leader(monkeypatch):
    async def go():
        leader = Leader(5)
        feed = Feed(leader, node=ME, count=2)
        await follow(feed, Relays({}), monkeypatch)  # both refuse
        await asyncio.sleep(0.3)
        assert feed.source is None and feed.switches == 2
        assert await drain(feed, 0, 5) == [1, 2, 3, 4, 5]
        assert leader.reads >= 1
        await feed.stop()
    asyncio.run(go())


def test_a_relay_that_goes_silent_is_dropped(monkeypatch):
    async def go():
        feed = Feed(Leader(3), node=ME, count=1, stale_after=0.4)  # silent: 2 x 0.1 s
        only, = relays(members(*NAMES), "leader", 1)
        await follow(feed, Relays({only: lambda after: [line(0, [1])]}), monkeypatch)
        await asyncio.sleep(0.1)
        assert feed.source == only
        await asyncio.sleep(0.4)
        assert feed.source is None and feed.switches == 1
        assert await drain(feed, 1, 3) == [2, 3], "the leader from where it stopped"
        await feed.stop()
    asyncio.run(go())


def test_a_relay_that_says_gap_hands_the_follower_to_the_leader(monkeypatch):
    async def go():
        feed = Feed(Leader(2), node=ME, count=1)
        only, = relays(members(*NAMES), "leader", 1)
        await follow(feed, Relays({only: lambda after: [b'{"gap": true}\n']}), monkeypatch)
        await asyncio.sleep(0.1)
        assert feed.source is None and feed.switches == 1
        await feed.stop()
    asyncio.run(go())


def test_relays_and_the_leader_read_the_leader(monkeypatch):
    async def go():
        nodes = NAMES
        for me in ("leader", *relays(members(*nodes), "leader", 2)):
            feed = Feed(Leader(1), node=me, count=2)
            relays_ = Relays({})
            await follow(feed, relays_, monkeypatch, names=nodes)
            await asyncio.sleep(0.05)
            assert relays_.asked == [] and await drain(feed, 0, 1) == [1]
            await feed.stop()
    asyncio.run(go())


def test_records_this_host_applied_itself_are_not_given_again_when_streamed(monkeypatch):
    async def go():
        leader = Leader(8)
        feed = Feed(leader, node=ME, count=2)
        first = ranked(ME, relays(members(*NAMES), "leader", 2))[0]
        relays_ = Relays({first: lambda after: [line(0, [1, 2, 3])]})
        await follow(feed, relays_, monkeypatch)
        await asyncio.sleep(0.05)
        assert await drain(feed, 0, 3) == [1, 2, 3]
        # This host appended 4..6 and applied them (Runner.offer): the stream is behind.
        assert await feed.read_rows(6, 1000) == []
        relays_.readers[first].feed_data(line(3, [4, 5, 6, 7, 8]))
        await asyncio.sleep(0.05)
        assert [r[0] for r in await feed.read_rows(6, 1000)] == [7, 8]
        assert leader.reads == 0
        await feed.stop()
    asyncio.run(go())


def test_a_relay_line_stays_under_the_followers_line_limit():
    from cantainer.api import log as api_log
    from cantainer.daemon.peers import MAX_LINE

    big = [[s, f"id{s}", "NetworkRemoved", 1, "h1", 1.0, b"x" * 60_000] for s in range(1, 41)]
    sent = []

    class Relay:  # the handle's side of log_follow
        async def relay_rows(self, after, limit):
            return [r for r in big if r[0] > after][:limit]

        async def relayed(self, timeout):
            raise asyncio.CancelledError  # the test ends at the first keepalive

        def fresh(self):
            return 0.0

    class Exchange:
        async def send(self, msg):
            sent.append(json.dumps(msg))

    async def go():
        try:
            await api_log.log_follow(Relay(), {"after": 0, "every": 1.0}, Exchange())
        except asyncio.CancelledError:
            pass
    asyncio.run(go())
    assert len(sent) > 1 and all(len(line) < MAX_LINE for line in sent)
    assert [json.loads(line)["after"] for line in sent] == \
        [0] + [json.loads(line)["after"] for line in sent][1:], "one after the other"


def test_a_leadership_is_claimed_anew_each_time():
    from cantainer.daemon.daemon import Daemon

    appended = []
    members = SimpleNamespace(leader="b", is_live=lambda name: True)  # b leads, then a
    me = SimpleNamespace(raft=SimpleNamespace(is_leader=True), _claimed=None,
                         config=SimpleNamespace(name="a"),
                         runner=SimpleNamespace(state=SimpleNamespace(members=members,
                                                                      applied=10)),
                         _append_soon=lambda event, event_id: appended.append(event_id))
    Daemon._claim_leadership(me)
    Daemon._claim_leadership(me)  # not applied yet: the same id, appended once
    assert appended == ["LeaderElected-a-10", "LeaderElected-a-10"]
    members.leader = "a"
    Daemon._claim_leadership(me)  # recorded
    members.leader, me.runner.state.applied = "b", 20  # b led again meanwhile
    Daemon._claim_leadership(me)
    assert appended[-1] == "LeaderElected-a-20", "not the first leadership's id again"
    me.raft.is_leader = False
    Daemon._claim_leadership(me)
    assert len(appended) == 3, "no claim while not leading"
