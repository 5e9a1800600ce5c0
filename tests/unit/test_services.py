"""Services: placement derived from the log (projections/services.py). No root, no kernel."""

import os
import random
import subprocess
import sys
from collections import Counter

from cantainer import events as ev
from cantainer.projections.state import ClusterState

from tests.unit.test_projections import Log, created, joined


def cluster(*hosts):
    state = ClusterState()
    log = Log(state)
    joined(log, *hosts)
    log(ev.NetworkCreated(name="n", cidr="198.18.0.0/24"))
    return state, log


def placement(state, name="web"):
    s = state.services.services[name]
    return {r: state.ipam.containers[cid].host for r, cid in s.slots.items()}


def test_replicas_spread_and_are_containers_named_after_the_service():
    state, log = cluster("a", "b", "c")
    log(ev.ServiceCreated(name="web", network="n", replicas=6))
    hosts = placement(state)
    assert sorted(hosts) == [1, 2, 3, 4, 5, 6]
    assert Counter(hosts.values()) == {"a": 2, "b": 2, "c": 2}
    assert {f"web.{r}" for r in hosts} <= set(state.ipam.names)
    c = state.ipam.containers[state.ipam.names["web.1"]]
    assert c.created.restart == "always" and c.network == "n"


PLACE = """
from tests.unit.test_services import cluster, placement
from cantainer import events as ev
state, log = cluster("h1", "h2", "h3", "h4", "h5")
log(ev.ServiceCreated(name="api", network="n", replicas=9))
log(ev.NodeSuspected(name="h2"))
log(ev.NodeDown(name="h2"))
print(sorted(placement(state, "api").items()))
"""


