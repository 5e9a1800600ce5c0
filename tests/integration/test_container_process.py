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

from cantainer.kernel import netns, supervise
from cantainer.kernel.statedir import StateDir
from lab import plumbing
from cantainer.kernel.cgroups import Cgroup
from cantainer.kernel.images import ImageStore
from tests.integration.helpers import wait_for
from tests.unit.test_images import alpine_like

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def box(tmp_path):
    """``box(cmd, **limits)`` runs a container to completion: (exit code, output)."""
    ns = f"ctproc{os.getpid() % 100000}"
    netns.create(ns)
    plumbing.set_link_state(ns, "lo", True)
    store = ImageStore(str(tmp_path / "data"))
    count = iter(range(1000))

    def prepare(command, image="busybox", **extra):
        state = tmp_path / f"c{next(count)}"
        state.mkdir()
        spec = {"id": f"{os.getpid():06x}{next(count):06x}", "lower": store.rootfs(image),
                "hostname": "box1", "command": command, "env": ["GREETING=hi"],
                "netns": ns, **extra}
        (state / "spec.json").write_text(json.dumps(spec))
        return state

    def start(command, image="busybox", **extra):
        state = prepare(command, image, **extra)
        shim = subprocess.Popen([sys.executable, "-m", "cantainer.kernel.shim", str(state)],
                                stderr=subprocess.PIPE, text=True)
        return state, shim

    def run(command, image="busybox", **extra):
        state, shim = start(command, image, **extra)
        assert shim.wait(60) == 0, shim.stderr.read()
        return (int((state / "exit_code").read_text()),
                (state / "output.log").read_text())

    run.start = start
    run.prepare = prepare
    run.store = store
    run.tmp = tmp_path
    run.netns = ns
    try:
        yield run
    finally:
        netns.remove(ns)


def test_isolation(box):
    state, shim = box.start(["sh", "-c", """
        echo pid=$$; hostname; echo greeting=$GREETING
        grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs)' /proc/self/status
        echo dev=$(ls /dev | tr '\\n' ' ')
        echo procs=$(ps -o comm | sort -u | tr '\n' ' ')
        mount -t tmpfs x /tmp 2>/dev/null && echo mounted || echo mount-denied
        echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo procsys-rw || echo procsys-ro
        echo sysmount=$(awk '$5 == "/sys" {print $6}' /proc/self/mountinfo)
        echo firmware=$(ls /sys/firmware | wc -l)
        echo timers=$(wc -c < /proc/timer_list)
        echo ipcns=$(readlink /proc/self/ns/ipc)
        echo utsns=$(readlink /proc/self/ns/uts)
        echo written > /etc/from-container
        exit 3"""])
    assert shim.wait(60) == 0, shim.stderr.read()
    code, out = int((state / "exit_code").read_text()), (state / "output.log").read_text()
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert code == 3
    assert lines["pid"] == "1" and "box1" in out and lines["greeting"] == "hi"
    assert "CapEff:\t00000000a80425fb" in out and "CapBnd:\t00000000a80425fb" in out
    assert "CapPrm:\t00000000a80425fb" in out and "NoNewPrivs:\t1" in out
    assert lines["dev"].split() == sorted(["fd", "full", "null", "ptmx", "pts", "random",
                                           "shm", "stderr", "stdin", "stdout", "tty",
                                           "urandom", "zero"])
    procs = set(lines["procs"].split())
    assert "sh" in procs and procs <= {"COMMAND", "sh", "ps", "sort", "tr", "exe"}, \
        "only its own processes are visible"
    assert "mount-denied" in out and "procsys-ro" in out
    assert lines["sysmount"].split(",")[0] == "ro", "/sys is mounted read-only"
    with open("/proc/timer_list") as f:
        assert f.read(), "the host's /proc/timer_list has content"
    assert lines["firmware"] == "0" and lines["timers"] == "0", "masked paths are empty"
    assert lines["ipcns"] != os.readlink("/proc/self/ns/ipc"), "an IPC namespace of its own"
    assert lines["utsns"] != os.readlink("/proc/self/ns/uts"), "a UTS namespace of its own"
    # Writes land in the container's own layer, not in the image.
    assert (state / "upper" / "etc" / "from-container").read_text() == "written\n"
    image = box.store.rootfs("busybox")
    assert not os.path.exists(os.path.join(image, "etc/from-container"))


