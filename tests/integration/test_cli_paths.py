"""What the README promises of the CLI, each path once, on one three-host lab.

Names and id prefixes, ``ps`` with and without ``-a`` (``-q``, ``--format``),
the run flags end to end (the event, the container, the kernel), the default
network, ``logs -f`` and ``--tail``, ``wait``, ``kill``, ``version``, ``info``,
``rm -f``, exit codes
of signals and of commands that cannot run, the peer port refusing all but
its own operations, forwarding to a host that does not answer, and leaving:
``node rm --force``, ``node leave`` and a later rejoin, recorded once.
"""

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cantainer.kernel.cgroups import Cgroup
from tests.integration.helpers import events, inspect, module_lab, ps, wait_for
from tests.integration.test_faults import fdb_destinations, shims_of

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"


@pytest.fixture(scope="module")
def lab(request):
    with module_lab(3, "cli") as lab:
        lab.start_all()
        yield lab


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


def test_a_run_rm_frees_its_name_for_any_host_when_it_returns(lab):
    # The foreground run appends the container's end itself (one batch, the runtime's
    # ids): its exit, its removal; once it returns, another host may take the name.
    for _ in range(3):
        done = lab.cli(1, "run", "--rm", "-n", NET, "--name", "brief", "busybox", "sh", "-c",
                       "echo out; exit 3", check=False)
        assert (done.returncode, done.stdout) == (3, "out\n"), done
        assert "brief" not in ps(lab, 2)
        lab.cli(2, "run", "--rm", "-n", NET, "--name", "brief", "busybox", "true")
    log = events(lab, 3)
    ids = {e["data"]["container"] for e in log
           if e["type"] == "ContainerCreated" and e["data"]["name"] == "brief"}
    kinds = sorted(e["type"] for e in log if e["data"].get("container") in ids)
    assert len(ids) == 6 and kinds == sorted(["ContainerCreated", "ContainerStarted",
                                              "ContainerExited", "ContainerRemoved"] * 6), \
        "each recorded once, whoever appended it first"


