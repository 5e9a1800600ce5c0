"""Drift: devices and entries deleted by hand come back, and the containers with them.

Each deletion is noticed through rtnetlink (kernel/watch.py) and repaired by
the overlay or runtime actor; the test prints how long each took (the
figures in docs/RELIABILITY.md come from here) and fails past a generous
bound, which only a missing repair reaches.
"""

import json
import subprocess
import time

import pytest

from cantainer.kernel.container_net import host_veth
from tests.integration.helpers import wait_for
from tests.integration.test_overlay import VNI, kernel

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"
BOUND = 15.0  # seconds: the periodic full reconcile runs every 10 s


def sh(lab, n, *argv):
    subprocess.run(["ip", "netns", "exec", lab.host(n).netns, *argv], check=True,
                   capture_output=True)


def reaches(lab, n, name, ip):
    return lab.cli(n, "exec", name, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


def test_hand_deleted_entries_veth_and_bridge_are_restored(make_lab):
    lab = make_lab(2)
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "a", "busybox", "sleep", "100000")
    lab.cli(2, "run", "-d", "-n", NET, "--name", "b", "busybox", "sleep", "100000")
    a, b = (json.loads(lab.cli(1, "inspect", name).stdout) for name in ("a", "b"))
    wait_for(lambda: reaches(lab, 1, "a", b["ip"]))
    vxlan, bridge, veth = f"ctvx{VNI}", f"ctbr{VNI}", host_veth(a['id'])
    restored = {}

    def timed(what, delete, back):
        delete()
        started = time.monotonic()
        wait_for(back, timeout=BOUND, interval=0.01)
        restored[what] = time.monotonic() - started

    timed("fdb entry",
          lambda: sh(lab, 1, "bridge", "fdb", "del", b["mac"], "dev", vxlan, "dst",
                     lab.host(2).address),
          lambda: b["mac"] in kernel(lab, 1)[VNI].fdb)
    timed("neighbour entry",
          lambda: sh(lab, 1, "ip", "neigh", "del", b["ip"], "dev", vxlan),
          lambda: b["ip"] in kernel(lab, 1)[VNI].neigh)
    timed("fdb entry pointed elsewhere",  # no removal to notice: the periodic check's
          lambda: sh(lab, 1, "bridge", "fdb", "replace", b["mac"], "dev", vxlan, "dst",
                     "198.51.100.99"),
          lambda: kernel(lab, 1)[VNI].fdb.get(b["mac"]) == lab.host(2).address)
    timed("container's veth", lambda: sh(lab, 1, "ip", "link", "del", veth),
          lambda: reaches(lab, 1, "a", b["ip"]))
    timed("bridge", lambda: sh(lab, 1, "ip", "link", "del", bridge),
          lambda: reaches(lab, 1, "a", b["ip"]) and reaches(lab, 2, "b", a["ip"]))
    print("restored in: " + ", ".join(f"{what} {s * 1000:.0f} ms" for what, s in restored.items()))
    assert lab.cli(1, "replay", "--check", check=False).returncode == 0
    assert lab.cli(2, "replay", "--check", check=False).returncode == 0
