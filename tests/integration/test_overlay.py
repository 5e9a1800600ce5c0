"""Events in the log become VXLAN overlays on every host of a three-host lab."""

import json
import os
import subprocess
import sys
import time

import pytest

from cantainer.projections.ipam import VNI_BASE
from cantainer.kernel import netns
from cantainer.kernel.overlay import OverlayKernel

from tests.integration.helpers import wait_for
from tests.integration.test_faults import fdb_destinations

pytestmark = [pytest.mark.root, pytest.mark.slow]

VNI = VNI_BASE
NET = "198.18.0.0/24"
IDS = {"c1": "c1" * 6, "c2": "c2" * 6, "c3": "c3" * 6}
MACS = {"c1": "02:42:c6:12:00:02", "c2": "02:42:c6:12:00:03", "c3": "02:42:c6:12:00:04"}
IPS = {"c1": "198.18.0.2", "c2": "198.18.0.3", "c3": "198.18.0.4"}


def kernel(lab, n):
    """The overlay devices and entries in host n's namespace, as the kernel has them."""
    h = lab.host(n)

    def read():
        return dict(OverlayKernel(h.address).actual())

    return netns.run_in(h.netns, read)


def entries(lab, n):
    """{vni: (fdb, neigh)} on host n."""
    return {vni: (net.fdb, net.neigh) for vni, net in kernel(lab, n).items()}


def create(lab, on, name, host):
    lab.cli(on, "submit-event", "ContainerCreated", f"container={IDS[name]}", f"name={name}",
            f"host={host}", f"network={NET}")


def expect(lab, wanted):
    """Wait until every host's overlay entries equal ``wanted[host]``."""
    for n, want in wanted.items():
        try:
            wait_for(lambda n=n, want=want: entries(lab, n) == want, interval=0.05)
        except AssertionError:
            raise AssertionError(f"h{n} has {entries(lab, n)}, wanted {want}") from None


