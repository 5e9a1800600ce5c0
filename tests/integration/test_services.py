"""Services on a 3-host lab: replicas placed by the log, names, the routing mesh,
scaling, removal, and replicas that move when a host is cut off or dies."""

import json
import os
import subprocess
import time
from collections import Counter

import pytest

from cantainer.kernel.statedir import StateDir
from tests.integration.helpers import module_lab, ps, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.44.0/24"
SUSPECT, RESCHEDULE = 3, 2
WEB = ("mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && "
       "exec httpd -f -v -p 80 -h /www")


def figures(name: str, **values) -> None:
    print(f"FIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture(scope="module")
def lab():
    with module_lab(3, "sv", daemon_args=("--suspect-after", str(SUSPECT),
                                         "--reschedule-after", str(RESCHEDULE))) as lab:
        lab.start_all()
        lab.cli(1, "network", "create", NET, "--name", "svc")
        yield lab


def tasks(lab, n, name):
    return json.loads(lab.cli(n, "service", "ps", name, "--json", timeout=10).stdout)


def running_processes(lab, n) -> dict[str, int]:
    """Container id -> pid of each container process alive on host n (from its state
    directories and /proc: what runs, whatever the log says)."""
    out = {}
    data_dir = lab.host(n).data_dir
    for cid in StateDir.ids(data_dir):
        state = StateDir(data_dir, cid)
        pid = state.pid()
        if pid and state.exit_code() is None and os.path.exists(f"/proc/{pid}"):
            out[cid] = pid
    return out


def outsider_get(lab, address: str, port: int) -> str:
    result = subprocess.run(["ip", "netns", "exec", lab.outsider(), "wget", "-q", "-O", "-",
                             "-T", "3", f"http://{address}:{port}/"],
                            capture_output=True, text=True, timeout=10)
    return result.stdout.strip() if result.returncode == 0 else f"failed: {result.stderr}"


def test_replicas_spread_resolve_and_answer_on_every_host(lab):
    started = time.monotonic()
    out = lab.cli(2, "service", "create", "--name", "web", "--replicas", "6", "-n", "svc",
                  "-p", "8080:80", "busybox", "sh", "-c", WEB)
    took = time.monotonic() - started
    assert out.stdout.strip() == "web"
    placed = tasks(lab, 3, "web")
    assert [t["name"] for t in placed] == [f"web.{i}" for i in range(1, 7)]
    assert all(t["state"] == "running" for t in placed), placed
    assert Counter(t["host"] for t in placed) == {"h1": 2, "h2": 2, "h3": 2}
    assert {f"web.{i}" for i in range(1, 7)} <= set(ps(lab, 1)), "replicas show in ps"
    # Each host runs what the log placed on it, and nothing else of the service.
    for n in (1, 2, 3):
        mine = {t["id"] for t in placed if t["host"] == f"h{n}"}
        assert set(running_processes(lab, n)) >= mine

    # web resolves to every replica (round robin), web.2 to one, from any host.
    addresses = {t["ip"] for t in placed}
    for n in (1, 2, 3):
        answer = lab.cli(n, "run", "--rm", "-n", "svc", "busybox", "nslookup", "web").stdout
        assert {line.split()[-1] for line in answer.splitlines()
                if line.startswith("Address:") and "#" not in line and ":53" not in line} \
            == addresses, answer
        # (busybox's wget -T crashes: the lab's run has its own timeout)
        got = lab.cli(n, "run", "--rm", "-n", "svc", "busybox", "wget", "-q", "-O", "-",
                      "http://web/", timeout=20).stdout
        assert got.startswith("hello-from-web."), got
        one = lab.cli(n, "run", "--rm", "-n", "svc", "busybox", "wget", "-q", "-O", "-",
                      "http://web.2/", timeout=20).stdout
        assert one.strip() == "hello-from-web.2"

    # The published port answers on every host's underlay address.
    for h in lab.hosts:
        assert outsider_get(lab, h.address, 8080).startswith("hello-from-web."), h.name
    figures("service-create", replicas=6, seconds=f"{took:.2f}")


def test_the_mesh_reaches_replicas_on_other_hosts_and_keeps_addresses_where_it_can(lab):
    lab.cli(1, "service", "create", "--name", "solo", "--replicas", "1", "-n", "svc",
            "-p", "8081:80", "--constraint", "node.name==h1", "busybox", "sh", "-c", WEB)
    [task] = tasks(lab, 1, "solo")
    assert task["host"] == "h1"
    for h in lab.hosts:  # h2 and h3 have no replica: they send the connection to h1
        assert outsider_get(lab, h.address, 8081) == "hello-from-solo.1", h.name
    log = lab.cli(1, "logs", "solo.1").stdout
    outsider = "198.51.100.66"
    assert f"{outsider}]" in log or f"{outsider}:" in log, "h1's own: the client's address"
    assert lab.host(2).address in log and lab.host(3).address in log, \
        "from the other hosts: masqueraded to their underlay addresses"
    lab.cli(1, "service", "rm", "solo")


def test_scale_up_and_down_and_rm_everywhere(lab):
    lab.cli(1, "service", "create", "--name", "sc", "--replicas", "2", "-n", "svc",
            "-p", "8082:80", "busybox", "sleep", "600")
    lab.cli(3, "service", "scale", "sc=7")
    up = tasks(lab, 1, "sc")
    assert len(up) == 7 and all(t["state"] == "running" for t in up)
    assert max(Counter(t["host"] for t in up).values()) == 3
    gone = {t["id"]: t["host"] for t in up if t["replica"] > 3}
    kept = [t["id"] for t in up if t["replica"] <= 3]
    lab.cli(2, "service", "scale", "sc=3")
    scaled_at = time.monotonic()
    down = tasks(lab, 1, "sc")
    assert [t["id"] for t in down] == kept, "the highest-numbered go; the others stay"
    # At once back up: the new sc.4 may get the old one's address, which keeps it through
    # its stop's grace; the new one starts only once the old one is gone.
    old4 = next(t for t in up if t["replica"] == 4)
    lab.cli(2, "service", "scale", "sc=4")
    new4 = next(t for t in tasks(lab, 1, "sc") if t["replica"] == 4)
    assert new4["id"] != old4["id"] and new4["state"] == "running"
    alive = set().union(*(running_processes(lab, n) for n in (1, 2, 3)))
    assert old4["id"] not in alive or new4["ip"] != old4["ip"], "one address, one container"
    lab.cli(2, "service", "scale", "sc=3")
    for cid, host in gone.items():
        n = int(host[1:])
        wait_for(lambda n=n, cid=cid: cid not in StateDir.ids(lab.host(n).data_dir), timeout=20)
    # sleep as PID 1 ignores SIGTERM: it had its 10 s of grace, then SIGKILL
    assert time.monotonic() - scaled_at >= 9.5

    # One that ends on SIGTERM goes at once: the signal came first.
    lab.cli(1, "service", "create", "--name", "gr", "--replicas", "2", "-n", "svc",
            "busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done")
    [second] = [t for t in tasks(lab, 1, "gr") if t["replica"] == 2]
    lab.cli(1, "service", "scale", "gr=1")
    scaled_at = time.monotonic()
    n = int(second["host"][1:])
    wait_for(lambda: second["id"] not in StateDir.ids(lab.host(n).data_dir), timeout=20)
    assert time.monotonic() - scaled_at < 5
    lab.cli(1, "service", "rm", "gr")
    listed = json.loads(lab.cli(2, "service", "ls", "--json").stdout)
    assert {s["name"]: (s["running"], s["replicas"]) for s in listed}["sc"] == (3, 3)

    lab.cli(3, "service", "rm", "sc")
    for n in (1, 2, 3):
        wait_for(lambda n=n: not set(kept) & set(StateDir.ids(lab.host(n).data_dir)),
                 timeout=20)
        assert not [c for c in ps(lab, n) if c.startswith("sc.")]
    # its names and its port are free again
    lab.cli(1, "run", "-d", "--name", "sc.1", "-n", "svc", "-p", "8082:80", "busybox",
            "sleep", "1")
    lab.cli(1, "rm", "-f", "sc.1")


def test_bad_input_is_refused_in_one_line(lab):
    def refused(n, *args):
        result = lab.cli(n, *args, check=False)
        assert result.returncode != 0, result
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        return result.returncode, result.stderr

    code, err = refused(1, "service", "create", "--name", "x", "--constraint",
                        "node.role==manager", "busybox")
    assert code == 1 and "node.role==manager" in err and "node.name==HOST" in err
    code, err = refused(1, "service", "create", "--name", "x", "--constraint",
                        "node.name==nowhere", "busybox")
    assert code == 3 and "nowhere" in err
    lab.cli(1, "run", "-d", "--name", "holder", "-n", "svc", "-p", "9090:80", "busybox",
            "sleep", "600")
    code, err = refused(2, "service", "create", "--name", "x", "-p", "9090:80", "busybox")
    assert "9090/tcp" in err and "holder" in err
    code, err = refused(1, "service", "create", "--name", "holder", "busybox")
    assert "clashes with container 'holder'" in err
    lab.cli(1, "service", "create", "--name", "px", "-p", "9091:80", "-n", "svc",
            "busybox", "sleep", "600")
    code, err = refused(3, "run", "-d", "--name", "px.9", "-n", "svc", "busybox")
    assert "belongs to service 'px'" in err
    code, err = refused(3, "run", "-d", "-n", "svc", "-p", "9091:80", "busybox")
    assert "service 'px'" in err
    code, err = refused(1, "service", "scale", "nothere=2")
    assert code == 3 and "no service named 'nothere'" in err
    code, err = refused(1, "service", "create", "--name", "a.b", "busybox")
    assert "service name" in err
    code, err = refused(1, "service", "create", "--name", "big", "--replicas", "1001",
                        "busybox")
    assert "1000" in err
    code, err = refused(1, "service", "create", "--name", "noimg", "nosuch:1")
    assert code == 3 and "nosuch:1" in err
    code, err = refused(1, "service", "create", "--name", "dq", "-p", "9000:80", "busybox")
    assert "dqlite on" in err, "the cluster's own ports are not a service's"
    lab.cli(1, "network", "create", "198.18.45.0/24", "--name", "inner", "--internal")
    code, err = refused(1, "service", "create", "--name", "in", "-n", "inner", "-p",
                        "9095:80", "busybox")
    assert "internal" in err
    lab.cli(1, "network", "rm", "inner")

    # More replicas than the constraints allow: pending, shown, not an error loop.
    made = lab.cli(1, "service", "create", "--name", "pin", "--replicas", "2", "-n", "svc",
                   "--constraint", "node.name!=h1", "--constraint", "node.name!=h2",
                   "--constraint", "node.name!=h3", "busybox", "sleep", "600")
    assert made.returncode == 0 and "2 of 2 replicas pending" in made.stderr
    pending = tasks(lab, 2, "pin")
    assert [t["state"] for t in pending] == ["pending", "pending"]
    assert "constraints" in pending[0]["reason"]
    assert "pending" in lab.cli(2, "service", "ps", "pin").stdout
    for name in ("pin", "px"):
        lab.cli(1, "service", "rm", name)
    lab.cli(1, "rm", "-f", "holder")
    assert not [s for s in json.loads(lab.cli(1, "service", "ls", "--json").stdout)
                if s["name"] in ("pin", "px")]


def _moved(lab, name, away_from, asking):
    placed = tasks(lab, asking, name)
    return all(t["host"] not in (None, away_from) and t["state"] == "running"
               for t in placed) and placed


def _watch_the_move(lab, lost: int, old: set[str], deadline: float = 30):
    """(when the last of ``old`` stopped running on host ``lost``, when the first new
    replica's process ran on another host), by their processes, from this process's
    clock: what runs, whatever the log says."""
    others = [n for n in (1, 2, 3) if n != lost]
    before = set().union(*(running_processes(lab, n) for n in others))
    started = time.monotonic()
    killed_at = first_new_at = None
    while time.monotonic() - started < deadline and (killed_at is None or
                                                      first_new_at is None):
        if killed_at is None and not old & set(running_processes(lab, lost)):
            killed_at = time.monotonic()
        if first_new_at is None and \
                set().union(*(running_processes(lab, n) for n in others)) - before:
            first_new_at = time.monotonic()
        time.sleep(0.02)
    assert killed_at is not None and first_new_at is not None, (killed_at, first_new_at)
    return killed_at, first_new_at


def test_a_cut_off_host_stops_its_replicas_before_they_run_elsewhere(lab):
    """The fence: a host whose log reads fail for --suspect-after / 2 kills its replicas;
    the others start them --suspect-after + --reschedule-after after its last heartbeat.
    Two copies of one replica never run at once: measured by their processes."""
    lab.cli(1, "service", "create", "--name", "mv", "--replicas", "6", "-n", "svc",
            "busybox", "sleep", "600")
    placed = tasks(lab, 1, "mv")
    on3 = {t["id"] for t in placed if t["host"] == "h3"}
    assert len(on3) == 2 and set(running_processes(lab, 3)) >= on3
    lab.cut(3)
    cut_at = time.monotonic()
    killed_at, first_new_at = _watch_the_move(lab, 3, on3)
    overlap = killed_at - first_new_at
    assert overlap < 0, f"two copies ran for {overlap:.2f} s"
    wait_for(lambda: _moved(lab, "mv", "h3", 1), timeout=20)
    moved_at = time.monotonic()
    assert moved_at - cut_at <= SUSPECT + RESCHEDULE + 4

    lab.heal(3)
    healed_at = time.monotonic()
    wait_for(lambda: not on3 & set(StateDir.ids(lab.host(3).data_dir)), timeout=20)
    cleaned = time.monotonic() - healed_at
    moved = {t["id"] for t in tasks(lab, 3, "mv")}
    def exactly_six():
        alive = set().union(*(running_processes(lab, n) for n in (1, 2, 3)))
        return len(alive & moved) == 6 and not alive & on3
    wait_for(exactly_six, timeout=20)
    time.sleep(SUSPECT + 1)  # and it stays so
    assert exactly_six()
    figures("service-cut-off", killed_after_s=f"{killed_at - cut_at:.2f}",
            first_new_copy_after_s=f"{first_new_at - cut_at:.2f}",
            all_running_elsewhere_after_s=f"{moved_at - cut_at:.2f}",
            overlap_s=f"{overlap:.2f}", old_copies_removed_after_heal_s=f"{cleaned:.2f}")
    lab.cli(1, "service", "rm", "mv")


def test_a_dead_daemon_s_replicas_end_with_its_lease_before_they_move(lab):
    """Its daemon SIGKILLed and its link cut, the host's containers live on under their
    shims (as they should: stopping is not leaving), but its replicas' lease is no
    longer renewed: their shims kill them before the log starts them elsewhere."""
    lab.cli(1, "service", "create", "--name", "dd", "--replicas", "3", "-n", "svc",
            "busybox", "sleep", "600")
    lab.cli(3, "run", "-d", "--name", "plain3", "-n", "svc", "busybox", "sleep", "600")
    [mine] = [t for t in tasks(lab, 1, "dd") if t["host"] == "h3"]
    plain = ps(lab, 1)["plain3"]["id"]
    lab.kill(3)
    lab.cut(3)
    lost_at = time.monotonic()
    killed_at, first_new_at = _watch_the_move(lab, 3, {mine["id"]})
    assert killed_at - first_new_at < 0, "no two copies"
    assert killed_at - lost_at <= SUSPECT / 2 + 1.5, killed_at - lost_at
    assert plain in running_processes(lab, 3), "a plain container runs on"
    wait_for(lambda: _moved(lab, "dd", "h3", 2), timeout=30, interval=0.1)
    took = time.monotonic() - lost_at
    assert took <= SUSPECT + RESCHEDULE + 4, took
    states = {m["name"]: m["state"] for m in
              json.loads(lab.cli(1, "nodes", "--json").stdout)}
    assert states["h3"] == "down"
    out = open(os.path.join(lab.host(3).data_dir, "containers", mine["id"],
                            "output.log")).read()
    assert "lease on the log" in out

    lab.heal(3)
    lab.start(3)
    wait_for(lambda: {m["name"]: m["state"] for m in json.loads(
        lab.cli(1, "nodes", "--json").stdout)}["h3"] == "joined", timeout=30)
    now = tasks(lab, 3, "dd")
    assert sorted(t["replica"] for t in now) == [1, 2, 3]
    assert mine["id"] not in {t["id"] for t in now}
    assert Counter(t["host"] for t in now)["h3"] == 0, "nothing moves back"
    alive = set().union(*(running_processes(lab, n) for n in (1, 2, 3)))
    assert len(alive & {t["id"] for t in now}) == 3
    figures("service-daemon-dead", replica_killed_by_lease_after_s=f"{killed_at - lost_at:.2f}",
            first_new_copy_after_s=f"{first_new_at - lost_at:.2f}",
            all_running_elsewhere_after_s=f"{took:.2f}",
            suspect_after_s=SUSPECT, reschedule_after_s=RESCHEDULE)
    lab.cli(1, "service", "rm", "dd")
    lab.cli(1, "rm", "-f", "plain3")


def test_an_image_loaded_on_one_host_runs_as_replicas_on_the_others(lab, tmp_path):
    from tests.unit.test_images import alpine_like, docker_save

    with open(alpine_like(tmp_path / "root.tar.gz"), "rb") as f:
        lower = f.read()
    upper = [("srv/", "dir", None), ("srv/msg", "file", "from the image\n"),
             ("etc/.wh.os-release", "file", "")]
    config = {"config": {"Entrypoint": ["/bin/sh", "-c"],
                         "Cmd": ["read m < msg; echo $m $GREETING; "
                                 "test -e /etc/os-release || echo whited-out; "
                                 "exec sleep 600"],
                         "Env": ["GREETING=hello"], "WorkingDir": "/srv"}}
    archive = docker_save(tmp_path / "app.tar", lower=lower, upper=upper, config=config,
                          name="registry.example/app:1")
    assert lab.cli(1, "image", "load", "-i", archive).stdout == "app:1\n"
    listed = {i["name"]: i for i in json.loads(lab.cli(2, "image", "ls", "--json").stdout)}
    assert listed["app"]["hosts"] == ["h1"] and not listed["app"]["here"]

    # Created from h2, which lacks it (it fetches it first, for its config), placed on
    # all three (h3 fetches it when its replica is placed there).
    lab.cli(2, "service", "create", "--name", "app", "--replicas", "3", "-n", "svc", "app:1")
    placed = tasks(lab, 3, "app")
    assert {t["host"] for t in placed} == {"h1", "h2", "h3"}
    assert all(t["state"] == "running" for t in placed), placed
    for t in placed:
        out = wait_for(lambda t=t: lab.cli(1, "logs", t["name"]).stdout, timeout=10)
        assert out == "from the image hello\nwhited-out\n", (t["host"], out)
    listed = {i["name"]: i for i in json.loads(lab.cli(3, "image", "ls", "--json").stdout)}
    assert listed["app"]["hosts"] == ["h1", "h2", "h3"] and listed["app"]["here"]
    assert "fetched from" in lab.log(3)
    lab.cli(1, "service", "rm", "app")

    # A holder whose archive no longer matches the log's digest: refused, never run.
    spoilt = docker_save(tmp_path / "spoilt.tar", lower=lower, upper=upper, config=config,
                         name="spoilt:1")
    lab.cli(1, "image", "load", "-i", spoilt)
    kept = os.path.join(lab.host(1).data_dir, "images", "spoilt", "1", "archive")
    with open(kept, "r+b") as f:
        f.seek(os.path.getsize(kept) // 2)
        f.write(b"spoilt" * 20)
    lab.cli(1, "service", "create", "-d", "--name", "sp", "-n", "svc", "--constraint",
            "node.name==h3", "spoilt:1")
    wait_for(lambda: "not the log's" in lab.log(3), timeout=20)
    [task] = tasks(lab, 1, "sp")
    assert task["host"] == "h3" and task["state"] == "created"
    assert not os.path.isdir(os.path.join(lab.host(3).data_dir, "images", "spoilt"))
    assert not running_processes(lab, 3).keys() & {task["id"]}
    lab.cli(1, "service", "rm", "sp")
    bad = lab.cli(1, "image", "load", "-i", kept, check=False)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
