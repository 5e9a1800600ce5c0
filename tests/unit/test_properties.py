"""Properties of the projections over generated histories (tests/unit/strategies.py).

The rules the log decides, checked after every event against their definitions
(not against the code that implements them): addresses, MACs, VNIs, the
overlay plan of each host; a rejected event changes nothing; the same log
gives the same state however it is delivered, after a restart, and in another
process with another hash seed.
"""

import ipaddress
import json
import os
import subprocess
import sys

from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from cantainer.projections.overlay import plan
from cantainer.projections.state import ClusterState
from cantainer.projections.view import record_from_json, record_json, replay, view
from tests.unit.strategies import histories, records

VNI_BASE = 4096  # the rule, written out: not imported from the code under test


def state(ov: ClusterState) -> dict:
    """Everything the projection derives, without its position in the log."""
    v = view(ov)
    del v["applied"], v["rejected"]
    return v


def lowest_free(cidr: str, used: set[str]) -> str | None:
    net = ipaddress.IPv4Network(cidr)
    gateway = net.network_address + 1
    return next((str(ip) for ip in net.hosts() if ip != gateway and str(ip) not in used), None)


def mac_by_definition(ip: str) -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


@given(histories())
@settings(max_examples=150)
def test_every_step_follows_the_rules_of_the_log(events):
    ov = ClusterState()
    vnis_given: set[int] = set()
    for rec in records(events):
        before = state(ov)
        ov.apply(rec)
        after = state(ov)
        if ov.verdict(rec.seq) is not None:
            assert after == before, f"rejected seq {rec.seq} ({rec.type}) changed the state"
            continue
        old_nets = {n["name"]: n for n in before["networks"]}
        new_nets = [n for n in after["networks"] if n["name"] not in old_nets]
        for net in new_nets:
            assert net["vni"] == VNI_BASE + len(vnis_given), "4096 + networks created before"
            assert net["vni"] not in vnis_given, "never reused"
            vnis_given.add(net["vni"])
        # One record may place several containers (a service's replicas, after those
        # that lost theirs are gone): each gets the lowest address free then, in order.
        old_ids = {c["id"] for c in before["containers"]}
        used = {(c["network"], c["ip"]) for c in after["containers"] if c["id"] in old_ids}
        for c in after["containers"]:
            if c["id"] in old_ids:
                continue
            net = next(n for n in after["networks"] if n["name"] == c["network"])
            mine = {ip for network, ip in used if network == c["network"]}
            assert c["ip"] == lowest_free(net["cidr"], mine), "the lowest free address"
            used.add((c["network"], c["ip"]))
            assert c["mac"] == mac_by_definition(c["ip"])
        check_invariants(ov, after)


def check_invariants(ov: ClusterState, st_: dict) -> None:
    live = {m["name"]: m for m in st_["members"] if m["state"] != "left"}
    containers = st_["containers"]
    assert len({c["id"][:12] for c in containers}) == len(containers), \
        "no two live containers share the digits that name their kernel objects"
    seen = set()
    nets = {n["name"]: n for n in st_["networks"]}
    for c in containers:
        assert ipaddress.IPv4Address(c["ip"]) in ipaddress.IPv4Network(nets[c["network"]]["cidr"])
        assert c["host"] in live, "no container outlives its host"
        assert (c["network"], c["ip"]) not in seen, "an address is given out once"
        seen.add((c["network"], c["ip"]))
    for a in nets.values():
        for b in nets.values():
            if a is not b:
                assert not ipaddress.IPv4Network(a["cidr"]).overlaps(
                    ipaddress.IPv4Network(b["cidr"])) and a["vni"] != b["vni"]
    # A service's replicas, by definition: each placed one a container named NAME.N on
    # an available host its constraints allow; the others pending, for a reason.
    available = {m["name"] for m in st_["members"] if m["state"] not in ("left", "down")}
    by_id = {c["id"]: c for c in containers}
    for svc in ov.services.services.values():
        assert set(svc.slots) | set(svc.pending) == set(range(1, svc.replicas + 1))
        assert not set(svc.slots) & set(svc.pending)
        for replica, cid in svc.slots.items():
            c = by_id[cid]
            assert c["name"] == f"{svc.name}.{replica}" and c["host"] in available
            for constraint in svc.spec.constraints:
                op, host = constraint.removeprefix("node.name")[:2], constraint[11:]
                assert (c["host"] == host) == (op == "==")
        allowed = [h for h in available if svc.allows(h)]
        for reason in svc.pending.values():
            assert bool(allowed) == ("member" not in reason), reason
    # The overlay plan of each host, by definition: a network where it has a container;
    # in it, each container of that network on another live host.
    for host in live:
        plans = plan(ov, host)
        mine = {c["network"] for c in containers if c["host"] == host}
        assert {nets[n]["vni"] for n in mine} == set(plans)
        for name in mine:
            p = plans[nets[name]["vni"]]
            remote = [c for c in containers if c["network"] == name and c["host"] != host]
            assert p.fdb == {c["mac"]: live[c["host"]]["address"] for c in remote}
            assert p.neigh == {c["ip"]: c["mac"] for c in remote}
    # Two hosts agree on each other's containers: what A holds for B's is B's own.
    for a in live:
        for b in live:
            shared = {c["network"] for c in containers if c["host"] == a} & \
                     {c["network"] for c in containers if c["host"] == b}
            for name in shared if a != b else ():
                vni = nets[name]["vni"]
                for c in containers:
                    if c["network"] == name and c["host"] == b:
                        assert plan(ov, a)[vni].fdb[c["mac"]] == live[b]["address"]
                        assert c["mac"] not in plan(ov, b)[vni].fdb, "not its own"


