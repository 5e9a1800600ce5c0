"""A container's first process, started by the shim: isolation, limits, exit codes.

Each test runs real containers from the busybox image (and an Alpine-like
imported one) in a network namespace it creates and removes.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cantainer.kernel import netns
from cantainer.kernel.images import ImageStore
from tests.unit.test_images import alpine_like

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def box(tmp_path):
    """``box(cmd, **limits)`` runs a container to completion: (exit code, output)."""
    ns = f"ctproc{os.getpid() % 100000}"
    netns.create(ns)
    netns.set_link_state(ns, "lo", True)
    store = ImageStore(str(tmp_path / "data"))
    count = iter(range(1000))

    def start(command, image="busybox", **extra):
        state = tmp_path / f"c{next(count)}"
        state.mkdir()
        spec = {"id": f"{os.getpid():06x}{next(count):06x}", "lower": store.rootfs(image),
                "hostname": "box1", "command": command, "env": ["GREETING=hi"],
                "netns": ns, **extra}
        (state / "spec.json").write_text(json.dumps(spec))
        shim = subprocess.Popen([sys.executable, "-m", "cantainer.shim", str(state)],
                                stderr=subprocess.PIPE, text=True)
        return state, shim

    def run(command, image="busybox", **extra):
        state, shim = start(command, image, **extra)
        assert shim.wait(60) == 0, shim.stderr.read()
        return (int((state / "exit_code").read_text()),
                (state / "output.log").read_text())

    run.start = start
    run.store = store
    run.tmp = tmp_path
    try:
        yield run
    finally:
        netns.remove(ns)


def test_isolation(box):
    code, out = box(["sh", "-c", """
        echo pid=$$; hostname; echo greeting=$GREETING
        grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status
        echo dev=$(ls /dev | tr '\\n' ' ')
        echo procs=$(ps -o comm | sort -u | tr '\n' ' ')
        mount -t tmpfs x /tmp 2>/dev/null && echo mounted || echo mount-denied
        echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo procsys-rw || echo procsys-ro
        touch /sys/kernel/x 2>/dev/null && echo sys-rw || echo sys-ro
        echo firmware=$(ls /sys/firmware | wc -l)
        mkdir -p /x && chroot /x /bin/true 2>/dev/null; cd / ; echo escape=$(ls / | tr '\\n' ' ')
        echo written > /etc/from-container
        exit 3"""])
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert code == 3
    assert lines["pid"] == "1" and "box1" in out and lines["greeting"] == "hi"
    assert "CapEff:\t00000000a80425fb" in out and "CapBnd:\t00000000a80425fb" in out
    assert "CapPrm:\t00000000a80425fb" in out and "NoNewPrivs:\t1" in out
    assert lines["dev"].split() == sorted(["fd", "full", "null", "ptmx", "pts", "random",
                                           "shm", "stderr", "stdin", "stdout", "tty",
                                           "urandom", "zero"])
    assert set(lines["procs"].split()) <= {"COMMAND", "sh", "ps", "sort", "tr", "exe"}, \
        "only its own processes are visible"
    assert "mount-denied" in out and "procsys-ro" in out and "sys-ro" in out
    assert lines["firmware"] == "0"
    assert "work" not in lines["escape"].split() and "bin" in lines["escape"].split()
    image = box.store.rootfs("busybox")
    assert not os.path.exists(os.path.join(image, "etc/from-container")), \
        "writes land in the container's own layer, not the image"


def test_network_namespace_is_the_given_one(box):
    code, out = box(["sh", "-c", "ip -o addr | awk '{print $2, $4}'"])
    assert code == 0 and out.split("\n")[0].startswith("lo 127.0.0.1/8")
    assert "eth" not in out


@pytest.mark.parametrize(("command", "code", "message"), [
    (["/no/such/program"], 127, "no such file or directory"),
    (["/etc/passwd"], 126, "Permission denied"),
    (["sh", "-c", "exit 0"], 0, ""),
])
def test_exit_codes_like_docker(box, command, code, message):
    got, out = box(command)
    assert got == code and message in out


def test_killed_container_reports_128_plus_signal(box):
    state, shim = box.start(["sleep", "60"])
    pid_file = state / "pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert shim.wait(30) == 0
    assert (state / "exit_code").read_text() == "137"


def test_pids_limit_stops_a_fork_bomb(box):
    bomb = ["sh", "-c", "n=0; for i in $(seq 1 40); do sleep 5 & n=$((n+1)); done; "
            "echo started=$n; kill -9 -1; exit 0"]
    code, out = box(bomb)
    assert (code, out.strip()) == (0, "started=40"), "the control run forks freely"
    code, out = box(bomb, pids_limit=10)
    assert code != 0 and "can't fork" in out and "started" not in out


def test_memory_limit_kills_a_hog(box):
    code, _ = box(["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
                  memory=32 << 20)
    assert code == 137


def test_alpine_like_image_runs(box):
    tarball = alpine_like(box.tmp / "alpine.tar.gz")
    box.store.import_tarball("alpine:3.20.3", tarball)
    code, out = box(["sh", "-c", "cat /etc/alpine-release; ls /dev | wc -l"],
                    image="alpine:3.20.3")
    assert code == 0 and out.split() == ["3.20.3", "13"]
