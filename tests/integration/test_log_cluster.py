"""Three (and four) daemons on separate addresses form one replicated log."""

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.integration.helpers import events, leader_host, status, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def submit(lab, n, *args, **kwargs):
    return lab.cli(n, "submit-event", *args, **kwargs)


def test_cluster_forms_and_every_host_reads_the_same_log(make_lab):
    lab = make_lab(3)
    lab.start_all()
    for n in (1, 2, 3):
        # Names come from this host's membership actor: eventually every NodeJoined.
        st = wait_for(lambda n=n: (s := status(lab, n)) and sorted(
            m["name"] for m in s["members"]) == ["h1", "h2", "h3"] and s)
        assert {m["role"] for m in st["members"]} == {"voter"}
        assert st["leader"] == status(lab, 1)["leader"]

    for i in range(12):  # interleave submitters
        submit(lab, i % 3 + 1, "NetworkCreated", f"name=net{i}", f"cidr=198.18.{i}.0/24")
    batch = "\n".join(json.dumps({"type": "NetworkCreated", "id": f"b-{i}",
                                  "data": {"name": f"b{i}",
                                           "cidr": f"198.19.{i // 16}.{i % 16 * 16}/28"}})
                      for i in range(1000))  # the largest batch: 24 INSERTs, one transaction
    seqs = [int(s) for s in submit(lab, 2, "--file", "-", input=batch).stdout.split()]
    assert seqs == list(range(seqs[0], seqs[0] + 1000)), "a batch is contiguous and in order"
    # 1000 events of ~15 KB: a 15 MB transaction, far past SQLite's default 2 MiB page
    # cache (libdqlite 1.11 breaks on a spill; every session sets a 64 MiB cache).
    heavy = "\n".join(json.dumps({"type": "ContainerCreated", "id": f"heavy-{i}",
                                  "data": {"container": f"{i:012x}", "name": f"heavy{i}",
                                           "host": "h1", "network": "no-such-net",
                                           "env": [f"PAD{j}={'x' * 3750}" for j in range(4)]}})
                      for i in range(1000))
    spilled = lab.cli(3, "submit-event", "--file", "-", input=heavy, check=False)
    assert spilled.returncode == 4 and "was appended but rejected: no network named" in \
        spilled.stderr, spilled.stderr
    landed = [e for e in events(lab, 1, "--type", "ContainerCreated")]
    assert [e["id"] for e in landed] == [f"heavy-{i}" for i in range(1000)]
    assert [e["seq"] for e in landed] == list(range(landed[0]["seq"], landed[0]["seq"] + 1000))
    over = lab.cli(2, "submit-event", "--file", "-", input=batch + "\n" + batch.replace(
        '"b-', '"c-').replace('"b', '"c'), check=False)
    assert over.returncode == 1 and "a batch holds at most 1000 events, got 2000" in over.stderr

    logs = [events(lab, n) for n in (1, 2, 3)]
    assert logs[0] == logs[1] == logs[2]
    assert [e["seq"] for e in logs[0]] == list(range(1, len(logs[0]) + 1)), "gap-free"
    membership = [e["type"] for e in logs[0] if e["type"] != "LeaderElected"]
    assert membership[:4] == ["ClusterCreated"] + ["NodeJoined"] * 3
    assert logs[0][0]["data"] == {"default_network": "198.19.128.0/18",
                                  "checkpoint_every": 10000}, "the lab's, and the default"
    assert {e["data"]["name"] for e in logs[0] if e["type"] == "LeaderElected"} == \
        {next(m["name"] for m in status(lab, 1)["members"] if m["leader"])}, \
        "the leader recorded itself"
    created = [e["data"]["name"] for e in logs[0] if e["type"] == "NetworkCreated"]
    assert created == [f"net{i}" for i in range(12)] + [f"b{i}" for i in range(1000)]
    assert {e["node"] for e in logs[0] if e["type"] == "NetworkCreated"} == {"h1", "h2", "h3"}

    since = logs[0][5]["seq"]
    only = events(lab, 3, "--type", "NetworkCreated", "--since", str(since))
    assert [e["seq"] for e in only] == [e["seq"] for e in logs[0]
                                        if e["type"] == "NetworkCreated" and e["seq"] > since]