def test_the_histories_reach_busy_states():
    """The generator is worth its name: it reaches several live containers on one
    network, running and exited ones, and a full network (else the properties above
    test little)."""
    def busy(events) -> bool:
        ov = ClusterState()
        ov.apply_all(records(events))
        containers = state(ov)["containers"]
        states = {c["state"] for c in containers}
        crowded = max((sum(c["network"] == n for c in containers) for n in
                       {c["network"] for c in containers}), default=0)
        return crowded >= 3 and {"running", "exited"} <= states

    def full(events) -> bool:
        ov = ClusterState()
        ov.apply_all(records(events))
        return any("is full" in r for r in ov.ipam.rejected.values())

    def served(events) -> bool:
        ov = ClusterState()
        ov.apply_all(records(events))
        return any(len(s.slots) >= 2 for s in ov.services.services.values())

    for condition in (busy, full, served):
        find(histories(min_steps=30), condition,  # found, not shrunk: that would take long
             settings=settings(max_examples=500, database=None, phases=[Phase.generate]))


@given(histories(), st.data())
@settings(max_examples=150)
def test_the_same_log_gives_the_same_state_however_it_is_delivered(events, data):
    """At once; in batches with records delivered again (as a restarted tailer does);
    and by a projection stopped at any point and resumed from a position up to three
    records older (what replay ``--until`` shows at the stop)."""
    recs = records(events)
    whole = ClusterState()
    whole.apply_all(recs)

    batched, at = ClusterState(), 0
    while at < len(recs):
        start = data.draw(st.integers(max(0, at - 3), at))  # some again
        at = data.draw(st.integers(at + 1, len(recs)))
        batched.apply_all(recs[start:at])

    crash_at = data.draw(st.integers(0, len(recs)))
    resumed = ClusterState()
    resumed.apply_all(recs[:crash_at])
    assert view(resumed) == view(replay(recs, until=crash_at))
    resumed.apply_all(recs[data.draw(st.integers(max(0, crash_at - 3), crash_at)):])

    assert view(batched) == view(whole) == view(resumed)


@given(histories())
@settings(max_examples=100)
def test_replay_of_events_json_equals_the_live_projection(events):
    """``events --json`` then ``replay --file``: the same view as the projection that
    applied the records as the daemon does."""
    recs = records(events)
    live = ClusterState()
    live.apply_all(recs)
    lines = [json.loads(json.dumps(record_json(r))) for r in recs]
    assert view(replay(record_from_json(x) for x in lines)) == view(live)


@given(histories(min_steps=20))
@settings(max_examples=5)
def test_two_processes_with_other_hash_seeds_reach_the_same_state(events):
    dump = "\n".join(json.dumps(record_json(r)) for r in records(events)) + "\n"
    outputs = []
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed, CANTAINER_SOCKET="/nonexistent")
        result = subprocess.run([sys.executable, "-m", "cantainer.cli", "replay", "--json",
                                 "--file", "-"], input=dump, env=env, capture_output=True,
                                text=True, timeout=60, check=True)
        outputs.append(json.loads(result.stdout))
    assert outputs[0] == outputs[1]
    here = ClusterState()
    here.apply_all(records(events))
    assert outputs[0] == json.loads(json.dumps(view(here)))
