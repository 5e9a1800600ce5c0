"""Liveness that does not grow with the cluster: each host's heartbeats go to a fixed
number of watchers (ring successors and the leader), so every host is watched by the
same number and the leader hears everyone; a new leader gives the hosts time to learn
that it leads before it judges their silence."""

from collections import Counter

import pytest

from cantainer.daemon.heartbeat import LEADER_GRACE, WATCHERS, Suspicion, watched_by, watchers
from cantainer.events import NodeJoined, Recorded
from cantainer.projections.membership import Membership


def members(*names: str) -> Membership:
    """A membership of these hosts, joined in this order."""
    m = Membership()
    for seq, name in enumerate(names, 1):
        event = NodeJoined(name=name, address=f"192.0.2.{seq}",
                           dqlite_address=f"192.0.2.{seq}:9000")
        m.apply(Recorded(seq, f"id{seq}", "NodeJoined", 1, "t", 0.0, event))
    return m


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
    for me in names[:20]:
        assert watched_by(me, names) == {x for x in names if me in watchers(
            x, [y for y in names if y != x], None)}, "whom it hears, whoever leads"


def test_a_new_leader_waits_before_it_judges_a_silence_it_could_not_hear():
    names = [f"h{i}" for i in range(1, 9)]
    far = next(x for x in names[1:] if "h1" not in watchers(x, [y for y in names if y != x],
                                                            None))
    m = members(*names)
    now = [1000.0]
    judge = Suspicion("h1", suspect_after=3, clock=lambda: now[0])
    heard = {x: 1099.0 for x in names}
    assert judge.events(m, heard, is_leader=False) == []  # it saw them join; not leading
    now[0] = 1100.0
    del heard[far]
    heard = {x: now[0] for x in heard}
    assert judge.events(m, heard, is_leader=True) == [], "leading from now"
    now[0] = 1100.0 + LEADER_GRACE + 2.9
    heard = {x: now[0] for x in heard}
    assert judge.events(m, heard, is_leader=True) == [], f"{far} may not know who leads"
    now[0] = 1100.0 + LEADER_GRACE + 3.1
    heard = {x: now[0] for x in heard}
    assert [e.name for e, _ in judge.events(m, heard, is_leader=True)] == [far]


def test_a_host_the_new_leader_hears_is_judged_at_once():
    m = members("h1", "h2")
    now = [1100.0]
    judge = Suspicion("h1", suspect_after=3, clock=lambda: now[0])
    assert judge.events(m, {}, is_leader=True) == []
    now[0] = 1105.0
    assert [e.name for e, _ in judge.events(m, {"h2": 1101.0}, is_leader=True)] == ["h2"], \
        "heard since it leads: h2 knows it; silent 4 s"


def test_a_daemon_that_led_when_it_started_has_no_grace():
    m = members("h1", "h2")
    now = [1000.0]
    judge = Suspicion("h1", suspect_after=3, clock=lambda: now[0])
    judge.led_at_start = True
    assert judge.events(m, {}, is_leader=False) == []
    assert judge.led_at_start is False, "lost: a later leadership is a take-over"
    judge.led_at_start = True
    now[0] = 1005.0
    assert [e.name for e, _ in judge.events(m, {"h2": 1001.0}, is_leader=True)] == ["h2"]


def test_a_member_that_said_goodbye_is_not_online_for_raft_seats():
    """A stopping daemon hands its seat over after saying goodbye: the next leader must
    not give it back while its last heartbeat is still fresh (CI saw that race)."""
    import time
    from types import SimpleNamespace

    from cantainer.daemon.daemon import Daemon
    from cantainer.daemon.heartbeat import Heartbeats

    beats = Heartbeats("h1", lambda: [], lambda: 0, lambda: None, lambda name: None)
    now = time.monotonic()
    beats.last_heard.update(h1=now, h2=now, h3=now - 60)
    daemon = SimpleNamespace(heartbeats=beats,
                             runner=SimpleNamespace(state=SimpleNamespace(
                                 members=members("h1", "h2", "h3"))))
    assert Daemon._heard_recently(daemon) == {"192.0.2.1:9000", "192.0.2.2:9000"}
    beats.gone.add("h2")
    assert Daemon._heard_recently(daemon) == {"192.0.2.1:9000"}
