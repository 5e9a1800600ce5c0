"""Checkpoints (daemon/checkpoints.py): a restarted daemon starts from the newest one
the log vouches for, and from seq 1 when none is good; the state is right either way."""

import json
import os

import pytest

from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

EVERY = 100


def append_networks(lab, tmp_path, first: int, count: int) -> None:
    lines = [json.dumps({"type": "NetworkCreated",
                         "data": {"name": f"n{i}", "cidr": f"198.18.{i % 256}.{(i // 256) * 16}/28"}})
             for i in range(first, first + count)]
    lines += [json.dumps({"type": "NetworkRemoved", "data": {"name": f"n{i}"}})
              for i in range(first, first + count, 3)]
    path = tmp_path / f"batch{first}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    lab.cli(1, "submit-event", "--file", str(path))


def vouched(lab) -> list[int]:
    return [json.loads(line)["data"]["seq"] for line in
            lab.cli(1, "events", "--json", "--type", "CheckpointTaken").stdout.splitlines()]


def restart(lab) -> str:
    since = lab.log_size(1)
    lab.stop(1)
    lab.start(1)
    return lab.log(1, since)


def test_a_restart_starts_from_a_vouched_checkpoint_and_never_from_a_bad_one(make_lab,
                                                                            tmp_path):
    lab = make_lab(1, daemon_args=("--checkpoint-every", str(EVERY)))
    lab.start(1)
    append_networks(lab, tmp_path, 0, 120)
    append_networks(lab, tmp_path, 120, 120)
    wait_for(lambda: len(vouched(lab)) >= 2, timeout=30)  # the leader's, each once
    seqs = vouched(lab)
    assert seqs == sorted(set(seqs)) and all(s % EVERY == 0 for s in seqs)
    folder = os.path.join(lab.host(1).data_dir, "checkpoints")
    saved = sorted(map(int, os.listdir(folder)))
    assert saved == seqs[-2:], "the two newest kept"
    assert all(oct(os.stat(os.path.join(folder, str(s))).st_mode & 0o777) == "0o600"
               for s in saved)
    truth = lab.cli(1, "network", "ls", "--json").stdout
    head = json.loads(lab.cli(1, "status", "--json").stdout)["head"]

    said = restart(lab)
    assert f"started from the checkpoint at seq {saved[-1]}" in said
    assert lab.cli(1, "network", "ls", "--json").stdout == truth

    # The newest spoilt: passed over for the one before it.
    with open(os.path.join(folder, str(saved[-1])), "r+b") as f:
        f.seek(40)
        f.write(b"spoilt")
    said = restart(lab)
    assert f"checkpoint at seq {saved[-1]} not used: its sha256" in said
    assert f"started from the checkpoint at seq {saved[-2]}" in said
    assert lab.cli(1, "network", "ls", "--json").stdout == truth

    # None good (one spoilt, one missing): the log from seq 1, with a warning.
    os.unlink(os.path.join(folder, str(saved[-2])))
    with open(os.path.join(folder, str(saved[-1])), "r+b") as f:
        f.seek(40)
        f.write(b"spoilt")
    said = restart(lab)
    assert "no checkpoint the log vouches for: replaying the log from seq 1" in said
    assert lab.cli(1, "network", "ls", "--json").stdout == truth
    assert json.loads(lab.cli(1, "status", "--json").stdout)["applied"] >= head

    # One the log has not vouched for (a seq it never recorded): not trusted either.
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    with open(os.path.join(folder, "999999"), "wb") as f:
        f.write(b"\x93\x01")
    said = restart(lab)
    assert "checkpoint at seq 999999 not used: the log has no CheckpointTaken" in said
    assert lab.cli(1, "network", "ls", "--json").stdout == truth
