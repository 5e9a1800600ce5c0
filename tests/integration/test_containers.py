"""Containers on a three-host lab: across hosts over the overlay, and their life cycle."""

import json
import os
import signal
import time

import pytest

from cantainer.kernel import names
from tests.integration.helpers import events, ps, wait_for
from tests.unit.test_images import alpine_like

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET, OTHER = "198.18.0.0/24", "198.18.1.0/24"
SERVER = "while true; do nc -l -p 7000 -e echo served-by-$(hostname); done"


@pytest.fixture(params=["busybox", "alpine"])
def image(request, tmp_path):
    """The default image, or one imported from a tarball laid out like the Alpine
    minirootfs (empty /dev, busybox applets as links) on every host."""
    if request.param == "busybox":
        return lambda lab: "busybox"

    def import_everywhere(lab):
        tarball = alpine_like(tmp_path / "alpine.tar.gz")
        for n in range(1, len(lab.hosts) + 1):
            lab.cli(n, "image", "import", "alpine:3.20.3", str(tarball))
        return "alpine:3.20.3"
    return import_everywhere


def test_containers_reach_each_other_across_hosts_and_only_on_their_subnet(make_lab, image):
    lab = make_lab(3)
    lab.start_all()
    img = image(lab)
    srv = lab.cli(1, "run", "-d", "-n", NET, "--name", "srv", img, "sh", "-c", SERVER)
    assert len(srv.stdout.strip()) == 64
    addr = ps(lab, 2)["srv"]["ip"]
    assert addr == "198.18.0.2"

    client = lab.cli(2, "run", "-n", NET, "--name", "client", img, "sh", "-c",
                     f"ping -c 2 -W 2 {addr} >/dev/null && echo ping-ok; "
                     f"echo | nc -w 3 {addr} 7000; ip -o addr show eth0; ip -o link show eth0; "
                     f"ping -c 1 -W 1 {lab.host(2).address} >/dev/null 2>&1 && echo host-reached"
                     " || echo host-unreachable; exit 7", check=False)
    assert client.returncode == 7, client.stderr
    assert "ping-ok" in client.stdout and "served-by-srv" in client.stdout
    assert "host-reached" in client.stdout, "its host, through the network's .1 (egress)"
    assert "198.18.0.3/24" in client.stdout and "mtu 1450" in client.stdout
    assert "link/ether 02:42:c6:12:00:03" in client.stdout, "the MAC the log derived"

    # Another subnet cannot reach it; a container of that subnet on srv's host can
    # (the positive control: the prober's networking works).
    lab.cli(1, "run", "-d", "-n", OTHER, "--name", "neighbour", img, "sh", "-c", SERVER)
    near = ps(lab, 3)["neighbour"]["ip"]
    other = lab.cli(3, "run", "-n", OTHER, "--name", "elsewhere", img, "sh", "-c",
                    f"ping -c 2 -W 2 {near} >/dev/null && echo near-reached; "
                    f"echo | nc -w 3 {near} 7000; "
                    f"ping -c 1 -W 1 {addr} >/dev/null && echo reached || echo unreachable; "
                    f"echo | nc -w 2 {addr} 7000 || echo no-tcp", check=False)
    assert "near-reached" in other.stdout and "served-by-neighbour" in other.stdout, other
    assert "unreachable" in other.stdout and "served-by-srv" not in other.stdout, other

    # Seen, read, entered, stopped and removed from any host.
    assert {n: c["state"] for n, c in ps(lab, 3).items()} == {
        "srv": "running", "client": "exited", "neighbour": "running", "elsewhere": "exited"}
    inspected = json.loads(lab.cli(3, "inspect", "srv").stdout)
    assert inspected["host"] == "h1" and inspected["command"][0] == "sh"
    assert inspected["pid"] is not None
    assert lab.cli(3, "logs", "client").stdout.count("served-by-srv") == 1, "h2's, from h3"
    assert lab.cli(1, "logs", "client").stdout == lab.cli(2, "logs", "client").stdout
    for n in (1, 2):  # h1 runs srv; h2 reaches it through h1's daemon
        inside = lab.cli(n, "exec", "srv", "sh", "-c",
                         "echo $$ $(hostname) $(cat /proc/[0-9]*/comm | sort -u | tr '\\n' ,) "
                         "$(ip -o link | cut -d' ' -f2 | tr -d '\\n'); "
                         "grep CapEff /proc/self/status; echo to-stderr >&2; exit 9",
                         check=False)
        words = inside.stdout.split()
        assert inside.returncode == 9 and words[1] == "srv" and int(words[0]) > 1, inside
        # Only its own processes (its sh and nc, and this exec's; busybox runs applets
        # through /proc/self/exe, named "exe" until they exec) and its own links.
        assert set(words[2].strip(",").split(",")) <= {"sh", "nc", "cat", "sort", "tr", "exe"}, \
            words
        assert words[3].startswith("lo:eth0@if") and words[3].count(":") == 2, words
        assert "00000000a80425fb" in inside.stdout and inside.stderr == "to-stderr\n"
    fed = lab.cli(3, "exec", "-i", "srv", "sh", "-c", "read x; echo got-$x", input="abc\n")
    assert fed.stdout == "got-abc\n"
    assert lab.cli(2, "exec", "srv", "/no/such", check=False).returncode == 127
    done = lab.cli(2, "exec", "client", "true", check=False)
    assert done.returncode == 125 and "is not running" in done.stderr
    busy = lab.cli(3, "rm", "srv", check=False)
    assert busy.returncode == 4 and "is running" in busy.stderr
    # sh as PID 1 ignores SIGTERM: SIGKILL after the timeout, so 128 + 9.
    asked = time.monotonic()
    assert lab.cli(3, "stop", "-t", "1", "srv").stdout == "srv\n"
    assert time.monotonic() - asked >= 1.0, "SIGKILL only once the timeout has passed"
    assert json.loads(lab.cli(2, "inspect", "srv").stdout)["exit_code"] == 137
    assert lab.cli(2, "stop", "srv").stdout == "srv\n", "stopping a stopped one is fine"
    assert lab.cli(3, "rm", "srv", "client").stdout == "srv\nclient\n"
    assert set(ps(lab, 1)) == {"neighbour", "elsewhere"}

    # rm freed the address: the next container on the network gets it.
    again = lab.cli(2, "run", "-n", NET, "--rm", img, "sh", "-c", "ip -o -4 addr show eth0")
    assert "198.18.0.2/24" in again.stdout
    wait_for(lambda: "198.18.0.0-24" not in json.dumps(ps(lab, 1)))


