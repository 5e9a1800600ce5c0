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


def test_placement_stays_balanced_over_random_churn():
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