def test_overlay_follows_the_log_on_every_host(make_lab):
    lab = make_lab(3)
    lab.start_all()
    h = {n: lab.host(n).address for n in (1, 2, 3)}
    create(lab, 1, "c1", "h1")
    create(lab, 3, "c2", "h2")
    expect(lab, {
        1: {VNI: ({MACS["c2"]: h[2]}, {IPS["c2"]: MACS["c2"]})},
        2: {VNI: ({MACS["c1"]: h[1]}, {IPS["c1"]: MACS["c1"]})},
        3: {},
    })
    vx = kernel(lab, 1)[VNI].vxlan
    assert (vx["vni"], vx["learning"], vx["proxy"], vx["mtu"], vx["local"]) == \
        (VNI, 0, 1, 1450, h[1])
    assert vx["master"] == kernel(lab, 1)[VNI].bridge["index"] and vx["up"]

    create(lab, 2, "c3", "h3")
    expect(lab, {
        1: {VNI: ({MACS["c2"]: h[2], MACS["c3"]: h[3]},
                  {IPS["c2"]: MACS["c2"], IPS["c3"]: MACS["c3"]})},
        3: {VNI: ({MACS["c1"]: h[1], MACS["c2"]: h[2]},
                  {IPS["c1"]: MACS["c1"], IPS["c2"]: MACS["c2"]})},
    })

    # replay --check agrees with the kernel on every host; replay shows the same plan.
    for n in (1, 2, 3):
        check = lab.cli(n, "replay", "--check", check=False)
        assert check.returncode == 0 and check.stdout == "", check.stdout
    plan = json.loads(lab.cli(2, "replay", "--node", "h1", "--json").stdout)["hosts"]["h1"]
    assert plan[0]["fdb"] == {MACS["c2"]: h[2], MACS["c3"]: h[3]}

    # A hand-deleted FDB entry and neighbour entry come back.
    def delete_entries():
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=f"ctvx{VNI}")[0]
            ipr.fdb("del", ifindex=index, lladdr=MACS["c2"], dst=h[2])
            ipr.neigh("del", ifindex=index, dst=IPS["c3"], lladdr=MACS["c3"])
    mark = lab.log_size(1)
    netns.run_in(lab.host(1).netns, delete_entries)
    started = time.monotonic()
    expect(lab, {1: {VNI: ({MACS["c2"]: h[2], MACS["c3"]: h[3]},
                           {IPS["c2"]: MACS["c2"], IPS["c3"]: MACS["c3"]})}})
    print(f"hand-deleted entries restored in {time.monotonic() - started:.2f}s")
    # Put back by the daemon (rtnetlink told it at once), not by anything else.
    wait_for(lambda: f"add fdb {MACS['c2']} dst {h[2]}" in lab.log(1, since=mark))

    # ContainerRemoved: its entries go everywhere, and h2 loses the network.
    lab.cli(1, "submit-event", "ContainerRemoved", f"container={IDS['c2']}")
    expect(lab, {
        1: {VNI: ({MACS["c3"]: h[3]}, {IPS["c3"]: MACS["c3"]})},
        2: {},
        3: {VNI: ({MACS["c1"]: h[1]}, {IPS["c1"]: MACS["c1"]})},
    })

    # A daemon restarted after SIGKILL reconciles to the same state, creating nothing twice.
    before = kernel(lab, 1)
    destinations = fdb_destinations(lab, 1)
    lab.kill(1)
    logged = lab.log_size(1)  # what the restarted daemon logs comes after this
    lab.start(1)
    lab.cli(1, "submit-event", "NetworkCreated", "name=poke", "cidr=198.19.0.0/24")
    # --check waits until the restarted actors have applied the head; their first look
    # after a start is a full comparison with the kernel.
    wait_for(lambda: lab.cli(1, "replay", "--check", check=False).returncode == 0)
    after = kernel(lab, 1)
    assert after.keys() == before.keys()
    assert after[VNI].vxlan["index"] == before[VNI].vxlan["index"], "device not recreated"
    assert after[VNI].bridge["index"] == before[VNI].bridge["index"]
    assert (after[VNI].fdb, after[VNI].neigh) == (before[VNI].fdb, before[VNI].neigh)
    assert fdb_destinations(lab, 1) == destinations, "one destination per MAC, as before"
    assert "overlay: add" not in lab.log(1, since=logged), "the restart added nothing"

    # NodeLeft of a host (an operator's eviction) removes its containers' entries everywhere.
    lab.cli(2, "submit-event", "NodeLeft", "name=h3")
    expect(lab, {1: {VNI: ({}, {})}})
    for n in (1, 2):
        assert lab.cli(n, "replay", "--check", check=False).returncode == 0
    # The evicted host's certificate is revoked: it reaches the log no more (were it the
    # Raft leader, the others refusing it take that from it within an election timeout).
    wait_for(lambda: lab.cli(3, "replay", "--check", check=False).returncode == 5,
             timeout=30, interval=1)


