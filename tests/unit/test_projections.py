"""The pure projections: membership, IPAM, overlay plans. No root, no kernel."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cantainer import events as ev
from cantainer.projections.ipam import VNI_BASE, AddressPool, mac_of
from cantainer.projections.membership import Membership
from cantainer.projections.overlay import plan
from cantainer.projections.state import ClusterState
from cantainer.errors import Invalid
from cantainer.projections.view import record_from_json, records_from_json_lines, replay, view


class Log:
    """Builds records in seq order for a projection."""

    def __init__(self, *projections):
        self.projections = projections
        self.seq = 0

    def __call__(self, event):
        self.seq += 1
        rec = ev.Recorded(self.seq, f"id{self.seq}", event.type_name(), event.VERSION, "t",
                          0.0, event)
        for p in self.projections:
            p.apply(rec)
        return self.seq


def joined(log, *names):
    for i, name in enumerate(names, 1):
        log(ev.NodeJoined(name=name, address=f"192.0.2.{i}", dqlite_address=f"192.0.2.{i}:9000"))


def created(cid, name, host, network, **kw):
    return ev.ContainerCreated(container=cid * 12, name=name, host=host, network=network, **kw)


# -- membership ---------------------------------------------------------------------------

def test_membership_states_and_verdicts():
    m = Membership()
    log = Log(m)
    joined(log, "a", "b")
    assert {n: x.state for n, x in m.nodes.items()} == {"a": "joined", "b": "joined"}
    dup = log(ev.NodeJoined(name="a", address="192.0.2.9", dqlite_address="192.0.2.9:9000"))
    assert "taken" in m.verdict(dup)
    same_addr = log(ev.NodeJoined(name="c", address="192.0.2.1", dqlite_address="192.0.2.1:9000"))
    assert "belongs to member 'a'" in m.verdict(same_addr)
    log(ev.NodeSuspected(name="b"))
    assert m.nodes["b"].state == "suspected"
    log(ev.NodeRecovered(name="b"))
    assert m.nodes["b"].state == "joined"
    log(ev.NodeLeft(name="b"))
    assert "b" not in m.live()
    assert "no member" in m.verdict(log(ev.NodeLeft(name="b")))
    rejoin = log(ev.NodeJoined(name="b", address="192.0.2.2", dqlite_address="192.0.2.2:9000"))
    assert m.verdict(rejoin) is None and m.nodes["b"].state == "joined"


def test_the_log_names_the_leader_a_member_only():
    m = Membership()
    log = Log(m)
    joined(log, "a", "b")
    assert m.leader is None
    log(ev.LeaderElected(name="b"))
    assert m.leader == "b"
    assert "no member" in m.verdict(log(ev.LeaderElected(name="zz")))
    assert m.leader == "b", "a refused record changes nothing"


def test_liveness_events_have_ids_from_state_seq():
    m = Membership()
    log = Log(m)
    joined(log, "a", "b")
    out = list(m.liveness_events({"a": 0.5, "b": 30.0}, threshold=10))
    assert out == [(ev.NodeSuspected(name="b"), "NodeSuspected-b-2")]
    log(ev.NodeSuspected(name="b"))
    assert list(m.liveness_events({"a": 0.5, "b": 30.0}, threshold=10)) == []
    assert list(m.liveness_events({"a": 0.5, "b": 1.0}, threshold=10)) == [
        (ev.NodeRecovered(name="b"), "NodeRecovered-b-3")]


def test_records_at_or_below_the_position_are_ignored():
    m = Membership()
    join = ev.NodeJoined(name="a", address="192.0.2.1", dqlite_address="192.0.2.1:9000")
    m.apply(ev.Recorded(5, "x", "NodeJoined", 1, "t", 0.0, join))
    m.apply(ev.Recorded(5, "x", "NodeJoined", 1, "t", 0.0, join))  # delivered again
    assert m.applied == 5 and not m.rejected, "not applied twice (a second join is refused)"
    m.apply(ev.Recorded(4, "y", "NodeLeft", 1, "t", 0.0, ev.NodeLeft(name="a")))
    assert m.applied == 5 and m.nodes["a"].state == "joined", "an older record changes nothing"


def test_unknown_events_are_skipped():
    m = Membership()
    m.apply(ev.Recorded(1, "x", "Teleported", 9, "t", 0.0, ev.UnknownEvent("Teleported", 9, "?")))
    assert m.applied == 1 and not m.rejected and not m.nodes


# -- IPAM ---------------------------------------------------------------------------------

def test_allocation_skips_network_gateway_and_broadcast():
    pool = AddressPool(ipaddress.IPv4Network("198.18.0.0/29"))
    got = []
    while (ip := pool.allocate()) is not None:
        got.append(str(ip))
    assert got == ["198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5", "198.18.0.6"]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=200))
def test_pool_always_gives_the_lowest_free_address(steps):
    """Against the definition: a linear scan for the lowest address not in use."""
    cidr = ipaddress.IPv4Network("198.18.0.0/26")
    hosts = [ipaddress.IPv4Address(int(cidr.network_address) + i) for i in range(2, 63)]
    pool, used = AddressPool(cidr), set()
    for take, n in steps:
        if take or not used:
            expected = next((ip for ip in hosts if ip not in used), None)
            assert pool.allocate() == expected
            if expected is not None:
                used.add(expected)
        else:
            ip = sorted(used)[n % len(used)]
            used.remove(ip)
            pool.release(ip)


def test_mac_is_0242_plus_the_address():
    assert mac_of(ipaddress.IPv4Address("198.18.1.2")) == "02:42:c6:12:01:02"


def test_vni_addresses_and_freeing_follow_log_order():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1", "h2")
    log(ev.NetworkCreated(name="blue", cidr="198.18.0.0/24"))
    log(ev.NetworkCreated(name="green", cidr="198.18.1.0/24"))
    assert [n.vni for n in ipam.networks.values()] == [VNI_BASE, VNI_BASE + 1]
    log(created("a", "c1", "h1", "blue"))
    log(created("b", "c2", "h2", "blue"))
    log(created("c", "c3", "h2", "198.18.1.0/24"))  # by CIDR: the existing network
    ips = {c.name: (str(c.ip), c.network) for c in ipam.containers.values()}
    assert ips == {"c1": ("198.18.0.2", "blue"), "c2": ("198.18.0.3", "blue"),
                   "c3": ("198.18.1.2", "green")}
    log(ev.ContainerRemoved(container="a" * 12))
    log(created("d", "c4", "h1", "blue"))
    assert str(ipam.containers["d" * 12].ip) == "198.18.0.2", "the freed address is reused"
    log(ev.NodeLeft(name="h2"))
    assert [c.name for c in ipam.containers.values()] == ["c4"], "NodeLeft frees h2's addresses"
    log(ev.NetworkRemoved(name="green"))
    log(ev.NetworkCreated(name="red", cidr="198.18.2.0/24"))
    assert ipam.networks["red"].vni == VNI_BASE + 2, "VNIs are never reused"


def test_stop_requests_keep_the_shortest_timeout_and_mark_a_stop_until_the_next_start():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1")
    log(created("a", "c1", "h1", "198.18.0.0/24"))
    assert ipam.containers["a" * 12].stop_timeout is None
    log(ev.ContainerStopRequested(container="a" * 12, timeout=30))
    log(ev.ContainerStopRequested(container="a" * 12, timeout=2))
    log(ev.ContainerStopRequested(container="a" * 12, timeout=10))
    assert ipam.containers["a" * 12].stop_timeout == 2
    log(ev.ContainerExited(container="a" * 12, exit_code=143))
    assert ipam.containers["a" * 12].stop_timeout == 2, "stopped on purpose: no restart"
    log(ev.ContainerStartRequested(container="a" * 12))
    c = ipam.containers["a" * 12]
    assert (c.state, c.stop_timeout, c.run, c.restarts) == ("created", None, 1, 0)
    log(ev.ContainerExited(container="a" * 12, exit_code=1))
    assert ipam.containers["a" * 12].stop_timeout is None, "an exit of its own"
    log(ev.ContainerStopRequested(container="a" * 12, timeout=1))
    assert ipam.containers["a" * 12].stop_timeout == 1, "a stop while it waits to restart"
    missing = log(ev.ContainerStopRequested(container="e" * 12))
    assert "no container" in ipam.verdict(missing)


def test_a_name_is_free_again_once_its_container_is_removed():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1", "h2")
    log(created("a", "web", "h2", "198.18.0.0/24"))
    log(ev.ContainerRemoved(container="a" * 12))
    assert ipam.verdict(log(created("b", "web", "h1", "198.18.0.0/24"))) is None
    again = ev.ContainerCreated(container="a" * 64, name="web2", host="h2", network="198.18.0.0/24")
    assert ipam.verdict(log(again)) is None, "a removed container's short id is free again"
    log(ev.NodeLeft(name="h1"))
    assert ipam.verdict(log(created("c", "web", "h2", "198.18.0.0/24"))) is None, \
        "NodeLeft frees its containers' names too"
    assert ipam.networks["198.18.0.0-24"].containers == 2  # "web2" and "web" on h2


def test_unknown_cidr_creates_the_network_implicitly():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1")
    seq = log(created("a", "c1", "h1", "198.18.4.0/24"))
    assert ipam.verdict(seq) is None
    assert ipam.networks["198.18.4.0-24"].vni == VNI_BASE
    bad = log(created("b", "c2", "h1", "198.18.4.0/23"))
    assert "overlaps network '198.18.4.0-24'" in ipam.verdict(bad)


def test_conflicts_are_settled_by_log_order():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1")
    log(ev.NetworkCreated(name="blue", cidr="198.18.0.0/24"))
    cases = [
        (ev.NetworkCreated(name="blue", cidr="198.18.9.0/24"), "already exists"),
        (ev.NetworkCreated(name="wide", cidr="198.18.0.0/16"), "overlaps network 'blue'"),
        (ev.NetworkRemoved(name="nope"), "no network named 'nope'"),
        (created("f", "x", "nohost", "blue"), "host 'nohost' is not a member"),
        (created("f", "x", "h1", "nonet"), "no network named 'nonet'"),
        (ev.ContainerStarted(container="e" * 12, pid=5), "no container"),
        (ev.ContainerExited(container="e" * 12, exit_code=1), "no container"),
        (ev.ContainerRemoved(container="e" * 12), "no container"),
    ]
    for event, reason in cases:
        assert reason in ipam.verdict(log(event)), event
    log(created("a", "web", "h1", "blue"))
    assert "name 'web' is already in use" in ipam.verdict(log(created("b", "web", "h1", "blue")))
    assert "already exists" in ipam.verdict(log(created("a", "web2", "h1", "blue")))
    same_prefix = ev.ContainerCreated(container="a" * 12 + "b" * 52, name="web3", host="h1",
                                      network="blue")
    assert f"same first 12 digits as container {'a' * 12}" in ipam.verdict(log(same_prefix))
    assert "still has containers: web" in ipam.verdict(log(ev.NetworkRemoved(name="blue")))


def test_a_full_subnet_rejects_the_next_container():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1")
    log(ev.NetworkCreated(name="tiny", cidr="198.18.0.0/29"))  # 5 usable addresses
    for i in range(5):
        assert ipam.verdict(log(created(f"{i}", f"c{i}", "h1", "tiny"))) is None
    assert "is full" in ipam.verdict(log(created("9", "c9", "h1", "tiny")))


def test_runs_again_after_an_exit_only_and_reports_of_ended_runs_are_rejected():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1")
    log(created("a", "c1", "h1", "198.18.0.0/24", restart="on-failure:2"))
    early = log(ev.ContainerStartRequested(container="a" * 12, policy=True))
    assert "only an exited one starts again" in ipam.verdict(early)
    log(ev.ContainerStarted(container="a" * 12, pid=10))
    log(ev.ContainerExited(container="a" * 12, exit_code=3))
    late = log(ev.ContainerStarted(container="a" * 12, pid=10))
    assert "is exited, not starting" in ipam.verdict(late), "an ended run's report"
    log(ev.ContainerStartRequested(container="a" * 12, policy=True))
    twice = log(ev.ContainerStartRequested(container="a" * 12))
    assert ipam.verdict(twice) is not None, "one start a run: the second one is rejected"
    c = ipam.containers["a" * 12]
    assert (c.state, c.run, c.restarts, c.exit_code, c.pid) == ("created", 1, 1, None, None)
    log(ev.ContainerStarted(container="a" * 12, pid=11))
    assert (c.state, c.pid) == ("running", 11)


def test_container_lifecycle_states():
    state = ClusterState()
    ipam = state.ipam
    log = Log(state)
    joined(log, "h1")
    log(created("a", "c1", "h1", "198.18.0.0/24"))
    log(ev.ContainerStarted(container="a" * 12, pid=42))
    assert (ipam.containers["a" * 12].state, ipam.containers["a" * 12].pid) == ("running", 42)
    log(ev.ContainerExited(container="a" * 12, exit_code=137))
    c = ipam.containers["a" * 12]
    assert (c.state, c.exit_code, c.pid) == ("exited", 137, None)


# -- overlay plans --------------------------------------------------------------------------

def test_overlay_plan_per_host():
    state = ClusterState()
    log = Log(state)
    joined(log, "h1", "h2", "h3")
    log(created("a", "c1", "h1", "198.18.0.0/24"))
    log(created("b", "c2", "h2", "198.18.0.0/24"))
    log(created("c", "c3", "h3", "198.18.1.0/24"))
    p1 = plan(state, "h1")
    assert list(p1) == [VNI_BASE]
    assert p1[VNI_BASE].fdb == {"02:42:c6:12:00:03": "192.0.2.2"}
    assert p1[VNI_BASE].neigh == {"198.18.0.3": "02:42:c6:12:00:03"}
    assert p1[VNI_BASE].bridge == f"ctbr{VNI_BASE}" and p1[VNI_BASE].vxlan == f"ctvx{VNI_BASE}"
    assert plan(state, "h2")[VNI_BASE].fdb == {"02:42:c6:12:00:02": "192.0.2.1"}
    assert list(plan(state, "h3")) == [VNI_BASE + 1] and plan(state, "h3")[VNI_BASE + 1].fdb == {}
    log(ev.NodeLeft(name="h2"))
    assert plan(state, "h1")[VNI_BASE].fdb == {}, "entries go when the host leaves"
    assert plan(state, "h2") == {}
    log(ev.ContainerRemoved(container="a" * 12))
    assert plan(state, "h1") == {}, "the network goes with the last local container"


def test_replay_from_json_records_applies_and_skips():
    """Records as ``events --json`` prints them (tests/unit/test_properties.py compares
    such a replay with the live projection over generated histories)."""
    lines = [
        {"seq": 1, "id": "a", "type": "NodeJoined", "version": 1, "node": "h1", "time": 0.0,
         "data": {"name": "h1", "address": "192.0.2.1", "dqlite_address": "192.0.2.1:9000"}},
        {"seq": 2, "id": "b", "type": "ContainerCreated", "version": 1, "node": "h1",
         "time": 0.0, "data": {"container": "a" * 12, "name": "c1", "host": "h1",
                               "network": "198.18.0.0/24", "image": "busybox",
                               "command": ["/bin/sh"], "env": [], "hostname": None,
                               "memory": None, "pids_limit": None, "cpus": None}},
        {"seq": 3, "id": "c", "type": "FromTheFuture", "version": 7, "node": "h9", "time": 0.0,
         "data": {"x": 1}},
        {"seq": 4, "id": "d", "type": "NetworkCreated", "version": 1, "node": "h1", "time": 0.0,
         "data": {"name": "n", "cidr": "198.18.0.0/16"}},
    ]
    records = [record_from_json(x) for x in lines]
    v = view(replay(records))
    assert v["applied"] == 4
    assert [c["ip"] for c in v["containers"]] == ["198.18.0.2"]
    assert v["rejected"] == [{"seq": 4, "reason": "198.18.0.0/16 overlaps network "
                                                  "'198.18.0.0-24' (198.18.0.0/24)"}]
    assert view(replay(records, until=1))["containers"] == []


def test_json_lines_are_read_in_chunks_and_a_bad_line_is_named():
    import json

    def line(seq):
        return json.dumps({"seq": seq, "id": f"e{seq}", "type": "NetworkCreated", "version": 1,
                           "node": "h1", "time": 0.0,
                           "data": {"name": f"n{seq}", "cidr": f"198.18.{seq % 250}.0/24"}})
    lines = [line(seq) for seq in range(1, 9001)]  # three chunks of 4 096 or fewer
    data = ("\n\n".join(lines) + "\n").encode()  # blank lines between are no records
    assert [r.seq for r in records_from_json_lines(data)] == list(range(1, 9001))
    two = lines[:5000] + [lines[5000] + "," + line(9999)] + lines[5001:]
    with pytest.raises(Invalid, match="line 5001: Extra data"):
        records_from_json_lines("\n".join(two).encode())
    cut = lines[:7000] + [lines[7000][:-1]] + lines[7001:]
    with pytest.raises(Invalid, match="line 7001: Expecting"):
        records_from_json_lines("\n".join(cut).encode())


# -- the default network ------------------------------------------------------------------

def test_the_default_network_is_made_at_its_first_use_with_the_clusters_cidr():
    s = ClusterState()
    log = Log(s)
    joined(log, "h1", "h2")
    early = log(created("a", "early", "h1", "default"))
    assert s.verdict(early) == "no network named 'default'", "no ClusterCreated yet"
    log(ev.ClusterCreated(default_network="198.19.128.0/18"))
    again = log(ev.ClusterCreated(default_network="198.19.0.0/18"))
    assert s.verdict(again) == "the cluster was created already"
    log(ev.NetworkCreated(name="blue", cidr="198.18.0.0/24"))
    for name, cidr, reason in [
            ("default", "198.18.9.0/24", "the network 'default' is the cluster's"),
            ("wide", "198.19.0.0/16", "overlaps the default network's 198.19.128.0/18")]:
        assert reason in s.verdict(log(ev.NetworkCreated(name=name, cidr=cidr)))
    assert list(s.ipam.networks) == ["blue"], "made at the first use, not before"
    first = log(created("b", "web", "h1", "default"))
    second = log(created("c", "db", "h2", "default"))
    assert s.verdict(first) is None and s.verdict(second) is None
    net = s.ipam.networks["default"]
    assert (str(net.cidr), net.vni) == ("198.19.128.0/18", VNI_BASE + 1), "after blue"
    assert [str(c.ip) for c in s.ipam.containers.values()] == ["198.19.128.2", "198.19.128.3"]
    assert "overlaps network 'default'" in s.verdict(
        log(ev.NetworkCreated(name="wide", cidr="198.19.0.0/16")))
    assert view(s)["default_network"] == "198.19.128.0/18"


def test_a_log_from_before_cluster_created_keeps_its_own_network_named_default():
    s = ClusterState()
    log = Log(s)
    joined(log, "h1")
    made = log(ev.NetworkCreated(name="default", cidr="198.18.5.0/24"))
    ran = log(created("a", "web", "h1", "default"))
    assert s.verdict(made) is None and s.verdict(ran) is None
    assert str(s.ipam.containers["a" * 12].ip) == "198.18.5.2"


def test_the_log_records_the_clusters_checkpoint_interval_once():
    from cantainer.projections.state import ClusterState

    state = ClusterState()

    def record(seq, event):
        state.apply(ev.Recorded(seq, f"id{seq}", type(event).type_name(), event.VERSION,
                                "h1", 0.0, event))

    assert state.checkpoint_every is None, "a cluster from before it was recorded"
    record(1, ev.ClusterCreated(default_network="198.18.0.0/16", checkpoint_every=500))
    assert state.checkpoint_every == 500
    record(2, ev.ClusterCreated(default_network="198.18.0.0/16", checkpoint_every=900))
    assert state.checkpoint_every == 500, "a second ClusterCreated is refused"
    with pytest.raises(Exception, match="checkpoint_every"):
        ev.ClusterCreated(default_network="198.18.0.0/16", checkpoint_every=50)
