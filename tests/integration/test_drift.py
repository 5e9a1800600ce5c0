"""Drift: devices and entries changed by hand come back, and the containers with them.

A removal is noticed through rtnetlink (kernel/watch.py) and repaired by the
overlay or runtime actor at once: the first test shows it with the periodic
comparison turned off (``--reconcile-every 0``), so nothing else could have
put them back.  A changed entry is no removal; the periodic comparison finds
it (the second test; ``test_check.py`` shows it staying wrong, and named by
``replay --check``, while that comparison is off).  Each test prints how long
each repair took (docs/RELIABILITY.md's figures come from here).
"""

import json
import subprocess
import time

import pytest

from cantainer.kernel import names
from tests.integration.helpers import wait_for
from tests.integration.test_overlay import VNI, kernel

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"


def sh(lab, n, *argv):
    subprocess.run(["ip", "netns", "exec", lab.host(n).netns, *argv], check=True,
                   capture_output=True)


def reaches(lab, n, name, ip):
    return lab.cli(n, "exec", name, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def two_containers(lab):
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "a", "busybox", "sleep", "100000")
    lab.cli(2, "run", "-d", "-n", NET, "--name", "b", "busybox", "sleep", "100000")
    a, b = (json.loads(lab.cli(1, "inspect", name).stdout) for name in ("a", "b"))
    wait_for(lambda: reaches(lab, 1, "a", b["ip"]))
    return a, b


def timed(restored, what, delete, back, timeout=10.0):
    delete()
    started = time.monotonic()
    wait_for(back, timeout=timeout, interval=0.01)
    restored[what] = time.monotonic() - started


def test_removed_entries_veth_and_bridge_come_back_through_rtnetlink_alone(make_lab):
    lab = make_lab(2, daemon_args=("--reconcile-every", "0"))
    a, b = two_containers(lab)
    vxlan, bridge, veth = names.vxlan(VNI), names.bridge(VNI), names.veth(a["id"])
    restored = {}
    timed(restored, "fdb entry",
          lambda: sh(lab, 1, "bridge", "fdb", "del", b["mac"], "dev", vxlan, "dst",
                     lab.host(2).address),
          lambda: kernel(lab, 1)[VNI].fdb.get(b["mac"]) == lab.host(2).address)
    timed(restored, "neighbour entry",
          lambda: sh(lab, 1, "ip", "neigh", "del", b["ip"], "dev", vxlan),
          lambda: kernel(lab, 1)[VNI].neigh.get(b["ip"]) == b["mac"])
    timed(restored, "container's veth", lambda: sh(lab, 1, "ip", "link", "del", veth),
          lambda: reaches(lab, 1, "a", b["ip"]))
    timed(restored, "veth taken out of its bridge",
          lambda: sh(lab, 1, "ip", "link", "set", veth, "nomaster"),
          lambda: reaches(lab, 1, "a", b["ip"]))
    timed(restored, "bridge", lambda: sh(lab, 1, "ip", "link", "del", bridge),
          lambda: reaches(lab, 1, "a", b["ip"]) and reaches(lab, 2, "b", a["ip"]))
    print("FIGURES drift: " + ", ".join(f"{what} {s * 1000:.0f} ms" for what, s in restored.items()))
    for n in (1, 2):
        assert lab.cli(n, "replay", "--check", check=False).returncode == 0


def test_a_changed_entry_is_put_right_by_the_periodic_comparison(make_lab):
    lab = make_lab(2, daemon_args=("--reconcile-every", "2"))
    a, b = two_containers(lab)
    restored = {}
    timed(restored, "fdb entry pointed elsewhere",
          lambda: sh(lab, 1, "bridge", "fdb", "replace", b["mac"], "dev", names.vxlan(VNI),
                     "dst", "198.51.100.99"),
          lambda: kernel(lab, 1)[VNI].fdb.get(b["mac"]) == lab.host(2).address)
    print("FIGURES drift: " + ", ".join(f"{what} {s * 1000:.0f} ms" for what, s in restored.items()))
    assert reaches(lab, 1, "a", b["ip"])
    assert lab.cli(1, "replay", "--check", check=False).returncode == 0