def test_retried_submit_with_the_same_id_appends_once(make_lab):
    lab = make_lab(3)
    lab.start_all()
    first = submit(lab, 1, "NetworkCreated", "name=n1", "cidr=198.18.0.0/24", "--id", "retry-1")
    head = status(lab, 1)["head"]
    again = submit(lab, 3, "NetworkCreated", "name=n1", "cidr=198.18.0.0/24", "--id", "retry-1")
    assert first.stdout == again.stdout
    assert status(lab, 2)["head"] == head
    assert [e["id"] for e in events(lab, 2)].count("retry-1") == 1

    batch = "\n".join(json.dumps({"type": "NetworkCreated", "id": f"b-{i}",
                                  "data": {"name": f"r{i}", "cidr": f"198.19.{i}.0/24"}})
                      for i in range(5))
    once = submit(lab, 2, "--file", "-", input=batch).stdout
    twice = submit(lab, 1, "--file", "-", input=batch).stdout
    assert once == twice
    assert status(lab, 3)["head"] == head + 5


def test_follow_prints_new_events_and_socket_is_private(make_lab):
    lab = make_lab(3)
    lab.start_all()
    mode = os.stat(lab.host(1).socket)
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 0
    head = status(lab, 1)["head"]
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(3).socket)
    follower = subprocess.Popen([sys.executable, "-m", "cantainer.cli", "events", "--follow",
                                 "--json", "--since", str(head)], env=env,
                                stdout=subprocess.PIPE, text=True)
    try:
        submit(lab, 1, "NetworkCreated", "name=f1", "cidr=198.19.1.0/24", "--id", "follow-1")
        assert json.loads(readline_within(follower, 10))["id"] == "follow-1"
        submit(lab, 2, "NetworkCreated", "name=f2", "cidr=198.19.2.0/24", "--id", "follow-2")
        assert json.loads(readline_within(follower, 10))["id"] == "follow-2"
    finally:
        follower.kill()
        follower.wait()


