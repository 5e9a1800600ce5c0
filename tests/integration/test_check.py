"""``cantainer replay --check``: this host's kernel against the log, every actor's part
(the firewall's, the overlay's, the runtime's).

The daemons run with ``--reconcile-every 0`` (no periodic comparison), so a
change that rtnetlink does not report as a removal stays until a restart, and
the check must name it.  Each kind of difference is made by hand, one at a
time; the check names each one and exits 1; a restarted daemon repairs them
all and the check is clean again.
"""

import os
import subprocess

import pytest

from cantainer.kernel import names
from tests.integration.helpers import inspect, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"
VNI = 4096


def check(lab, n):
    """(exit code, differences) of ``replay --check`` on host n."""
    result = lab.cli(n, "replay", "--check", check=False)
    return result.returncode, [line for line in result.stdout.splitlines() if line]


def sh(lab, n, *argv):
    subprocess.run(["ip", "netns", "exec", lab.host(n).netns, *argv], check=True,
                   capture_output=True)


def test_check_names_every_kind_of_difference(make_lab):
    lab = make_lab(2, daemon_args=("--reconcile-every", "0"))
    lab.start_all()
    lab.cli(1, "run", "-d", "-n", NET, "--name", "a", "busybox", "sleep", "600")
    lab.cli(2, "run", "-d", "-n", NET, "--name", "b", "busybox", "sleep", "600")
    a = inspect(lab, 1, "a")
    assert check(lab, 1) == (0, []) and check(lab, 2) == (0, [])
    vx, br, veth = names.vxlan(VNI), names.bridge(VNI), names.veth(a["id"])
    stray_state = os.path.join(lab.host(1).data_dir, "containers", "0000000000ab")

    cases = [  # (what, how, the difference it must show)
        ("an FDB entry added by hand",
         lambda: sh(lab, 1, "bridge", "fdb", "append", "02:42:c6:12:00:63", "dev", vx,
                    "dst", "198.51.100.99"),
         f"del fdb 02:42:c6:12:00:63 dst 198.51.100.99 dev {vx}"),
        ("a neighbour entry added by hand",
         lambda: sh(lab, 1, "ip", "neigh", "add", "198.18.0.99", "lladdr",
                    "02:42:c6:12:00:63", "dev", vx, "nud", "permanent"),
         f"del neigh 198.18.0.99 lladdr 02:42:c6:12:00:63 dev {vx}"),
        ("the VXLAN device's MTU changed",
         lambda: sh(lab, 1, "ip", "link", "set", vx, "mtu", "1400"),
         f"set vxlan {vx} mtu 1450"),
        ("the bridge down",
         lambda: sh(lab, 1, "ip", "link", "set", br, "down"),
         f"set bridge {br} up"),
        ("a container's veth down",  # out of its bridge is a removal: test_drift.py
         lambda: sh(lab, 1, "ip", "link", "set", veth, "down"),
         f"container a: attach its veth {veth} to {br}, up"),
        ("a veth of no container",
         lambda: sh(lab, 1, "ip", "link", "add", "vh0000000000aa", "type", "veth", "peer",
                    "name", "vp0000000000aa"),
         "remove veth vh0000000000aa (no container of this host)"),
        ("a container's namespace unnamed",
         lambda: subprocess.run(["ip", "netns", "del", names.netns(a["id"])], check=True),
         f"container a: name its network namespace {names.netns(a['id'])} again"),
        ("a state directory of no container",
         lambda: os.mkdir(stray_state),
         "remove the state of container 0000000000ab (not in the log)"),
        ("a member's address taken out of the VXLAN table",
         lambda: sh(lab, 1, "nft", "delete", "element", "inet", "cantainer", "members",
                    f"{{ {lab.host(2).address} }}"),
         f"allow VXLAN from {lab.host(2).address}"),
        ("an outsider's address put in it",
         lambda: sh(lab, 1, "nft", "add", "element", "inet", "cantainer", "members",
                    "{ 198.51.100.99 }"),
         "refuse VXLAN from 198.51.100.99"),
    ]
    for what, change, expected in cases:
        change()
        code, differences = check(lab, 1)
        assert code == 1 and any(expected in d for d in differences), (what, differences)
    code, differences = check(lab, 1)
    assert len(differences) == len(cases), differences
    print(f"FIGURES check: {len(cases)} kinds of difference made, "
          f"{sum(any(e in d for d in differences) for _, _, e in cases)} named")
    assert check(lab, 2) == (0, []), "the other host is untouched"

    # A restart's full reconcile repairs every one of them (nothing else would:
    # none of them is a removal rtnetlink reports, and the periodic check is off).
    lab.stop(1)
    lab.start(1)
    wait_for(lambda: check(lab, 1) == (0, []), timeout=30, interval=1)
    assert not os.path.exists(stray_state)
    assert inspect(lab, 2, "a")["pid"] == a["pid"], "the container was adopted, not replaced"
    reply = lab.cli(2, "exec", "b", "ping", "-c", "1", "-W", "2", a["ip"], check=False)
    assert reply.returncode == 0, reply