def test_network_commands_report_verdicts(make_lab):
    lab = make_lab(3)
    lab.start_all()
    assert lab.cli(1, "network", "create", "198.18.0.0/24", "--name", "blue").stdout == "blue\n"
    assert lab.cli(2, "network", "create", "198.18.1.0/24").stdout == "198.18.1.0-24\n"
    for args, code, message in [  # 4: log order rejected it; 1: invalid input
        (("198.18.2.0/24", "--name", "blue"), 4, "network 'blue' already exists"),
        (("198.18.0.128/25",), 4, "overlaps network 'blue'"),
        (("198.18.0.1/24",), 1, "host bits set"),
        (("not-a-cidr",), 1, "is not a CIDR"),
    ]:
        result = lab.cli(3, "network", "create", *args, check=False)
        assert result.returncode == code and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    listed = json.loads(lab.cli(3, "network", "ls", "--json").stdout)
    assert [(n["name"], n["cidr"], n["vni"]) for n in listed] == [
        ("blue", "198.18.0.0/24", VNI), ("198.18.1.0-24", "198.18.1.0/24", VNI + 1)]
    lab.cli(1, "submit-event", "ContainerCreated", "container=" + "a" * 12, "name=web",
            "host=h2", "network=blue")
    # h2's runtime starts it (a shell with no input: it ends at once); let the log settle.
    wait_for(lambda: json.loads(lab.cli(3, "inspect", "web").stdout)["state"] == "exited")
    busy = lab.cli(2, "network", "rm", "blue", check=False)
    assert busy.returncode == 4 and "still has containers: web" in busy.stderr
    dup = lab.cli(1, "submit-event", "ContainerCreated", "container=" + "b" * 12, "name=web",
                  "host=h1", "network=blue", check=False)
    assert dup.returncode == 4 and "container name 'web' is already in use" in dup.stderr
    assert lab.cli(2, "network", "rm", "198.18.1.0-24").returncode == 0
    missing = lab.cli(2, "network", "rm", "nope", check=False)
    assert missing.returncode == 3 and "no network named 'nope'" in missing.stderr

    # replay from a file written by 'events --json' equals replay from the daemon.
    dump = lab.cli(3, "events", "--json").stdout
    from_file = lab.cli(3, "replay", "--json", "--file", "-", input=dump).stdout
    assert json.loads(from_file) == json.loads(lab.cli(3, "replay", "--json").stdout)
    # ... and from 'events --msgpack': the records as the log stores them.
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(3).socket)
    cli = [sys.executable, "-m", "cantainer.cli"]
    stream = subprocess.run([*cli, "events", "--msgpack"], env=env, capture_output=True,
                            check=True, timeout=30).stdout
    assert not stream.startswith(b"{")
    from_stream = subprocess.run([*cli, "replay", "--json", "--file", "-"], input=stream,
                                 env=env, capture_output=True, check=True, timeout=30).stdout
    assert json.loads(from_stream) == json.loads(from_file)
    # ClusterCreated, NodeJoined and LeaderElected, then blue
    blue = next(json.loads(line)["seq"] for line in dump.splitlines()
                if json.loads(line)["type"] == "NetworkCreated")
    early = json.loads(lab.cli(3, "replay", "--json", "--file", "-", "--until", str(blue),
                               input=dump).stdout)
    assert early["applied"] == blue and [n["name"] for n in early["networks"]] == ["blue"]

    nodes = json.loads(lab.cli(1, "nodes", "--json").stdout)
    assert [(n["name"], n["state"], n["role"]) for n in nodes] == [
        ("h1", "joined", "voter"), ("h2", "joined", "voter"), ("h3", "joined", "voter")]
    st = json.loads(lab.cli(1, "status", "--json").stdout)
    wait_for(lambda: all(m["applied"] == st["head"] for m in json.loads(
        lab.cli(1, "status", "--json").stdout)["members"]))


def test_silent_host_is_suspected_then_recovered(make_lab):
    lab = make_lab(3, daemon_args=("--suspect-after", "2"))
    lab.start_all()

    def state_of_h3():
        return {n["name"]: n["state"] for n in
                json.loads(lab.cli(1, "nodes", "--json").stdout)}.get("h3")

    wait_for(lambda: state_of_h3() == "joined")
    lab.kill(3)

    wait_for(lambda: state_of_h3() == "suspected", timeout=30)
    lab.start(3)
    wait_for(lambda: state_of_h3() == "joined", timeout=30)
    kinds = [json.loads(line)["type"]
             for line in lab.cli(2, "events", "--json").stdout.splitlines()]
    assert kinds.count("NodeSuspected") == 1 and kinds.count("NodeRecovered") == 1


def test_a_poke_brings_an_event_at_once_whatever_the_idle_poll(make_lab):
    """With a 30 s idle poll, another host's append still arrives within a moment: the
    appending daemon pokes its peers (heartbeat port) and they read the log at once."""
    lab = make_lab(2, daemon_args=("--idle-poll", "30"))
    lab.start_all()
    delays = []
    for i in range(3):
        # Quiet for 5.5 s: h2's tailer now waits more than 5 s between reads, so an
        # event read within half a second was not found by polling (odds < 1 in 10).
        time.sleep(5.5)
        seq = int(lab.cli(1, "submit-event", "NetworkCreated", f"name=p{i}",
                          f"cidr=198.19.{i}.0/24").stdout)
        sent = time.monotonic()
        wait_for(lambda: lab.call(2, {"op": "status"})["status"]["applied"] >= seq,
                 timeout=40, interval=0.01)
        delays.append(time.monotonic() - sent)
    print("poked arrivals: " + ", ".join(f"{d * 1000:.0f} ms" for d in delays))
    assert max(delays) < 0.5, delays