def test_a_foreground_run_shows_running_everywhere_and_outlives_its_cli(lab):
    # The run call records a short run's start with its end, but a longer run shows as
    # running at once (after 0.1 s); if the CLI goes (the call fails at its next send of
    # output), the runtime records the end.
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
    cli = subprocess.Popen([sys.executable, "-m", "cantainer.cli", "run", "-n", NET, "--name",
                            "outlives", "busybox", "sh", "-c",
                            "for i in 1 2 3 4 5 6; do echo tick; sleep 0.3; done; exit 7"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        wait_for(lambda: ps(lab, 2)["outlives"]["state"] == "running", timeout=10, interval=0.05)
        assert time.monotonic() - started < 1.5, "shown running while it runs"
    finally:
        cli.kill()
        cli.wait()
    done = wait_for(lambda: (c := inspect(lab, 3, "outlives"))["state"] == "exited" and c,
                    timeout=15)
    assert done["exit_code"] == 7
    lab.cli(1, "rm", "outlives")


def test_a_foreground_run_whose_cli_stops_reading_still_has_its_end_recorded(lab):
    # The CLI's stdout is a pipe nobody reads: it stops reading the daemon, whose run
    # call then waits to send output; the runtime records the exit after 1 s.
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
    cli = subprocess.Popen([sys.executable, "-m", "cantainer.cli", "run", "-n", NET, "--name",
                            "flood", "busybox", "sh", "-c", "yes | head -c 4000000; exit 4"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        done = wait_for(lambda: (c := inspect(lab, 2, "flood"))["state"] == "exited" and c,
                        timeout=20)
        assert done["exit_code"] == 4
        assert cli.poll() is None, "the CLI is still stuck on its output"
    finally:
        cli.kill()
        cli.communicate()
    lab.cli(1, "rm", "flood")


def test_a_shim_that_dies_under_its_container_is_recorded_as_failed(lab):
    # Its process runs on to its end; then the runtime finds no exit code: 125, and why.
    cid = lab.cli(1, "run", "-d", "-n", NET, "--name", "orphaned", "busybox", "sleep",
                  "1").stdout.strip()
    [shim] = shims_of(lab, 1, cid)
    os.kill(shim, signal.SIGKILL)
    done = wait_for(lambda: (c := inspect(lab, 2, "orphaned"))["state"] == "exited" and c,
                    timeout=20)
    assert done["exit_code"] == 125
    assert "the container's shim failed" in lab.cli(3, "logs", "orphaned").stdout
    cgroup = Cgroup(cid)
    assert all(os.path.isdir(d) for d in cgroup.dirs.values()), "its shim could not free it"
    lab.cli(1, "rm", "orphaned")
    wait_for(lambda: not any(os.path.isdir(d) for d in cgroup.dirs.values()), timeout=10)


def test_a_loaded_image_runs_with_its_config_as_the_defaults(lab, tmp_path):
    # A docker-save archive built here: an Alpine-like root below, a layer above that
    # adds files and whites out /etc/os-release; its config names the process.
    from tests.unit.test_images import alpine_like, docker_save

    with open(alpine_like(tmp_path / "root.tar.gz"), "rb") as f:
        lower = f.read()
    upper = [("srv/", "dir", None), ("srv/msg", "file", "from the image\n"),
             ("etc/.wh.os-release", "file", ""),
             ("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/x\n")]
    config = {"config": {"Entrypoint": ["/bin/sh", "-c"],
                         "Cmd": ["read m < msg; echo $m; echo $GREETING $PLACE; pwd; "
                                 "busybox id -u; test -e /etc/os-release || echo whited-out"],
                         "Env": ["GREETING=hello", "PLACE=image"], "WorkingDir": "/srv",
                         "User": "nobody"}}
    archive = docker_save(tmp_path / "demo.tar", lower=lower, upper=upper, config=config,
                          name="registry.example:5000/team/loaded:2")
    assert lab.cli(1, "image", "load", "-i", archive).stdout == "loaded:2\n"
    ran = lab.cli(1, "run", "--rm", "-n", NET, "-e", "PLACE=cli", "loaded:2")
    assert ran.stdout == "from the image\nhello cli\n/srv\n65534\nwhited-out\n", ran
    given = lab.cli(1, "run", "--rm", "-n", NET, "--user", "0", "loaded:2", "busybox id -u")
    assert given.stdout == "0\n", "a command given replaces CMD, under the ENTRYPOINT"
    created = [e for e in events(lab, 2, "--type", "ContainerCreated")
               if e["data"]["image"] == "loaded:2"][0]["data"]
    assert (created["entrypoint"], created["user"], created["workdir"]) == (
        ["/bin/sh", "-c"], "65534:65534", "/srv"), \
        "the log records what ran (the user's primary group: the image's /etc/passwd)"
    bad = lab.cli(1, "image", "load", "-i", "/nonexistent.tar", check=False)
    assert bad.returncode == 1 and "no file /nonexistent.tar" in bad.stderr
    lab.cli(1, "image", "rm", "loaded:2")


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


def test_run_without_a_network_joins_the_clusters_default_one(lab):
    """Docker's habit: no -n, the default network — one for the whole cluster, its CIDR
    the one the cluster was created with (the lab's), made at its first use."""
    a = lab.cli(1, "run", "-d", "--name", "dflt-a", "busybox", "sleep", "300").stdout.strip()
    lab.cli(2, "run", "-d", "--name", "dflt-b", "busybox", "sleep", "300")
    b = inspect(lab, 3, "dflt-b")
    assert inspect(lab, 3, a)["network"] == b["network"] == "default"
    nets = {n["name"]: n for n in json.loads(lab.cli(3, "network", "ls", "--json").stdout)}
    assert nets["default"]["cidr"] == "198.19.128.0/18"
    assert ipaddress.IPv4Address(b["ip"]) in ipaddress.IPv4Network("198.19.128.0/18")
    reach = lab.cli(1, "exec", "dflt-a", "ping", "-c", "1", "-W", "2", b["ip"], check=False)
    assert reach.returncode == 0, reach
    taken = lab.cli(1, "network", "create", "--name", "default", "198.18.9.0/24", check=False)
    assert "the network 'default' is the cluster's" in one_line(taken, 4)
    lab.cli(1, "rm", "-f", "dflt-a", "dflt-b")


def test_wait_kill_tail_and_the_short_forms_of_ps(lab):
    lab.cli(1, "run", "-d", "--name", "lines", "busybox", "sh", "-c",
            "for i in 1 2 3 4 5; do echo out-$i; done; exit 3")
    assert lab.cli(2, "wait", "lines").stdout == "3\n", "from another host, by the log"
    assert lab.cli(3, "logs", "--tail", "2", "lines").stdout == "out-4\nout-5\n"
    assert lab.cli(3, "logs", "-n", "0", "lines").stdout == ""
    assert lab.cli(3, "logs", "--tail", "all", "lines").stdout.count("out-") == 5
    # kill from another host: at once, on the owner; what follows is recorded as ever.
    lab.cli(1, "run", "-d", "--name", "trapper", "busybox", "sh", "-c",
            "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    wait_for(lambda: inspect(lab, 3, "trapper")["state"] == "running")
    assert lab.cli(3, "kill", "-s", "TERM", "trapper").stdout == "trapper\n"
    assert lab.cli(2, "wait", "trapper").stdout == "7\n"
    lab.cli(2, "run", "-d", "--name", "sleeper", "busybox", "sleep", "300")
    assert lab.cli(1, "kill", "sleeper").stdout == "sleeper\n"
    assert lab.cli(1, "wait", "sleeper").stdout == "137\n", "KILL by default"
    assert "is not running" in one_line(lab.cli(3, "kill", "sleeper", check=False), 4)
    assert "'NOPE' is not a signal" in one_line(
        lab.cli(3, "kill", "-s", "NOPE", "lines", check=False), 1)

    everything = json.loads(lab.cli(1, "ps", "-a", "--json").stdout)
    ids = [c["id"][:12] for c in everything]
    assert lab.cli(2, "ps", "-a", "-q").stdout.split() == ids
    assert lab.cli(2, "ps", "-a", "--format", "{{.Names}}@{{.Host}}").stdout.split() == \
        [f"{c['name']}@{c['host']}" for c in everything]
    lines = [json.loads(line) for line in
             lab.cli(2, "ps", "-a", "--format", "json").stdout.splitlines()]
    assert [(x["ID"], x["Status"]) for x in lines] == [(c["id"][:12], c["state"])
                                                       for c in everything]
    assert "no field 'Nope'" in one_line(lab.cli(2, "ps", "--format", "{{.Nope}}",
                                                 check=False), 1)
    lab.cli(1, "rm", "lines", "trapper", "sleeper")


def test_version_and_info(lab):
    from cantainer import __version__
    out = lab.cli(2, "version").stdout
    assert out == f"client: cantainer {__version__}\nserver: cantainerd {__version__} on h2\n"
    info = json.loads(lab.cli(2, "info", "--json").stdout)
    assert (info["node"], info["members"]["joined"], info["default_network"]) == \
        ("h2", 3, "198.19.128.0/18")
    assert set(info["cgroup_controllers"]) == {"cpu", "memory", "pids"}
    assert "members     3 joined, 0 suspected" in lab.cli(2, "info").stdout


def test_workdir_user_entrypoint_and_capabilities(lab):
    def out(*argv):
        return lab.cli(1, "run", "--rm", *argv).stdout

    assert out("-w", "/srv/app", "busybox", "pwd") == "/srv/app\n", "made if missing"
    assert out("-u", "1000:1001", "busybox", "id") == "uid=1000 gid=1001\n", "no groups"
    assert out("--entrypoint", "/bin/echo", "busybox", "hello", "there") == "hello there\n"
    caps = "grep CapEff /proc/self/status | cut -f2"
    assert out("busybox", "sh", "-c", caps) == "00000000a80425fb\n", "Docker's default"
    assert out("-u", "1000", "busybox", "sh", "-c", caps) == "0000000000000000\n", \
        "a user other than root has none in effect"
    assert out("--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", "busybox", "sh", "-c",
               caps) == "0000000000000400\n"
    dummy = ("busybox", "ip", "addr", "add", "127.0.0.9/8", "dev", "lo")  # needs NET_ADMIN
    assert lab.cli(1, "run", "--rm", *dummy, check=False).returncode != 0, "no NET_ADMIN"
    assert lab.cli(1, "run", "--rm", "--cap-add", "NET_ADMIN", *dummy).returncode == 0
    # exec runs as the container does: its user, its directory, its capabilities.
    lab.cli(1, "run", "-d", "--name", "as-user", "-u", "1000", "-w", "/srv",
            "busybox", "sleep", "300")
    assert lab.cli(2, "exec", "as-user", "sh", "-c", "id -u; pwd; " + caps).stdout == \
        "1000\n/srv\n0000000000000000\n"
    for argv, message in [(("--cap-add", "NOPE"), "unknown capability 'NOPE'"),
                          (("-u", "bob"), "'bob' is not UID[:GID]"),
                          (("-w", "srv"), "'srv' is not an absolute path")]:
        bad = lab.cli(1, "run", "--rm", *argv, "busybox", "true", check=False)
        assert bad.returncode == 125 and message in bad.stderr, bad
        assert bad.stderr.count("\n") == 1
    lab.cli(1, "rm", "-f", "as-user")


def test_volumes_tmpfs_and_a_read_only_root(lab, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("from the host\n")

    def run(*argv, check=True):
        return lab.cli(1, "run", "--rm", *argv, check=check)

    assert run("-v", f"{shared}:/data:ro", "busybox", "cat", "/data/f").stdout == \
        "from the host\n"
    assert run("-v", f"{shared}:/data:ro", "busybox", "sh", "-c", "echo x > /data/g",
               check=False).returncode != 0, "read-only"
    assert run("-v", f"{shared}:/data", "busybox", "sh", "-c", "echo y > /data/g").returncode \
        == 0 and (shared / "g").read_text() == "y\n", "read-write, on the host"
    # A named volume outlives its containers: data written by one, read by the next.
    run("-v", "keep:/var/lib/app", "busybox", "sh", "-c", "echo kept > /var/lib/app/f")
    assert run("-v", "keep:/var/lib/app", "busybox", "cat", "/var/lib/app/f").stdout == \
        "kept\n"
    assert "keep" in lab.cli(1, "volume", "ls").stdout
    lab.cli(1, "run", "-d", "--name", "vol-user", "-v", "keep:/x", "busybox", "sleep", "300")
    busy = lab.cli(1, "volume", "rm", "keep", check=False)
    assert "volume keep is in use by container vol-user" in one_line(busy, 4)
    lab.cli(1, "rm", "-f", "vol-user")
    assert lab.cli(1, "volume", "rm", "keep").stdout == "keep\n"
    assert "no volume 'keep'" in one_line(lab.cli(1, "volume", "rm", "keep", check=False), 3)
    # --read-only: the root refuses writes; a --tmpfs and /dev do not.
    out = run("--read-only", "--tmpfs", "/scratch", "busybox", "sh", "-c",
              "echo a > /scratch/x && cat /scratch/x; echo b > /dev/null && echo dev-ok; "
              "echo c > /etc/x || echo root-refused", check=False).stdout
    assert out == ("a\ndev-ok\nsh: can't create /etc/x: Read-only file system\n"
                   "root-refused\n"), out
    missing = lab.cli(1, "run", "--rm", "-v", "/nonexistent/x:/x", "busybox", "true",
                      check=False)
    assert missing.returncode == 125 and "/nonexistent/x does not exist on this host" in \
        missing.stderr


def test_restart_policies_and_start_and_restart_from_any_host(lab):
    # on-failure:3, counted in the log: four runs, then it stays exited.
    lab.cli(1, "run", "-d", "--restart", "on-failure:3", "--name", "flaky", "busybox", "sh",
            "-c", "echo ran; exit 3")
    wait_for(lambda: (c := inspect(lab, 2, "flaky"))["restart_count"] == 3 and
             c["state"] == "exited", timeout=30)
    restarts = [e for e in events(lab, 3, "--type", "ContainerStartRequested")
                if e["data"]["container"] == inspect(lab, 3, "flaky")["id"]]
    assert [e["data"]["policy"] for e in restarts] == [True] * 3
    assert [e["node"] for e in restarts] == ["h1"] * 3, "decided by its host"
    time.sleep(3)  # the next back-off would be 0.8 s: no fourth restart comes
    flaky = inspect(lab, 1, "flaky")
    assert (flaky["restart_count"], flaky["starts"], flaky["exit_code"]) == (3, 4, 3)
    assert lab.cli(2, "logs", "flaky").stdout == "ran\n" * 4, "every run's output is kept"
    # on-failure leaves a clean exit alone; always restarts it, until it is stopped.
    lab.cli(2, "run", "-d", "--restart", "on-failure", "--name", "clean", "busybox", "true")
    lab.cli(2, "run", "-d", "--restart", "always", "--name", "again", "busybox", "sh", "-c",
            "sleep 0.2")
    wait_for(lambda: inspect(lab, 3, "again")["restart_count"] >= 2, timeout=30)
    assert lab.cli(3, "stop", "-t", "1", "again").stdout == "again\n"
    stopped = inspect(lab, 1, "again")
    time.sleep(2)
    assert inspect(lab, 1, "again")["restart_count"] == stopped["restart_count"], \
        "a container stopped on purpose is not restarted"
    assert inspect(lab, 1, "clean")["restart_count"] == 0
    # start and restart, from hosts other than its own: the same root each run.
    lab.cli(1, "run", "-d", "--name", "sleeper", "busybox", "sh", "-c",
            "date >> /runs; wc -l < /runs; exec sleep 600")
    first = inspect(lab, 2, "sleeper")["pid"]
    lab.cli(2, "stop", "-t", "1", "sleeper")
    assert lab.cli(3, "start", "sleeper").stdout == "sleeper\n"
    assert inspect(lab, 1, "sleeper")["state"] == "running"
    assert lab.cli(3, "restart", "-t", "1", "sleeper").stdout == "sleeper\n"
    after = inspect(lab, 1, "sleeper")
    assert after["state"] == "running" and after["pid"] != first and after["starts"] == 3
    wait_for(lambda: lab.cli(1, "logs", "sleeper").stdout.split() == ["1", "2", "3"])
    assert after["restart_count"] == 0, "asked for, not the policy's"
    # Bad input: one line, nothing appended.
    head = len(events(lab, 1))
    for args, says in ((("--restart", "sometimes"), "is not a restart policy"),
                       (("--restart", "on-failure:x"), "is not a restart policy"),
                       (("--restart", "always", "--rm"), "--restart and --rm conflict")):
        bad = lab.cli(1, "run", *args, "busybox", "true", check=False)
        assert says in one_line(bad, 125), bad
    assert len(events(lab, 1)) == head
    lab.cli(1, "rm", "-f", "flaky", "clean", "again", "sleeper")


def test_logs_with_timestamps_from_another_host(lab):
    import datetime

    lab.cli(1, "run", "-d", "--name", "stamped", "busybox", "sh", "-c",
            "echo first; sleep 1; echo second")
    assert lab.cli(2, "wait", "stamped").stdout == "0\n"
    lines = lab.cli(3, "logs", "-t", "stamped").stdout.splitlines()
    stamps = [datetime.datetime.fromisoformat(line.split(" ", 1)[0][:26] + "+00:00")
              for line in lines]
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"], lines
    assert 0.9 < (stamps[1] - stamps[0]).total_seconds() < 3, lines
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - stamps[1]).total_seconds()) < 30, "UTC, now-ish"
    assert lab.cli(2, "logs", "-t", "-n", "1", "stamped").stdout.splitlines() == lines[1:]
    lab.cli(1, "rm", "stamped")


def test_init_passes_signals_on_and_reaps_orphans(lab):
    lab.cli(1, "run", "-d", "--init", "--name", "with-init", "busybox", "sleep", "600")
    lab.cli(1, "run", "-d", "--name", "without-init", "busybox", "sleep", "600")
    began = time.monotonic()
    lab.cli(2, "stop", "-t", "5", "with-init")
    took = time.monotonic() - began
    assert inspect(lab, 3, "with-init")["exit_code"] == 143 and took < 4, took
    # Control: sleep as PID 1 has no default action for SIGTERM: SIGKILL after -t.
    lab.cli(2, "stop", "-t", "1", "without-init")
    assert inspect(lab, 3, "without-init")["exit_code"] == 137
    out = lab.cli(1, "run", "--rm", "--init", "busybox", "sh", "-c",
                  "tr '\\0' ' ' < /proc/1/cmdline; echo; (sleep 0.2 &); sleep 1; "
                  "grep -l '^State:.*Z' /proc/[0-9]*/status || echo no-zombie").stdout
    assert out.splitlines()[0].startswith("/sbin/cantainer-init sh -c"), out
    assert "no-zombie" in out, out
    assert inspect(lab, 1, "with-init")["init"] is True
    lab.cli(1, "rm", "with-init", "without-init")


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