def test_the_same_log_places_the_same_way_whatever_the_hash_seed():
    """Placement is a function of the log: two interpreters with different string
    hashes (set orders) derive the same."""
    out = [subprocess.run([sys.executable, "-c", PLACE], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
           for seed in ("1", "2")]
    assert out[0] == out[1] and "h2" not in out[0] and out[0].count("'h") == 9


def test_a_down_host_moves_its_replicas_and_nothing_moves_back():
    state, log = cluster("a", "b", "c")
    log(ev.ServiceCreated(name="web", network="n", replicas=3))
    before = placement(state)
    on_b = [r for r, h in before.items() if h == "b"]
    old_ids = {r: state.services.services["web"].slots[r] for r in on_b}
    log(ev.NodeSuspected(name="b"))
    assert placement(state) == before  # suspected only: nothing moves yet
    log(ev.NodeDown(name="b"))
    after = placement(state)
    assert "b" not in after.values() and len(after) == 3
    for r in on_b:  # a new container, the old one gone from the state
        assert state.services.services["web"].slots[r] != old_ids[r]
        assert old_ids[r] not in state.ipam.containers
    log(ev.NodeRecovered(name="b"))
    assert placement(state) == after


def test_a_host_that_leaves_gives_its_replicas_to_the_others():
    state, log = cluster("a", "b")
    log(ev.ServiceCreated(name="web", network="n", replicas=4))
    log(ev.NodeLeft(name="a"))
    assert set(placement(state).values()) == {"b"} and len(placement(state)) == 4


def test_scale_down_stops_the_highest_numbered_and_up_adds():
    state, log = cluster("a", "b", "c")
    log(ev.ServiceCreated(name="web", network="n", replicas=5))
    kept = {r: state.services.services["web"].slots[r] for r in (1, 2)}
    log(ev.ServiceScaled(name="web", replicas=2))
    assert sorted(placement(state)) == [1, 2]
    assert {r: state.services.services["web"].slots[r] for r in (1, 2)} == kept
    assert "web.3" not in state.ipam.names
    log(ev.ServiceScaled(name="web", replicas=4))
    assert sorted(placement(state)) == [1, 2, 3, 4]


def test_constraints_and_pending_replicas():
    state, log = cluster("a", "b", "c")
    log(ev.ServiceCreated(name="db", network="n", replicas=2,
                          constraints=["node.name==c"]))
    assert set(placement(state, "db").values()) == {"c"}
    log(ev.ServiceCreated(name="q", network="n", replicas=2,
                          constraints=["node.name!=a", "node.name!=b"]))
    log(ev.NodeSuspected(name="c"))
    log(ev.NodeDown(name="c"))
    q = state.services.services["q"]
    assert q.slots == {} and sorted(q.pending) == [1, 2]
    assert "constraints" in q.pending[1]
    log(ev.NodeRecovered(name="c"))
    assert set(placement(state, "q").values()) == {"c"} and q.pending == {}


def test_rm_removes_every_replica_and_frees_the_names():
    state, log = cluster("a", "b")
    log(ev.ServiceCreated(name="web", network="n", replicas=3, ports=["8080:80"]))
    log(ev.ServiceRemoved(name="web"))
    assert not [n for n in state.ipam.names if n.startswith("web")]
    assert state.ipam.mesh_ports == {} and state.ipam.networks["n"].containers == 0
    log(ev.ServiceCreated(name="web", network="n", replicas=1))
    assert len(placement(state)) == 1


def test_a_removed_replica_comes_back_as_a_new_container():
    state, log = cluster("a", "b")
    log(ev.ServiceCreated(name="web", network="n", replicas=2))
    cid = state.ipam.names["web.2"]
    log(ev.ContainerRemoved(container=cid))
    assert "web.2" in state.ipam.names and state.ipam.names["web.2"] != cid


def test_what_log_order_rejects_about_services():
    state, log = cluster("a", "b")
    log(created("a", "web", "a", "n"))
    assert "clashes with container 'web'" in state.verdict(
        log(ev.ServiceCreated(name="web", network="n")))
    log(created("b", "other", "a", "n", ports=["8080:80"]))
    assert "published on a by container 'other'" in state.verdict(
        log(ev.ServiceCreated(name="api", network="n", ports=["8080:80"])))
    assert "no network named 'x'" in state.verdict(
        log(ev.ServiceCreated(name="api", network="x")))
    assert "no member named 'zz'" in state.verdict(
        log(ev.ServiceCreated(name="api", network="n", constraints=["node.name==zz"])))
    log(ev.ServiceCreated(name="api", network="n", ports=["9090:80"]))
    assert "already exists" in state.verdict(log(ev.ServiceCreated(name="api", network="n")))
    assert "belongs to service 'api'" in state.verdict(log(created("c", "api.7", "a", "n")))
    assert "published by service 'api'" in state.verdict(
        log(created("d", "x", "a", "n", ports=["9090:80"])))
    assert "no service" in state.verdict(log(ev.ServiceScaled(name="nope", replicas=1)))
    assert "no service" in state.verdict(log(ev.ServiceRemoved(name="nope")))


def test_bad_service_fields_are_refused_when_made():
    import pytest

    from cantainer.errors import InvalidEvent
    for bad in ({"constraints": ["node.role==manager"]}, {"name": "a.b"},
                {"replicas": 1001}, {"replicas": -1}):
        with pytest.raises(InvalidEvent):
            ev.from_data("ServiceCreated", {"name": "web", "network": "n", **bad})


def test_over_random_churn_every_replica_is_placed_on_an_available_host():
    rng = random.Random(7)
    hosts = [f"h{i}" for i in range(6)]
    state, log = cluster(*hosts)
    log(ev.ServiceCreated(name="web", network="n", replicas=12))
    for _ in range(30):
        h = rng.choice(hosts)
        node = state.members.nodes[h]
        if node.down:
            log(ev.NodeRecovered(name=h))
        elif len(state.members.available()) > 2:
            log(ev.NodeSuspected(name=h))
            log(ev.NodeDown(name=h))
        placed = placement(state)
        assert len(placed) == 12
        assert not {h for h in placed.values()} - {n.name for n in state.members.available()}


def test_ports_the_cluster_uses_itself_and_internal_networks_are_refused():
    state, log = cluster("a", "b")
    for port, use in (("9000:80", "dqlite on"), ("9002:80", "the peer port of"),
                      ("9001:80/udp", "the heartbeats of"), ("4789:1/udp", "VXLAN"),
                      ("53:53/udp", "name server")):
        assert use in state.verdict(log(ev.ServiceCreated(name="p", network="n",
                                                          ports=[port])))
    log(ev.NetworkCreated(name="inner", cidr="198.18.9.0/24", internal=True))
    assert "internal" in state.verdict(log(ev.ServiceCreated(name="p", network="inner",
                                                             ports=["8080:80"])))
    assert state.verdict(log(ev.ServiceCreated(name="p", network="inner"))) is None


def test_the_leader_records_a_host_down_a_grace_period_after_suspecting_it():
    state, log = cluster("a", "b")
    m = state.members
    assert list(m.liveness_events({"a": 0, "b": 5}, 3, 2)) == [
        (ev.NodeSuspected(name="b"), f"NodeSuspected-b-{m.nodes['b'].since}")]
    log(ev.NodeSuspected(name="b"))
    assert list(m.liveness_events({"a": 0, "b": 4.9}, 3, 2)) == []
    [(event, event_id)] = m.liveness_events({"a": 0, "b": 5.1}, 3, 2)
    assert event == ev.NodeDown(name="b") and event_id.startswith("NodeDown-b-")
    log(event)
    assert m.nodes["b"].down and list(m.liveness_events({"a": 0, "b": 9}, 3, 2)) == []
    [(back, _)] = m.liveness_events({"a": 0, "b": 0.5}, 3, 2)
    assert back == ev.NodeRecovered(name="b")
    log(back)
    assert not m.nodes["b"].down and m.nodes["b"].state == "joined"
    assert "not suspected" in state.verdict(log(ev.NodeDown(name="a")))


def test_the_mesh_sends_a_port_to_local_replicas_else_to_hosts_that_have_one():
    from cantainer.actors.firewall import mesh

    state, log = cluster("a", "b", "c")
    log(ev.ServiceCreated(name="web", network="n", replicas=2, ports=["8080:80"],
                          constraints=["node.name!=c"]))
    s = state.services.services["web"]
    for cid in s.slots.values():
        log(ev.ContainerStarted(container=cid, pid=7))
    on = {state.ipam.containers[cid].host: str(state.ipam.containers[cid].ip)
          for cid in s.slots.values()}
    [local] = mesh(state, "a")
    assert (local.targets, local.port, local.remote) == ((on["a"],), 80, False)
    [remote] = mesh(state, "c")
    assert (remote.targets, remote.port, remote.remote) == (("192.0.2.1", "192.0.2.2"), 8080,
                                                            True)
    assert "ip saddr != @members" in remote.rule(), "a member's connection is not sent on"
    assert "numgen inc mod 2 map { 0 : 192.0.2.1, 1 : 192.0.2.2 }:8080" in remote.rule()
    assert "ip saddr" not in local.rule() and f"dnat ip to {on['a']}:80" in local.rule()
    assert remote.rule(locally=True).startswith("ip daddr != 127.0.0.0/8 fib daddr type local")
    log(ev.NodeSuspected(name="b"))  # a suspected host gets no new connection
    [remote] = mesh(state, "c")
    assert remote.targets == ("192.0.2.1",)


def test_a_service_name_resolves_to_its_replicas_on_its_network():
    from cantainer.daemon.dns import NameServer

    state, log = cluster("a", "b")
    log(ev.ServiceCreated(name="Web", network="n", replicas=3))
    server = NameServer("a", lambda: state)
    ips = {str(state.ipam.containers[cid].ip) for cid in state.services.services["Web"].slots.values()}
    assert set(server.lookup("n", "Web")) == ips and len(ips) == 3
    assert set(server.lookup("n", "web")) == ips, "DNS ignores case"
    assert server.lookup("n", "Web.2") == [str(state.ipam.containers[
        state.services.services["Web"].slots[2]].ip)]
    assert server.lookup("other", "Web") == []
    log(ev.ContainerExited(container=state.services.services["Web"].slots[1], exit_code=1))
    assert len(server.lookup("n", "Web")) == 2, "an exited replica does not answer"


def test_a_replica_waits_for_an_image_another_host_holds_not_for_its_own_record():
    from cantainer.projections.runtime import plan

    state, log = cluster("a", "b")
    digest = "ab" * 32
    log(ev.ImageStored(host="a", image="app:1", digest=digest, size=10, kind="image"))
    log(ev.ServiceCreated(name="s", network="n", replicas=2, image="app:1"))
    by_host = {state.ipam.containers[c].host: c for c in state.services.services["s"].slots.values()}
    assert plan(state, "b")[by_host["b"]].image_elsewhere, "b fetches it from a"
    assert not plan(state, "a")[by_host["a"]].image_elsewhere, "a's own record is no source"
    assert plan(state, "a")[by_host["a"]].service


def test_the_lease_is_renewed_only_while_the_log_answers(tmp_path):
    import time as time_

    from cantainer.daemon.lease import Lease

    last = [time_.monotonic()]
    lease = Lease(str(tmp_path), lambda: last[0], suspect_after=1.0)
    lease.start()
    try:
        assert oct(os.stat(lease.path).st_mode & 0o777) == "0o600"
        time_.sleep(0.5)
        last[0] = time_.monotonic()
        renewed = os.stat(lease.path).st_mtime
        assert time_.time() - renewed < 0.45 and not lease.cut_off()
        last[0] = time_.monotonic() - 10  # the log stopped answering
        time_.sleep(0.3)
        frozen = os.stat(lease.path).st_mtime
        assert lease.cut_off()
        time_.sleep(0.5)
        assert os.stat(lease.path).st_mtime == frozen, "no renewal while cut off"
    finally:
        lease.close()
