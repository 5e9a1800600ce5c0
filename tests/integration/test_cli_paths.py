"""What the README promises of the CLI, each path once, on one three-host lab.

Names and id prefixes, ``ps`` with and without ``-a``, the run flags end to
end (the event, the container, the kernel), ``logs -f``, ``rm -f``, exit codes
of signals and of commands that cannot run, the peer port refusing all but
its own operations, forwarding to a host that does not answer, and leaving:
``node rm --force``, ``node leave`` and a later rejoin, recorded once.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import pytest

from cantainer.kernel.cgroups import Cgroup
from tests.integration.helpers import events, inspect, ps, wait_for
from tests.integration.test_faults import fdb_destinations

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"


@pytest.fixture(scope="module")
def lab(request):
    from lab import Lab

    lab = Lab(3, tag=f"cli{os.getpid() % 100000}")
    try:
        lab.build()
        lab.start_all()
        yield lab
    except BaseException:
        for h in lab.hosts:
            print(f"----- cantainerd log of {h.name} -----\n{lab.log(h.number)}")
        raise
    finally:
        lab.close()


def one_line(result, code):
    assert result.returncode == code, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_names_and_id_prefixes_resolve_on_any_host(lab):
    first = lab.cli(1, "run", "-d", "-n", NET, "--name", "pfx-a", "busybox", "sleep", "300")
    cid = first.stdout.strip()
    assert inspect(lab, 3, cid[:5])["name"] == "pfx-a", "a unique prefix, from another host"
    assert inspect(lab, 2, "pfx-a")["id"] == cid
    # A second container whose id shares a prefix: submitted with a chosen id.
    other = cid[:4] + ("0" if cid[4] != "0" else "1") + "f" * 11
    lab.cli(2, "submit-event", "ContainerCreated", f"container={other}", "name=pfx-b",
            "host=h2", f"network={NET}", 'command=["sleep", "300"]')
    ambiguous = lab.cli(1, "inspect", cid[:4], check=False)
    assert "matches 2 containers; give more of the id" in one_line(ambiguous, 1)


def test_ps_hides_exited_containers_unless_all(lab):
    lab.cli(1, "run", "-n", NET, "--name", "ps-done", "busybox", "true")
    lab.cli(1, "run", "-d", "-n", NET, "--name", "ps-up", "busybox", "sleep", "300")
    running = {c["name"]: c for c in json.loads(lab.cli(2, "ps", "--json").stdout)}
    assert "ps-up" in running and "ps-done" not in running
    assert running["ps-up"]["state"] == "running"
    assert ps(lab, 2)["ps-done"]["state"] == "exited"
    table = lab.cli(3, "ps").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "HOST"]
    assert any(line.split()[1] == "ps-up" for line in table[1:])


def test_run_flags_reach_the_event_the_container_and_the_kernel(lab):
    cid = lab.cli(2, "run", "-d", "-n", NET, "--name", "flags", "-e", "COLOUR=teal",
                  "--hostname", "flagship", "--memory", "48m", "--pids-limit", "25",
                  "--cpus", "0.5", "busybox", "sh", "-c",
                  "echo $COLOUR $(hostname); sleep 300").stdout.strip()
    created = next(e for e in events(lab, 1) if e["type"] == "ContainerCreated"
                   and e["data"]["container"] == cid)["data"]
    assert (created["env"], created["hostname"], created["memory"], created["pids_limit"],
            created["cpus"]) == (["COLOUR=teal"], "flagship", 48 << 20, 25, 0.5)
    shown = inspect(lab, 3, "flags")
    assert (shown["memory"], shown["pids_limit"], shown["cpus"]) == (48 << 20, 25, 0.5)
    wait_for(lambda: lab.cli(1, "logs", "flags").stdout == "teal flagship\n")
    cgroup = Cgroup(cid)
    read = lambda c, f: open(os.path.join(cgroup.dirs[c], f)).read().strip()  # noqa: E731
    if cgroup.v2:
        assert read("memory", "memory.max") == str(48 << 20)
        assert read("cpu", "cpu.max") == "50000 100000"
    else:
        assert read("memory", "memory.limit_in_bytes") == str(48 << 20)
        assert read("cpu", "cpu.cfs_quota_us") == "50000"
    assert read("pids", "pids.max") == "25"
    lab.cli(1, "rm", "-f", "flags")


def test_logs_follow_until_the_container_ends(lab):
    lab.cli(3, "run", "-d", "-n", NET, "--name", "talker", "busybox", "sh", "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.5; done")
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
    follower = subprocess.run([sys.executable, "-m", "cantainer.cli", "logs", "-f", "talker"],
                              env=env, capture_output=True, text=True, timeout=30)
    assert follower.returncode == 0 and follower.stdout == "line1\nline2\nline3\n", follower


def test_rm_force_of_a_running_container_stops_and_removes_it(lab):
    lab.cli(2, "run", "-d", "-n", NET, "--name", "doomed", "busybox", "sleep", "300")
    pid = inspect(lab, 1, "doomed")["pid"]
    assert os.path.exists(f"/proc/{pid}")
    refused = lab.cli(1, "rm", "doomed", check=False)
    assert "is running: stop it first, or rm -f" in one_line(refused, 4)
    assert lab.cli(1, "rm", "-f", "doomed").stdout == "doomed\n"
    assert "doomed" not in ps(lab, 3)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"))


def test_exit_codes_of_signals_and_of_commands_that_cannot_run(lab):
    # A container's PID 1 ignores signals it has no handler for, from inside and from
    # its host, but for SIGKILL: the foreground run reports 128 + 9.
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
    run = subprocess.Popen([sys.executable, "-m", "cantainer.cli", "run", "--rm", "-n", NET,
                            "--name", "victim", "busybox", "sleep", "300"], env=env)
    pid = wait_for(lambda: inspect(lab, 2, "victim")["pid"])
    os.kill(pid, signal.SIGKILL)
    assert run.wait(30) == 137
    assert "victim" not in ps(lab, 1), "--rm: gone from the cluster once run returns"
    lab.cli(2, "run", "-d", "-n", NET, "--name", "host-of-exec", "busybox", "sleep", "300")
    assert lab.cli(1, "exec", "host-of-exec", "/etc/passwd", check=False).returncode == 126
    assert lab.cli(1, "exec", "host-of-exec", "/no/such", check=False).returncode == 127


def test_the_peer_port_serves_only_logs_and_exec(lab):
    """The daemons' own port (dqlite + 2) on the underlay: no submit, run, rm, leave."""
    h = lab.host(1)
    lab.cli(1, "run", "-d", "-n", NET, "--name", "peer-target", "busybox", "sleep", "300")
    head = json.loads(lab.cli(1, "status", "--json").stdout)["head"]

    tls = lab.tls(2)  # h2's member certificate: the peer port is TLS

    def exchange(payload: bytes) -> bytes:
        def talk():
            raw = socket.create_connection((h.address, 9002), timeout=10)
            with tls.wrap_socket(raw) as sock:
                sock.sendall(payload)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)
        from cantainer.kernel import netns
        return netns.run_in(lab.host(2).netns, talk)

    for op in ("submit", "run", "rm", "stop", "leave", "node_rm", "status", "ps",
               "join_token", "check"):
        reply = json.loads(exchange(json.dumps({"op": op, "ref": "peer-target",
                                                "events": [], "name": "h3"}).encode() + b"\n"))
        assert reply == {"error": f"unknown request {op!r}", "kind": "invalid"}, (op, reply)
    garbage = json.loads(exchange(b"\x00\xff garbage\n").splitlines()[0])
    assert "bad request" in garbage["error"]
    ok = exchange(json.dumps({"op": "logs", "ref": inspect(lab, 1, "peer-target")["id"]})
                  .encode() + b"\n")
    assert json.loads(ok.splitlines()[-1]) == {"end": True}, "its own operations work"
    assert json.loads(lab.cli(1, "status", "--json").stdout)["head"] == head
    assert "peer-target" in ps(lab, 2), "nothing was run, removed or stopped"


