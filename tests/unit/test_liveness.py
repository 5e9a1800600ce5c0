"""Liveness that does not grow with the cluster: each host's heartbeats go to a fixed
number of watchers (ring successors and the leader), so every host is watched by the
same number and the leader hears everyone; a new leader gives the hosts time to learn
that it leads before it judges their silence."""

from collections import Counter

import pytest

from cantainer.daemon.heartbeat import LEADER_GRACE, WATCHERS, Suspicion, watchers
from cantainer.events import NodeJoined, Recorded
from cantainer.projections.membership import Membership


@pytest.mark.parametrize("n", [2, 4, 8, 16, 1000])
def test_each_host_sends_to_a_fixed_number_and_is_watched_as_often(n):
    names = [f"h{i}" for i in range(1, n + 1)]
    sent = {me: watchers(me, [x for x in names if x != me], leader="h1") for me in names}
    assert all(len(set(to)) == len(to) and me not in to for me, to in sent.items())
    assert max(len(to) for to in sent.values()) <= WATCHERS + 1, "flat: not N - 1"
    watched = Counter(x for to in sent.values() for x in to)
    assert watched["h1"] == n - 1, "the leader hears every host"
    assert all(watched[x] >= min(WATCHERS, n - 1) for x in names if x != "h1"), \
        "every host is watched by as many as there are watchers"


def test_a_new_leader_waits_before_it_judges_a_silence():
    m = Membership()
    for seq, name in enumerate(("h1", "h2"), 1):
        event = NodeJoined(name=name, address=f"192.0.2.{seq}",
                           dqlite_address=f"192.0.2.{seq}:9000")
        m.apply(Recorded(seq, f"id{seq}", "NodeJoined", 1, "t", 0.0, event))
    now = [1000.0]
    judge = Suspicion("h1", suspect_after=3, clock=lambda: now[0])
    assert judge.events(m, {}, is_leader=False) == []  # it saw h2 join; not leading
    now[0] = 1100.0
    assert judge.events(m, {}, is_leader=True) == [], "leading from now: h2 may not know"
    now[0] = 1100.0 + LEADER_GRACE + 2.9
    assert judge.events(m, {}, is_leader=True) == []
    now[0] = 1100.0 + LEADER_GRACE + 3.1
    assert [e.name for e, _ in judge.events(m, {}, is_leader=True)] == ["h2"]
