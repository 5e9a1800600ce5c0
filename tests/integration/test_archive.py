"""The archive (daemon/archive.py): the leader compacts the log's database, and nothing
is lost — ``events`` and ``replay --until`` give what they gave before, a host that was
down across the compaction (its checkpoint spoilt too) and a host that joins after it
start from a member's checkpoint, and a segment no host has is a clear error."""

import json
import os

import pytest

from tests.integration.helpers import module_lab, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

EVERY, RETAIN = 100, 200


def churn(lab, tmp_path, name: str, pairs: int) -> None:
    """``pairs`` networks created and removed, in one batch from h1."""
    lines = []
    for i in range(pairs):
        cidr = f"198.18.{i // 16 % 256}.{i % 16 * 16}/28"
        lines += [json.dumps({"type": "NetworkCreated", "data": {"name": f"{name}{i}",
                                                                 "cidr": cidr}}),
                  json.dumps({"type": "NetworkRemoved", "data": {"name": f"{name}{i}"}})]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    lab.cli(1, "submit-event", "--file", str(path))


def status(lab, n) -> dict:
    return json.loads(lab.cli(n, "status", "--json").stdout)


def events(lab, n) -> list[str]:
    return lab.cli(n, "events", "--json").stdout.splitlines()


def test_compaction_loses_nothing_and_late_hosts_start_from_a_members_checkpoint(tmp_path):
    with module_lab(4, "archive", daemon_args=("--checkpoint-every", str(EVERY),
                                               "--retain", str(RETAIN))) as lab:
        for n in (1, 2, 3):
            lab.start(n)
        lab.wait_formed(hosts=3)
        lab.cli(1, "network", "create", "198.19.7.0/24", "--name", "keep")
        churn(lab, tmp_path, "a", 500)
        wait_for(lambda: status(lab, 3)["applied"] >= status(lab, 1)["head"])
        assert status(lab, 1)["first"] == 1, "control: nothing compacted yet"
        before_events = events(lab, 1)
        before_replay = lab.cli(1, "replay", "--until", "150", "--json").stdout
        lab.stop(3)  # down across the compaction, its newest checkpoint at seq 1000

        churn(lab, tmp_path, "b", 500)
        churn(lab, tmp_path, "c", 500)
        def window() -> int:
            now = status(lab, 1)
            return now["head"] - now["first"] + 1

        wait_for(lambda: window() < RETAIN + 2 * EVERY + 50, timeout=30)  # a round or two
        now = status(lab, 1)
        assert now["first"] > 2000, "the database holds the retention window, not the history"

        after = events(lab, 1)
        assert after[:len(before_events)] == before_events, "archived records as they were"
        assert [json.loads(e)["seq"] for e in after] == list(range(1, now["head"] + 1))
        assert lab.cli(1, "replay", "--until", "150", "--json").stdout == before_replay

        # h3's own checkpoints are spoilt: it must take a member's, checked by the log.
        cp_dir = os.path.join(lab.host(3).data_dir, "checkpoints")
        for name in os.listdir(cp_dir):
            with open(os.path.join(cp_dir, name), "r+b") as f:
                f.write(b"spoilt")
        since = lab.log_size(3)
        lab.start(3)
        said = lab.log(3, since)
        assert "checkpoint at seq 1000 not used" in said  # spoilt, and its vouch archived
        assert "are archived: starting from the checkpoint at seq" in said
        assert status(lab, 3)["applied"] >= now["head"]
        assert lab.cli(3, "network", "ls").stdout == lab.cli(1, "network", "ls").stdout
        # Its archive lacks the segments made while it was away: fetched from members.
        assert events(lab, 3)[:len(after)] == after
        assert "fetched" in lab.log(3, since)

        # Another --checkpoint-every than the log's: refused at the door, one line.
        since = lab.log_size(4)
        lab.start(4, wait=False, extra=("--checkpoint-every", str(2 * EVERY)))
        assert lab.host(4).proc.wait(60) != 0
        assert f"--checkpoint-every {2 * EVERY} is not this cluster's: its log records " \
            f"{EVERY}" in lab.log(4, since)
        assert "Traceback" not in lab.log(4, since)
        assert "h4" not in lab.cli(1, "nodes").stdout, "nothing appended"
        lab.stop(4)
        lab.stop(2)  # and a member restarted with another one stops after catching up
        since = lab.log_size(2)
        lab.start(2, wait=False, extra=("--checkpoint-every", str(2 * EVERY)))
        assert lab.host(2).proc.wait(60) != 0
        assert f"--checkpoint-every {2 * EVERY} is not this cluster's" in lab.log(2, since)
        lab.stop(2)
        lab.start(2)
        lab.start(4)  # joins after the compaction: a member's checkpoint, then the tail
        assert lab.cli(4, "network", "ls").stdout == lab.cli(1, "network", "ls").stdout
        assert lab.cli(4, "replay", "--until", "150", "--json").stdout == before_replay

        # The leader lacks segments the next compaction needs: it makes them from the
        # database first (and so never lets go of records no segment holds).
        head = status(lab, 1)["head"]
        lacking = [name for name in os.listdir(os.path.join(lab.host(1).data_dir, "archive"))
                   if int(name.split("-")[0]) >= status(lab, 1)["first"]]
        assert lacking, "control: segments not yet compacted"
        for name in lacking:
            os.unlink(os.path.join(lab.host(1).data_dir, "archive", name))
        since = lab.log_size(1)
        churn(lab, tmp_path, "d", 500)
        wait_for(lambda: status(lab, 1)["first"] > head, timeout=30)
        assert "made from the database" in lab.log(1, since)
        assert set(lacking) <= set(os.listdir(os.path.join(lab.host(1).data_dir, "archive")))
        assert [json.loads(e)["seq"] for e in events(lab, 2)] == \
            list(range(1, status(lab, 1)["head"] + 1))

        # A segment no host has: a one-line error naming its seqs, and nothing else said.
        for n in (1, 2, 3, 4):
            os.unlink(os.path.join(lab.host(n).data_dir, "archive", "101-200"))
        r = lab.cli(1, "events", "--json", check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].endswith(
            "seqs 101-200 are archived, and neither this host nor a member has their "
            "segment: h2: host h2 has no segment ending at seq 200; h3: host h3 has no "
            "segment ending at seq 200; h4: host h4 has no segment ending at seq 200"), \
            r.stderr
        assert len(r.stdout.splitlines()) == 100, "the records before it, and none after"
