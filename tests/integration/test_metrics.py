"""The Prometheus endpoint (daemon/metrics.py): on 127.0.0.1 by default, never on the
underlay; its numbers are the daemon's own."""

import json
import subprocess
import time

import pytest

from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def scrape(lab, address: str) -> dict[str, float]:
    out = subprocess.run(["ip", "netns", "exec", lab.host(1).netns, "wget", "-q", "-O", "-",
                          "-T", "3", f"http://{address}:9003/metrics"],
                         capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        return {}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in out.stdout.splitlines() if line.startswith("cantainer_")}


def test_metrics_are_served_on_loopback_and_say_what_the_daemon_knows(make_lab):
    lab = make_lab(1)
    lab.start(1)
    lab.cli(1, "run", "-d", "--name", "m", "-n", "198.18.61.0/24", "busybox", "sleep", "60")
    applied = json.loads(lab.cli(1, "status", "--json").stdout)["applied"]
    m = wait_for(lambda: (s := scrape(lab, "127.0.0.1")) and
                 s.get("cantainer_applied_seq", 0) >= applied and s, timeout=10)
    assert m['cantainer_containers{state="running"}'] == 1
    assert m['cantainer_members{state="joined"}'] == 1
    assert m["cantainer_append_seconds_count"] >= 1, "run's append was observed"
    assert m['cantainer_actor_messages_total{actor="runtime"}'] >= 1
    assert m["cantainer_fenced"] == 0 and m["cantainer_log_read_age_seconds"] < 5
    assert scrape(lab, lab.host(1).address) == {}, "not on the underlay"
    lab.cli(1, "rm", "-f", "m")
    time.sleep(1.5)
    assert 'cantainer_containers{state="running"}' not in scrape(lab, "127.0.0.1")
