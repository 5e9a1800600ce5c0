"""Containers on a three-host lab: across hosts over the overlay, and their life cycle."""

import json
import time

import pytest

from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET, OTHER = "198.18.0.0/24", "198.18.1.0/24"
SERVER = "while true; do nc -l -p 7000 -e echo served-by-$(hostname); done"


def ps(lab, n):
    return {c["name"]: c for c in json.loads(lab.cli(n, "ps", "-a", "--json").stdout)}


def test_containers_reach_each_other_across_hosts_and_only_on_their_subnet(make_lab):
    lab = make_lab(3)
    lab.start_all()
    srv = lab.cli(1, "run", "-d", "-n", NET, "--name", "srv", "busybox", "sh", "-c", SERVER)
    assert len(srv.stdout.strip()) == 64
    addr = ps(lab, 2)["srv"]["ip"]
    assert addr == "198.18.0.2"

    client = lab.cli(2, "run", "-n", NET, "--name", "client", "busybox", "sh", "-c",
                     f"ping -c 2 -W 2 {addr} >/dev/null && echo ping-ok; "
                     f"echo | nc -w 3 {addr} 7000; ip -o addr show eth0; ip -o link show eth0; "
                     "exit 7", check=False)
    assert client.returncode == 7, client.stderr
    assert "ping-ok" in client.stdout and "served-by-srv" in client.stdout
    assert "198.18.0.3/24" in client.stdout and "mtu 1450" in client.stdout
    assert "link/ether 02:42:c6:12:00:03" in client.stdout, "the MAC the log derived"

    other = lab.cli(3, "run", "-n", OTHER, "--name", "elsewhere", "busybox", "sh", "-c",
                    f"ping -c 1 -W 1 {addr} >/dev/null && echo reached || echo unreachable; "
                    f"echo | nc -w 2 {addr} 7000 || echo no-tcp", check=False)
    assert "unreachable" in other.stdout and "served" not in other.stdout

    # Seen from any host; logs and stop on the owning host; rm from any host.
    assert {n: c["state"] for n, c in ps(lab, 3).items()} == {
        "srv": "running", "client": "exited", "elsewhere": "exited"}
    inspected = json.loads(lab.cli(3, "inspect", "srv").stdout)
    assert inspected["host"] == "h1" and inspected["command"][0] == "sh"
    assert inspected["pid"] is not None
    remote = lab.cli(2, "logs", "srv", check=False)
    assert remote.returncode == 1 and "runs on host h1" in remote.stderr
    assert lab.cli(2, "logs", "client").stdout.count("served-by-srv") == 1
    inside = lab.cli(1, "exec", "srv", "sh", "-c", "echo $$ $(hostname) $(ls /proc | grep -cE '^[0-9]+$'); "
                     "grep CapEff /proc/self/status; exit 9", check=False)
    words = inside.stdout.split()
    assert inside.returncode == 9 and words[1] == "srv" and int(words[0]) > 1
    assert "00000000a80425fb" in inside.stdout
    assert lab.cli(1, "exec", "srv", "/no/such", check=False).returncode == 127
    elsewhere = lab.cli(2, "exec", "srv", "true", check=False)
    assert elsewhere.returncode == 125 and "runs on host h1" in elsewhere.stderr
    done = lab.cli(2, "exec", "client", "true", check=False)
    assert done.returncode == 125 and "is not running" in done.stderr
    busy = lab.cli(3, "rm", "srv", check=False)
    assert busy.returncode == 1 and "is running" in busy.stderr
    assert lab.cli(1, "stop", "-t", "1", "srv").stdout == "srv\n"
    assert json.loads(lab.cli(2, "inspect", "srv").stdout)["exit_code"] == 137
    assert lab.cli(3, "rm", "srv", "client").stdout == "srv\nclient\n"
    assert set(ps(lab, 1)) == {"elsewhere"}

    # rm freed the address: the next container on the network gets it.
    again = lab.cli(2, "run", "-n", NET, "--rm", "busybox", "sh", "-c", "ip -o -4 addr show eth0")
    assert "198.18.0.2/24" in again.stdout
    wait_for(lambda: "198.18.0.0-24" not in json.dumps(ps(lab, 1)))


def test_run_errors_and_exit_codes(make_lab):
    lab = make_lab(1)
    lab.start(1)
    missing = lab.cli(1, "run", "-n", NET, "busybox", "/no/such/thing", check=False)
    assert missing.returncode == 127 and "no such file" in missing.stdout
    cannot = lab.cli(1, "run", "-n", NET, "busybox", "/etc/passwd", check=False)
    assert cannot.returncode == 126
    for args, message in [
        (("-n", NET, "nosuchimage"), "no image nosuchimage:latest on this host"),
        (("busybox", "true"), "give the container a network"),
        (("-n", "198.18.0.1/24", "busybox", "true"), "host bits set"),
        (("-n", NET, "--memory", "1k", "busybox", "true"), "out of range"),
    ]:
        result = lab.cli(1, "run", *args, check=False)
        assert result.returncode == 125 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    lab.cli(1, "run", "-d", "-n", NET, "--name", "dup", "busybox", "sleep", "30")
    dup = lab.cli(1, "run", "-n", NET, "--name", "dup", "busybox", "true", check=False)
    assert dup.returncode == 125 and "already in use" in dup.stderr


def test_detached_container_survives_a_daemon_crash_and_its_exit_is_recorded(make_lab):
    lab = make_lab(3)
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "sleeper", "busybox", "sh", "-c",
            "sleep 4; exit 5")
    started = ps(lab, 2)["sleeper"]
    assert started["state"] == "running"
    lab.kill(1)
    time.sleep(0.5)
    lab.start(1)
    wait_for(lambda: ps(lab, 3)["sleeper"]["state"] == "exited", timeout=30)
    assert json.loads(lab.cli(3, "inspect", "sleeper").stdout)["exit_code"] == 5
    kinds = [json.loads(line)["type"] for line in lab.cli(2, "events", "--json").stdout.split("\n")
             if line]
    assert kinds.count("ContainerStarted") == 1 and kinds.count("ContainerExited") == 1


def test_interactive_runs_with_and_without_a_terminal(make_lab):
    import os
    import pty
    import select
    import subprocess
    import sys

    lab = make_lab(1)
    lab.start(1)
    piped = lab.cli(1, "run", "-i", "--rm", "-n", NET, "busybox", "sh", "-c",
                    "read x; echo got-$x; exit 6", input="hello\n", check=False)
    assert (piped.returncode, piped.stdout) == (6, "got-hello\n")

    # 'new -n CIDR' (the original tool's command): a shell on a terminal of its own.
    master, slave = pty.openpty()
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
    shell = subprocess.Popen([sys.executable, "-m", "cantainer.cli", "new", "-n", NET],
                             stdin=slave, stdout=slave, stderr=slave, env=env,
                             start_new_session=True)
    os.close(slave)
    try:
        os.write(master, b"[ -t 0 ] && echo is-a-tty; echo sum-$((2+3)); exit 3\n")
        out, deadline = b"", time.monotonic() + 30
        while shell.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        assert shell.wait(10) == 3, out
        assert b"is-a-tty" in out and b"sum-5" in out
    finally:
        if shell.poll() is None:
            shell.kill()
        os.close(master)
    assert json.loads(lab.cli(1, "ps", "-a", "--json").stdout) == [], "--rm removed both"