def readline_within(proc, timeout: float) -> str:
    """The next line of ``proc``'s stdout; fails (rather than hangs) after ``timeout``."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line within {timeout}s"
    return proc.stdout.readline()


def test_bad_input_appends_nothing(make_lab):
    lab = make_lab(3)
    lab.start_all()
    head = status(lab, 1)["head"]
    big = json.dumps({"container": "a" * 64, "name": "c", "host": "h1", "network": "n",
                      "command": ["x" * 4000] * 20})
    cases = [
        (("Teleported", "name=x"), "unknown event type 'Teleported'"),
        (("NetworkCreated", "name=x"), "needs field 'cidr'"),
        (("NetworkCreated", "name=x", "cidr=198.18.0.7/24"), "host bits set"),
        (("NodeLeft", "--data", "{nope"), "--data is not valid JSON"),
        (("ContainerCreated", "--data", big), "the limit is 65536"),
        (("NodeLeft", "name=x", "--id", "bad id!"), "event id 'bad id!' is not valid"),
    ]
    for args, message in cases:
        result = submit(lab, 2, *args, check=False)
        assert result.returncode == 1, args
        assert message in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    # A batch with one bad event is refused whole.
    batch = (json.dumps({"type": "NodeLeft", "data": {"name": "h3"}, "id": "ok-1"}) + "\n"
             + json.dumps({"type": "NodeLeft", "data": {"name": ""}, "id": "bad-2"}))
    result = submit(lab, 1, "--file", "-", input=batch, check=False)
    assert result.returncode == 1 and "event 2:" in result.stderr
    assert status(lab, 3)["head"] == head
    assert lab.host(2).running, "the daemon stays up"


def test_leader_killed_then_survivors_append_and_it_catches_up(make_lab):
    lab = make_lab(3)
    lab.start_all()
    submit(lab, 1, "NetworkCreated", "name=before", "cidr=198.18.0.0/24")
    dead = leader_host(lab, 1)
    survivors = [n for n in (1, 2, 3) if n != dead]
    survivor = survivors[0]
    lab.kill(dead)
    started = time.monotonic()
    submit(lab, survivor, "NetworkCreated", "name=after", "cidr=198.18.1.0/24")
    failover = time.monotonic() - started
    print(f"new leader took an append {failover:.2f}s after SIGKILL of the old one")
    assert failover < 5.0, "a 900 ms election timeout: fail-over in 1-2 s, not Raft's 5 s"
    for i in range(6):
        submit(lab, survivors[i % 2], "NetworkCreated", f"name=s{i}", f"cidr=198.19.{i}.0/24")
    assert leader_host(lab, survivor) != dead

    lab.start(dead)
    reference = events(lab, survivor)
    wait_for(lambda: events(lab, dead) == reference)
    st = status(lab, dead)
    assert len(st["members"]) == 3 and st["head"] == reference[-1]["seq"]
    names = [e["data"].get("name") for e in reference if e["type"] == "NodeJoined"]
    assert sorted(names) == ["h1", "h2", "h3"], "a restarted node rejoins as itself, no second NodeJoined"


def test_roles_standbys_hand_over_and_replacement(make_lab):
    lab = make_lab(4)
    lab.start_all()

    def roles(n):
        """Raft role by host number (a host that left has no name in the log)."""
        number = {h.dqlite_address: h.number for h in lab.hosts}
        return {number[m["address"]]: m["role"] for m in status(lab, n)["members"]}

    wait_for(lambda: sorted(roles(1).values()) == ["standby", "voter", "voter", "voter"])

    # A graceful stop of the leader hands leadership and its seat over.
    old = leader_host(lab, 1)
    standby = next(n for n, role in roles(1).items() if role == "standby")
    assert lab.stop(old, signal.SIGTERM) == 0
    assert "handed leadership to node" in lab.log(old), "handed over, not lost to an election"
    other = next(h.number for h in lab.hosts if h.number != old)
    assert leader_host(lab, other) != old
    after = roles(other)
    assert after[old] == "spare" and after[standby] == "voter"
    submit(lab, other, "NetworkCreated", "name=after-stop", "cidr=198.19.0.0/24")

    # SIGKILL of a voter: the leader gives its seat to the online spare (the restarted node).
    lab.start(old)
    wait_for(lambda: roles(other)[old] == "standby")
    leader = leader_host(lab, other)
    victim = next(h.number for h in lab.hosts if h.number not in (leader, old))
    lab.kill(victim)
    wait_for(lambda: roles(leader)[old] == "voter" and roles(leader)[victim] == "spare")
    submit(lab, leader, "NetworkCreated", "name=after-kill", "cidr=198.19.1.0/24")


def test_one_daemon_per_data_directory(make_lab):
    lab = make_lab(1)
    lab.start(1)
    h = lab.host(1)
    lab.hosts[0] = type(h)(lab, 1, h.address)  # a second handle on the same host and dirs
    second = lab.start(1, wait=False)
    assert second.proc.wait(30) == 1
    assert "another cantainerd is using the data directory" in lab.log(1)
    lab.hosts[0] = h


def test_without_quorum_appends_fail_clearly_and_a_retry_lands_once(make_lab):
    lab = make_lab(3, daemon_args=("--suspect-after", "300"))
    lab.start_all()
    head = status(lab, 1)["head"]
    lab.kill(2)
    lab.kill(3)
    started = time.monotonic()
    # An event no daemon reacts to: a NodeSuspected here would be answered by the
    # leader's own NodeRecovered once h2's heartbeats come back.
    fields = ("name=no-quorum", "cidr=198.19.7.0/24")
    result = submit(lab, 1, "NetworkCreated", *fields, "--id", "no-quorum", check=False)
    waited = time.monotonic() - started
    assert result.returncode == 5, "unavailable: retry"
    assert "no dqlite leader answered within 10s" in result.stderr
    assert "retry with --id no-quorum" in result.stderr
    assert result.stderr.count("\n") == 1
    assert 9 <= waited < 15, "the 10 s the message names, then one line: no hang"
    lab.start(2)
    lab.start(3)
    # Raft may commit the timed-out entry once the quorum is back; the retry
    # with the same id must then return it rather than append a second copy.
    wait_for(lambda: submit(lab, 1, "NetworkCreated", *fields, "--id", "no-quorum",
                            check=False).returncode == 0, timeout=60, interval=1)
    logged = events(lab, 3)
    assert [e["id"] for e in logged[head:]] == ["no-quorum"]