def test_forwarding_to_a_host_that_does_not_answer_fails_in_one_line(lab):
    lab.cli(3, "run", "-d", "-n", NET, "--name", "far-away", "busybox", "sleep", "300")
    lab.kill(3)
    try:
        for command in (("logs", "far-away"), ("exec", "far-away", "true")):
            result = lab.cli(1, *command, check=False)
            expected = 125 if command[0] == "exec" else 5  # exec: Docker's "refused"
            assert "its host h3 does not answer" in one_line(result, expected)
    finally:
        lab.start(3)
    assert lab.cli(1, "logs", "far-away").returncode == 0, "back once its daemon is"


def test_leaving_evicting_and_rejoining_are_each_recorded_once(lab):
    """Last in the module: h3 leaves."""
    lab.cli(3, "run", "-d", "-n", NET, "--name", "leaving", "busybox", "sleep", "300")
    leaving = inspect(lab, 1, "leaving")
    for n in (1, 2):
        wait_for(lambda n=n: leaving["mac"] in fdb_destinations(lab, n))
    joined = [e for e in events(lab, 1) if e["type"] == "NodeJoined"
              and e["data"]["name"] == "h3"]

    assert "h3 left the cluster" in lab.cli(3, "node", "leave").stdout
    assert lab.host(3).proc.wait(30) == 0
    for n in (1, 2):  # its containers' entries go everywhere
        wait_for(lambda n=n: leaving["mac"] not in fdb_destinations(lab, n))
    left = [e for e in events(lab, 1) if e["type"] == "NodeLeft"]
    assert len(left) == 1 and left[0]["id"] == f"NodeLeft-h3-{joined[-1]['seq']}"
    # An operator's eviction racing the leave uses the same id: appended once.
    again = lab.cli(1, "submit-event", "NodeLeft", "name=h3", "--id", left[0]["id"])
    assert again.stdout.strip() == str(left[0]["seq"])

    lab.start(3)  # the next start joins again, once
    rejoined = [e for e in events(lab, 2) if e["type"] == "NodeJoined"
                and e["data"]["name"] == "h3"]
    assert len(rejoined) == len(joined) + 1
    lab.stop(3)
    lab.start(3)
    assert len([e for e in events(lab, 2) if e["type"] == "NodeJoined"
                and e["data"]["name"] == "h3"]) == len(rejoined), "a restart is no rejoin"

    # node rm --force evicts a live host (refused without it).
    refused = lab.cli(1, "node", "rm", "h3", check=False)
    assert "host h3 is alive" in one_line(refused, 4)
    assert lab.cli(1, "node", "rm", "--force", "h3").stdout == "h3\n"
    states = {n["name"]: n["state"] for n in json.loads(lab.cli(2, "nodes", "--json").stdout)}
    assert states["h3"] == "left"


def test_limits_are_refused_where_no_cgroup_can_enforce_them(make_lab):
    """A daemon started under 'ip netns exec' sees a /sys without cgroups: a run asking
    for limits is refused, naming them (it ran without them while inspect showed them);
    a run asking for none still runs."""
    lab = make_lab(1)
    lab.start(1, ip_netns_exec=True)
    assert "no cgroup controller for cpu, memory, pids" in lab.log(1)
    refused = lab.cli(1, "run", "--rm", "-n", NET, "--memory", "32m", "--cpus", "0.5",
                      "busybox", "true", check=False)
    assert refused.returncode == 125, refused
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "--memory, --cpus cannot be enforced on this host" in refused.stderr
    assert json.loads(lab.cli(1, "ps", "-a", "--json").stdout) == [], "nothing created"
    assert lab.cli(1, "run", "--rm", "-n", NET, "busybox", "echo", "ran").stdout == "ran\n"
