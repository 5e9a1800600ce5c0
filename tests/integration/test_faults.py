"""Faults injected into a running lab, in the style of dqlite's Jepsen tests.

Each test prints one ``FIGURES`` line (what was acknowledged, lost, how long
recovery took); docs/RELIABILITY.md collects them.  Drift (hand-deleted kernel
state) is tests/integration/test_drift.py.
"""

import json
import os
import subprocess
import threading
import time

import pytest

from cantainer.errors import CantainerError
from tests.integration.helpers import events, inspect, leader_host, ps, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"


def kernel_matches_log(lab, n) -> bool:
    """``replay --check``: this host's kernel is what the log derives."""
    return lab.cli(n, "replay", "--check", check=False).returncode == 0


def figures(name: str, **values) -> None:
    print(f"FIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def fdb_destinations(lab, n, vni=4096) -> dict[str, list[str]]:
    """MAC -> every remote underlay address the host's VXLAN device holds for it."""
    out = subprocess.run(["ip", "netns", "exec", lab.host(n).netns, "bridge", "-j", "fdb",
                          "show", "dev", f"ctvx{vni}"], capture_output=True, text=True,
                         check=True).stdout
    found: dict[str, list[str]] = {}
    for entry in json.loads(out or "[]"):
        if entry.get("dst"):
            found.setdefault(entry["mac"], []).append(entry["dst"])
    return found


class Client(threading.Thread):
    """Appends events one at a time through the API, as a careful client would:
    on any error it retries the *same* event id, on the next host, until the
    append is acknowledged.  Records every acknowledgement (id, seq, when acknowledged,
    when first sent).

    Most events create a /28 network (no two conflict); every ``CONTAINER_EVERY``th
    starts a container on the next host, so every host's kernel follows the load."""

    CONTAINER_EVERY = 40
    EVENTS = 400  # at most, per client: ~150 of all three's are needed on each side of the kill

    def __init__(self, lab, number: int, stop: threading.Event) -> None:
        super().__init__(name=f"client{number}")
        self.lab, self.number, self.stop = lab, number, stop
        self.acked: list[tuple[str, int, float, float]] = []
        self.errors: list[str] = []

    def event(self, i: int) -> dict:
        eid = f"c{self.number}-{i}"
        if i % self.CONTAINER_EVERY == 0:
            host = (i // self.CONTAINER_EVERY + self.number) % len(self.lab.hosts) + 1
            return {"type": "ContainerCreated", "id": eid,
                    "data": {"container": f"{0xc0 + self.number:02x}{i:010x}",
                             "name": f"load{self.number}-{i}", "host": f"h{host}",
                             "network": NET, "command": ["sleep", "600"]}}
        block = self.number * self.EVENTS + i
        return {"type": "NetworkCreated", "id": eid,
                "data": {"name": f"c{self.number}n{i}",
                         "cidr": f"198.19.{block // 16}.{block % 16 * 16}/28"}}

    def run(self) -> None:
        hosts = [h.number for h in self.lab.hosts]
        target = self.number % len(hosts)
        for i in range(self.EVENTS):  # one /28 each, in 198.19.0.0/17 (the labs' default
            # network is 198.19.128.0/18)
            event, sent = self.event(i), time.monotonic()
            while not self.stop.is_set():
                try:
                    reply = self.lab.call(hosts[target], {"op": "submit", "events": [event]})
                except (CantainerError, OSError, ValueError) as exc:
                    self.errors.append(str(exc))
                    target = (target + 1) % len(hosts)
                    time.sleep(0.05)
                    continue
                self.acked.append((event["id"], reply["seqs"][0], time.monotonic(), sent))
                break
            if self.stop.is_set():
                return
            time.sleep(0.01)


def test_leader_killed_under_load_loses_nothing(make_lab):
    lab = make_lab(3)
    lab.start_all()
    lab.wait_formed()
    stop = threading.Event()
    clients = [Client(lab, c, stop) for c in range(3)]
    for c in clients:
        c.start()
    try:
        wait_for(lambda: sum(len(c.acked) for c in clients) >= 150, timeout=30)
        dead = leader_host(lab, 1)
        killed_at = time.monotonic()
        lab.kill(dead)
        wait_for(lambda: any(t > killed_at + 1 for c in clients for _, _, t, _ in c.acked),
                 timeout=30)
        lab.start(dead)
        restarted = sum(len(c.acked) for c in clients)
        wait_for(lambda: sum(len(c.acked) for c in clients) >= restarted + 150, timeout=30)
    finally:
        stop.set()
        for c in clients:
            c.join(60)
    assert not any(c.is_alive() for c in clients), "the load has stopped before the checks"
    errors = [e for c in clients for e in c.errors]
    # Only an outage may fail an append (and be retried): the killed host's socket, no
    # leader yet; never a rejection or an internal error.
    unexpected = [e for e in errors if not any(why in e for why in (
        "no cantainerd answers", "no dqlite leader answered", "Connection reset",
        "closed the connection"))]
    assert not unexpected, unexpected[:3]

    acked = [a for c in clients for a in c.acked]
    reference = events(lab, 1)
    for n in (2, 3):
        wait_for(lambda n=n: events(lab, n) == reference, timeout=30)
    # The log's schema keeps an id once; what a retry must not do is land one event
    # twice under some other id, so count the payloads (each client's are distinct).
    payloads = [(e["type"], json.dumps(e["data"], sort_keys=True)) for e in reference
                if e["type"] in ("NetworkCreated", "ContainerCreated")]
    duplicated = len(payloads) - len(set(payloads))
    assert duplicated == 0, "no event twice"
    assert [e["seq"] for e in reference] == list(range(1, len(reference) + 1)), "gap-free"
    seq_of = {e["id"]: e["seq"] for e in reference}
    lost = [eid for eid, _, _, _ in acked if eid not in seq_of]
    moved = [eid for eid, seq, _, _ in acked if seq_of.get(eid, seq) != seq]
    assert not lost and not moved, (lost[:5], moved[:5])
    for c in clients:
        seqs = [seq for _, seq, _, _ in c.acked]
        assert seqs == sorted(seqs), "each client's events in the order it sent them"
    started = [e for e in reference if e["type"] == "ContainerCreated"]
    assert {e["data"]["host"] for e in started} == {"h1", "h2", "h3"}, "kernel state everywhere"
    for n in (1, 2, 3):
        wait_for(lambda n=n: kernel_matches_log(lab, n), timeout=60, interval=0.5)
    after_kill = sorted(t for _, _, t, sent in acked if sent > killed_at)
    figures("leader-killed", acknowledged=len(acked), lost=len(lost), duplicated=duplicated,
            moved=len(moved), containers=len(started),
            client_errors=len(errors),
            first_ack_of_an_append_sent_after_kill_s=f"{after_kill[0] - killed_at:.2f}")


@pytest.mark.parametrize("which", ["leader", "follower"])
def test_partition_minority_fails_clearly_majority_goes_on_then_heals(make_lab, which):
    lab = make_lab(3)
    lab.start_all()
    lab.wait_formed()
    leader = leader_host(lab, 1)
    cut = leader if which == "leader" else leader % 3 + 1
    a, b = [n for n in (1, 2, 3) if n != cut]
    lab.cli(cut, "run", "-d", "-n", NET, "--name", "cut-off", "busybox", "sleep", "600")
    lab.cli(a, "run", "-d", "-n", NET, "--name", "main", "busybox", "sleep", "600")
    pid = inspect(lab, a, "cut-off")["pid"]

    lab.cut(cut)
    cut_at = time.monotonic()
    side: dict = {}

    def minority_append() -> None:
        side["result"] = lab.cli(cut, "network", "create", "--name", "lonely",
                                 "198.18.5.0/24", check=False)
        side["s"] = time.monotonic() - cut_at

    both = threading.Thread(target=minority_append)
    both.start()  # at the same time as the majority's
    wait_for(lambda: lab.cli(a, "network", "create", "--name", "during", "198.18.6.0/24",
                             check=False).returncode == 0, timeout=30, interval=0.2)
    majority_s = time.monotonic() - cut_at
    both.join(60)
    minority, minority_s = side["result"], side["s"]
    assert minority.returncode == 5 and "no dqlite leader answered" in minority.stderr
    assert minority.stderr.count("\n") == 1 and minority_s < 30, minority_s
    lab.cli(b, "run", "-d", "-n", NET, "--name", "newcomer", "busybox", "sleep", "600")
    assert os.path.exists(f"/proc/{pid}"), "the minority's container keeps running"

    lab.heal(cut)
    healed_at = time.monotonic()
    wait_for(lambda: events(lab, cut) == events(lab, a), timeout=60, interval=0.5)
    caught_up_s = time.monotonic() - healed_at
    wait_for(lambda: kernel_matches_log(lab, cut), timeout=60, interval=0.5)
    converged_s = time.monotonic() - healed_at
    newcomer = ps(lab, cut)["newcomer"]["ip"]
    reach = lab.cli(cut, "exec", "cut-off", "ping", "-c", "1", "-W", "2", newcomer,
                    check=False)
    assert reach.returncode == 0, reach
    # The minority's timed-out append was ambiguous (its request may sit in a TCP
    # send queue until the link heals): at most once, as the error told the user.
    names = [e["data"].get("name") for e in events(lab, a) if e["type"] == "NetworkCreated"]
    assert names.count("lonely") <= 1 and names.count("during") == 1
    figures(f"partition of the {which}", minority_error_s=f"{minority_s:.1f}",
            majority_append_s=f"{majority_s:.1f}", caught_up_s=f"{caught_up_s:.1f}",
            converged_s=f"{converged_s:.1f}", minority_event_landed_later=names.count("lonely"))


def test_daemon_crash_keeps_containers_reachable_and_adopts_them_once(make_lab):
    lab = make_lab(3)
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "kept", "busybox", "sleep", "600")
    lab.cli(2, "run", "-d", "-n", NET, "--name", "prober", "busybox", "sleep", "600")
    kept = inspect(lab, 2, "kept")
    before = kernel_objects(lab, 1, kept["id"])
    lab.kill(1)
    pings = [lab.cli(2, "exec", "prober", "ping", "-c", "1", "-W", "1", kept["ip"],
                     check=False).returncode == 0 for _ in range(3)]  # while h1's is down
    assert all(pings), pings
    killed_at = time.monotonic()
    lab.start(1)
    assert inspect(lab, 1, "kept")["pid"] == kept["pid"], "adopted: the same process"
    adopted_s = time.monotonic() - killed_at
    for n in (1, 2, 3):  # every actor has applied the head and compared it with the kernel
        wait_for(lambda n=n: kernel_matches_log(lab, n))
    # Counted by what they say, not by event id (ids make a repeat impossible by design).
    reports = [(e["type"], e["data"]["container"]) for e in events(lab, 3)
               if e["type"] in ("ContainerCreated", "ContainerStarted")]
    duplicates = len(reports) - len(set(reports))
    assert duplicates == 0 and len(reports) == 4, reports
    assert kernel_objects(lab, 1, kept["id"]) == before, "its veth and namespace, not new ones"
    fdb = fdb_destinations(lab, 2)  # h3 runs no container: it has no VXLAN device
    assert fdb[kept["mac"]] == [lab.host(1).address], "one FDB entry, not two"
    shims = shims_of(lab, 1, kept["id"])
    assert len(shims) == 1, shims
    assert parent_of(kept["pid"]) == shims[0], "the one shim is the container's parent"
    figures("daemon-crash", pings_while_down=f"{sum(pings)}/{len(pings)}",
            restart_to_adopted_s=f"{adopted_s:.1f}",
            duplicate_events=duplicates, shims=len(shims))


def kernel_objects(lab, n, cid) -> tuple:
    """(the index of its veth, the inode of its network namespace), and how many
    container veths host n has."""
    import socket

    from cantainer.kernel import container_net, names, netns

    def look():
        return socket.if_nametoindex(names.veth(cid)), len(container_net.veths())

    index, veths = netns.run_in(lab.host(n).netns, look)
    return index, os.stat(f"/run/netns/{names.netns(cid)}").st_ino, veths


def shims_of(lab, n, cid) -> list[int]:
    """Pids of the shims supervising container ``cid`` of host n: a shim's stdout is
    its container's ``shim.log``."""
    log = os.path.join(lab.host(n).data_dir, "containers", cid, "shim.log")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"cantainer.kernel.shim" in f.read() and os.readlink(f"/proc/{pid}/fd/1") == log:
                    found.append(int(pid))
        except OSError:
            continue  # gone meanwhile
    return found


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("PPid:"))