def test_stop_sends_sigterm_first(make_lab):
    lab = make_lab(2)
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "polite", "busybox", "sh", "-c",
            "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done")
    assert lab.cli(2, "stop", "polite").stdout == "polite\n"
    assert json.loads(lab.cli(2, "inspect", "polite").stdout)["exit_code"] == 3
    assert lab.cli(2, "logs", "polite").stdout == "got-term\n"
    stops = [e for e in events(lab, 1) if e["type"] == "ContainerStopRequested"]
    assert [e["node"] for e in stops] == ["h2"] and stops[0]["data"]["timeout"] == 10
    missing = lab.cli(2, "stop", "nosuch", check=False)
    assert missing.returncode == 3 and "no container 'nosuch'" in missing.stderr


def test_run_errors_and_exit_codes(make_lab):
    lab = make_lab(1)
    lab.start(1)
    missing = lab.cli(1, "run", "-n", NET, "busybox", "/no/such/thing", check=False)
    assert missing.returncode == 127 and "no such file" in missing.stdout
    cannot = lab.cli(1, "run", "-n", NET, "busybox", "/etc/passwd", check=False)
    assert cannot.returncode == 126
    for args, message in [
        (("-n", NET, "nosuchimage"), "no image nosuchimage:latest on this host"),
        (("-n", "198.18.0.1/24", "busybox", "true"), "host bits set"),
        (("-n", NET, "--memory", "1k", "busybox", "true"), "out of range"),
    ]:
        result = lab.cli(1, "run", *args, check=False)
        assert result.returncode == 125 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    lab.cli(1, "run", "-d", "-n", NET, "--name", "dup", "busybox", "sleep", "30")
    dup = lab.cli(1, "run", "-n", NET, "--name", "dup", "busybox", "true", check=False)
    assert dup.returncode == 125 and "already in use" in dup.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_detached_container_survives_a_daemon_restart_and_its_exit_is_recorded(make_lab, sig):
    lab = make_lab(3)
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "sleeper", "busybox", "sh", "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 5")
    started = ps(lab, 2)["sleeper"]
    assert started["state"] == "running"
    pid = json.loads(lab.cli(3, "inspect", "sleeper").stdout)["pid"]
    lab.stop(1, sig)  # waits for the daemon to be gone
    assert ps(lab, 2)["sleeper"]["state"] == "running", "its container runs on meanwhile"
    assert os.path.exists(f"/proc/{pid}")
    lab.start(1)
    assert ps(lab, 1)["sleeper"]["state"] == "running", "adopted, not replaced"
    assert json.loads(lab.cli(3, "inspect", "sleeper").stdout)["pid"] == pid, "the same process"
    lab.cli(2, "exec", "sleeper", "touch", "/tmp/go")  # now let it end
    wait_for(lambda: ps(lab, 3)["sleeper"]["state"] == "exited", timeout=30)
    assert json.loads(lab.cli(3, "inspect", "sleeper").stdout)["exit_code"] == 5
    logged = events(lab, 2)
    cid = started["id"]
    per_container = [e["type"] for e in logged if e["data"].get("container") == cid]
    assert per_container == ["ContainerCreated", "ContainerStarted", "ContainerExited"], \
        "each reported once, whatever the event ids"
    kinds = [e["type"] for e in logged]
    assert kinds.count("NodeJoined") == 3 and "NodeLeft" not in kinds, "stopping is not leaving"