@pytest.mark.parametrize("go", [False, True])
def test_a_warm_shim_starts_its_container_only_when_told_go(box, go):
    """The daemon hands a warm shim its container before the network is made: the
    process waits in its cgroup, and runs only at ``go``; without it, nothing runs and
    the exit code is 125."""
    out = box.tmp / f"out-{go}"
    out.mkdir()
    state = box.prepare(["sh", "-c", "echo ran > /out/ran"],
                        mounts=[[str(out), "/out", False]])
    cgroup = Cgroup(json.loads((state / "spec.json").read_text())["id"])
    warm = supervise.WarmShim()
    shim = warm.start(StateDir.at(str(state)))
    try:
        procs = os.path.join(cgroup.dirs["pids"], "cgroup.procs")
        waiting = wait_for(lambda: os.path.exists(procs) and open(procs).read().split())
        assert len(waiting) == 1, "the container's process waits in its cgroup"
        time.sleep(0.2)
        assert not (out / "ran").exists() and not (state / "pid").exists()
        supervise.tell(shim, go=go)
        assert shim.wait(30) == 0
    finally:
        warm.close()
        if shim.poll() is None:
            shim.kill()
    assert int((state / "exit_code").read_text()) == (0 if go else 125)
    assert (out / "ran").exists() == go
    assert not os.path.exists(f"/proc/{waiting[0]}"), "its process is gone either way"
    assert not os.path.exists(cgroup.dirs["pids"]), "and its cgroup"


ESCAPE_C = r"""
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
/* The classic chroot escape: chroot into a subdirectory while the working
   directory stays outside it, climb with "..", and chroot where that ends. */
int main(void) {
    mkdir("escape-jail", 0755);
    if (chroot("escape-jail") != 0) { perror("chroot"); return 2; }
    for (int i = 0; i < 256; i++) chdir("..");
    if (chroot(".") != 0) { perror("chroot ."); return 3; }
    DIR *d = opendir("/");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) printf("%s\n", e->d_name);
    return 0;
}
"""


def test_the_classic_chroot_escape_stays_inside(box):
    source = box.tmp / "escape.c"
    source.write_text(ESCAPE_C)
    program = box.tmp / "escape"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(program), str(source)], check=True)

    # Positive control: on the host, the same program leaves a plain chroot.
    jail = box.tmp / "plain-chroot"
    jail.mkdir()
    (jail / "escape").write_bytes(program.read_bytes())
    (jail / "escape").chmod(0o755)
    host = subprocess.run(["chroot", str(jail), "/escape"], capture_output=True, text=True)
    assert host.returncode == 0, host.stderr
    assert set(host.stdout.split()) == set(os.listdir("/")) | {".", ".."}, \
        "the program escapes a plain chroot to the host's root"

    tarball = alpine_like(box.tmp / "escape.tar.gz",
                          extra=[("./escape", "file", program.read_bytes())])
    box.store.import_tarball("escape:1", tarball)
    code, out = box(["/escape"], image="escape:1")
    assert code == 0, out
    image_root = set(os.listdir(box.store.rootfs("escape:1")))
    assert set(out.split()) == image_root | {".", "..", "escape-jail"}, \
        "it ends at the container's own root: there is no outer root to climb to"


def test_network_namespace_is_the_given_one(box):
    subprocess.run(["ip", "netns", "exec", box.netns, "ip", "link", "add", "marker0", "type",
                    "veth", "peer", "name", "marker1"], check=True)
    code, out = box(["sh", "-c", "ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1"])
    assert code == 0 and sorted(out.split()) == ["lo", "marker0", "marker1"], out


@pytest.mark.parametrize(("command", "code", "message"), [
    (["/no/such/program"], 127, "cantainer: /no/such/program: no such file or directory\n"),
    (["nosuchcmd"], 127, "cantainer: nosuchcmd: no such file or directory\n"),
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
    hog = ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]
    assert box(hog) == (0, "survived\n"), "the control run has the memory"
    code, out = box(hog, memory=32 << 20)
    assert code == 137 and "survived" not in out


def test_cpu_limit_throttles_a_busy_loop(box):
    """--cpus 0.2: the cgroup has the quota, and a busy loop is throttled by it."""
    state, shim = box.start(["sh", "-c", "end=$(($(date +%s) + 2)); "
                                         "while [ $(date +%s) -lt $end ]; do :; done"],
                            cpus=0.2)
    cgroup = Cgroup(json.loads((state / "spec.json").read_text())["id"])
    quota = wait_for(lambda: cpu_quota(cgroup))
    stat = wait_for(lambda: cpu_stat(cgroup).get("nr_throttled", 0) > 0 and cpu_stat(cgroup))
    assert shim.wait(60) == 0
    assert quota == (20_000, 100_000), quota
    assert stat["nr_throttled"] > 0, stat


def cpu_quota(cgroup):
    path = cgroup.dirs["cpu"]
    if cgroup.v2:
        quota, period = open(os.path.join(path, "cpu.max")).read().split()
    else:
        quota = open(os.path.join(path, "cpu.cfs_quota_us")).read()
        period = open(os.path.join(path, "cpu.cfs_period_us")).read()
    return int(quota), int(period)


def cpu_stat(cgroup):
    with open(os.path.join(cgroup.dirs["cpu"], "cpu.stat")) as f:
        return {k: int(v) for k, v in (line.split() for line in f)}


def test_alpine_like_image_runs(box):
    tarball = alpine_like(box.tmp / "alpine.tar.gz")
    box.store.import_tarball("alpine:3.20.3", tarball)
    code, out = box(["sh", "-c", "cat /etc/alpine-release; ls /dev | wc -l"],
                    image="alpine:3.20.3")
    assert code == 0 and out.split() == ["3.20.3", "13"]
