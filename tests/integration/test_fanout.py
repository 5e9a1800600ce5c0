"""The log's fan-out (daemon/fanout.py) on real daemons: a host that is neither the
leader nor a relay follows a relay, not the leader; its relay killed mid-stream, it
takes the other relay from where it stopped, and applies every record exactly once."""

import json
import threading
import time

import pytest

from tests.integration.helpers import leader_host, module_lab, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

BATCHES, PER_BATCH = 20, 30


def status(lab, n) -> dict:
    return json.loads(lab.cli(n, "status", "--json").stdout)


def networks(lab, n) -> list[str]:
    return sorted(net["name"] for net in json.loads(lab.cli(n, "network", "ls",
                                                            "--json").stdout))


def test_a_follower_takes_the_other_relay_when_its_relay_dies_and_misses_nothing(tmp_path):
    # --suspect-after 3: the fence at 1.5 s, which a follower's answers must keep ahead of
    with module_lab(4, "fanout", daemon_args=("--relays", "2", "--suspect-after", "3")) as lab:
        lab.start_all()
        lab.wait_formed(hosts=4)
        leader = leader_host(lab, 1)
        names = {h.name: h.number for h in lab.hosts}

        def feeds() -> dict[int, str]:
            return {h.number: status(lab, h.number)["feed"] for h in lab.hosts}

        wait_for(lambda: sum(f != "leader" for f in feeds().values()) == 1, timeout=30)
        follower, relay = next((n, names[f]) for n, f in feeds().items() if f != "leader")
        assert follower != leader and relay != leader
        others = {h.number for h in lab.hosts} - {leader, follower, relay}
        assert all(feeds()[n] == "leader" for n in (leader, relay, *others)), \
            "the leader and both relays read the leader"

        def append() -> None:  # a stream of records from the leader's host
            for b in range(BATCHES):
                path = tmp_path / f"batch{b}.jsonl"
                path.write_text("".join(json.dumps(
                    {"type": "NetworkCreated", "id": f"fanout-{b}-{i}", "data": {
                        "name": f"n{b}-{i}", "cidr": f"198.18.{b}.{i * 8}/29"}}) + "\n"
                    for i in range(PER_BATCH)))
                try:
                    lab.cli(leader, "submit-event", "--file", str(path))
                except Exception as exc:  # noqa: BLE001 -- the test says so
                    failed.append(exc)
                time.sleep(0.2)  # a stream, not one burst

        failed: list = []
        since = lab.log_size(follower)
        time.sleep(4)  # a quiet log: only the relay's keepalives reach the follower
        assert "the log has not answered" not in lab.log(follower, since), \
            "a follower that hears its relay is not fenced"
        for i in range(3):  # its own appends, applied before its stream brings them
            lab.cli(follower, "network", "create", f"198.19.{i}.0/24", "--name", f"own{i}")
        assert status(lab, follower)["feed"] == lab.host(relay).name

        base = status(lab, leader)["head"]
        appending = threading.Thread(target=append)
        appending.start()
        wait_for(lambda: status(lab, follower)["applied"] >= base + 3 * PER_BATCH, timeout=30)
        lab.kill(relay)
        assert appending.is_alive(), "killed mid-stream"
        appending.join()
        assert not failed, failed

        other, = others
        dead, alive = lab.host(relay).name, lab.host(other).name
        # At once the other relay; once the leader suspects the dead one (3 s), the relays
        # are the joined members, and the follower may be one itself: the leader then.
        wait_for(lambda: f"dropped relay {dead} " in lab.log(follower), timeout=30)
        dropped = next(line for line in lab.log(follower).splitlines()
                       if f"dropped relay {dead} " in line)
        assert dropped.endswith(f"reading from {alive}"), dropped
        wait_for(lambda: status(lab, follower)["feed"] in (alive, "leader"), timeout=30)
        head = status(lab, leader)["head"]
        wait_for(lambda: status(lab, follower)["applied"] >= head, timeout=30)
        assert networks(lab, follower) == networks(lab, leader), \
            "every record applied: none skipped"
        assert len(networks(lab, follower)) == BATCHES * PER_BATCH + 3
        assert "Traceback" not in lab.log(follower)