def test_node_leave_stops_its_containers_and_frees_their_addresses(make_lab):
    lab = make_lab(3)
    lab.start_all()
    lab.cli(3, "run", "-d", "-n", NET, "--name", "leaver", "busybox", "sleep", "300")
    leaver = json.loads(lab.cli(3, "inspect", "leaver").stdout)
    pid = leaver["pid"]
    refused = lab.cli(1, "node", "rm", "h3", check=False)
    assert refused.returncode == 4 and "host h3 is alive" in refused.stderr
    own = lab.cli(3, "node", "rm", "h3", check=False)
    assert own.returncode == 1 and "use 'cantainer node leave'" in own.stderr

    assert "h3 left the cluster" in lab.cli(3, "node", "leave").stdout
    assert lab.host(3).proc.wait(30) == 0, "its daemon stopped"
    assert not os.path.exists(f"/proc/{pid}"), "its container was stopped"
    assert not os.path.exists(f"/run/netns/{names.netns(leaver['id'])}"), "and removed whole"
    assert not os.path.exists(os.path.join(lab.host(3).data_dir, "containers", leaver["id"]))
    assert "leaver" not in ps(lab, 1)
    states = {n["name"]: n["state"] for n in json.loads(lab.cli(1, "nodes", "--json").stdout)}
    assert states == {"h1": "joined", "h2": "joined", "h3": "left"}
    # The address is free again, on another host.
    lab.cli(2, "run", "-d", "-n", NET, "--name", "next", "busybox", "sleep", "300")
    assert ps(lab, 1)["next"]["ip"] == "198.18.0.2"
    gone = lab.cli(1, "node", "rm", "h3", check=False)
    assert gone.returncode == 3 and "no member named 'h3'" in gone.stderr


def test_interactive_runs_with_and_without_a_terminal(make_lab):
    lab = make_lab(2)
    lab.start_all()
    piped = lab.cli(1, "run", "-i", "--rm", "-n", NET, "busybox", "sh", "-c",
                    "read x; echo got-$x; exit 6", input="hello\n", check=False)
    assert (piped.returncode, piped.stdout) == (6, "got-hello\n")

    # 'new -n CIDR' (the original tool's command): a shell on a terminal of its own.
    out, code = _on_a_terminal(lab, 1, ["new", "-n", NET],
                               b"[ -t 0 ] && echo is-a-tty; echo sum-$((2+3)); exit 3\n")
    assert code == 3 and b"is-a-tty" in out and b"sum-5" in out, out
    assert json.loads(lab.cli(1, "ps", "-a", "--json").stdout) == [], "--rm removed both"

    # exec -it into a container of another host: a terminal relayed across daemons.
    lab.cli(2, "run", "-d", "-n", NET, "--name", "far", "busybox", "sleep", "300")
    out, code = _on_a_terminal(lab, 1, ["exec", "-it", "far", "sh"],
                               b"tty; stty size; echo sum-$((4+3)); exit 4\n")
    assert code == 4 and b"/dev/pts/" in out and b"sum-7" in out, out
    assert b"24 80" in out, "the window size came along"
    out, code = _on_a_terminal(lab, 1, ["exec", "-it", "far", "sh"], b"stty size\n",
                               resize_to=(30, 100))
    assert code == 0 and b"24 80" in out and b"30 100" in out, out

    # A terminal run's output goes to the terminal, not to logs; the terminal is one of
    # the container's own devpts, so 'tty' names it (it said 'not a tty' when it was the
    # host's), with the size of the CLI's, and follows it when it is resized.
    out, code = _on_a_terminal(lab, 2, ["run", "-it", "--name", "chatty", "-n", NET,
                                        "busybox", "sh"],
                               b"tty; stty size; echo said-$((6*7))\n", resize_to=(30, 100))
    assert code == 0 and b"said-42" in out, out
    assert b"/dev/pts/0" in out and b"not a tty" not in out, out
    assert b"24 80" in out and b"30 100" in out, out
    assert "said-42" not in lab.cli(1, "logs", "chatty").stdout


def _on_a_terminal(lab, n, args, typed, resize_to=None):
    """Run the CLI on a new 24x80 pseudo-terminal, type ``typed``; its output and code.
    With ``resize_to``: once the output shows the first size, the terminal is resized
    (as a window is: TIOCSWINSZ and SIGWINCH), ``stty size`` typed until the new size
    shows, then ``exit 0``."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(os.environ, CANTAINER_SOCKET=lab.host(n).socket)
    proc = subprocess.Popen([sys.executable, "-m", "cantainer.cli", *args],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    try:
        os.write(master, typed)
        out, deadline = b"", time.monotonic() + 30
        resized, asked = False, 0.0
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
            if resize_to and b"24 80" in out and not resized:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *resize_to, 0, 0))
                os.kill(proc.pid, signal.SIGWINCH)
                resized = True
            if resized and time.monotonic() > asked + 0.5:  # until the new size shows
                want = f"{resize_to[0]} {resize_to[1]}".encode()
                os.write(master, b"exit 0\n" if want in out else b"stty size\n")
                asked = time.monotonic()
        return out, proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