def test_host_lost_for_good_is_suspected_then_evicted(make_lab):
    lab = make_lab(3, daemon_args=("--suspect-after", "3"))
    lab.start_all()
    lab.wait_formed()
    lab.cli(3, "run", "-d", "-n", NET, "--name", "doomed", "busybox", "sleep", "600")
    lab.cli(1, "run", "-d", "-n", NET, "--name", "stays", "busybox", "sleep", "600")
    lab.cli(2, "run", "-d", "-n", NET, "--name", "also", "busybox", "sleep", "600")
    doomed = inspect(lab, 1, "doomed")
    for n in (1, 2):
        assert doomed["mac"] in fdb_destinations(lab, n)

    lab.kill(3)  # the host dies: its daemon, its containers, its link
    lab._kill_containers(lab.host(3))
    lab.cut(3)
    lost_at = time.monotonic()
    wait_for(lambda: any(e["type"] == "NodeSuspected" and e["data"]["name"] == "h3"
                         for e in events(lab, 1)), timeout=30, interval=0.5)
    suspected_s = time.monotonic() - lost_at
    # Its last heartbeat came at most a second before the loss: not suspected early.
    assert suspected_s >= 3 - 1.5, suspected_s
    lab.cli(2, "run", "-d", "-n", NET, "--name", "later", "busybox", "sleep", "600")
    later = ps(lab, 1)["later"]["ip"]
    assert lab.cli(1, "exec", "stays", "ping", "-c", "1", "-W", "2", later,
                   check=False).returncode == 0, "the others keep working"

    evicted = lab.cli(1, "node", "rm", "h3", check=False)
    assert evicted.returncode == 0, evicted.stderr
    evicted_at = time.monotonic()
    for n in (1, 2):
        wait_for(lambda n=n: doomed["mac"] not in fdb_destinations(lab, n), timeout=20)
        wait_for(lambda n=n: kernel_matches_log(lab, n), timeout=20)
    removed_s = time.monotonic() - evicted_at
    assert "doomed" not in ps(lab, 2), "its containers are gone from the cluster"
    states = {m["name"]: m["state"] for m in json.loads(lab.cli(1, "nodes", "--json").stdout)}
    assert states["h3"] == "left"
    lab.cli(2, "run", "-d", "-n", NET, "--name", "heir", "busybox", "sleep", "600")
    assert ps(lab, 1)["heir"]["ip"] == doomed["ip"], "its address is free again"
    figures("host-lost", suspected_after_s=f"{suspected_s:.1f}",
            entries_removed_after_rm_s=f"{removed_s:.1f}")
