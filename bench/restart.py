"""A restarted daemon's catch-up, with checkpoints and without, after N events of history.

    .venv/bin/python -m bench.restart [--events 100000]

A three-host lab appends N events through the API (batches of 1,000: networks created
and removed, the issue's workload), then host 3's daemon is stopped and started
again; the time from its start to its API answering (it answers once its state has
caught up with the log's head) and its RSS then are measured.  Ours:
``--checkpoint-every 10000`` (the default); anchor, the same run of the lab with
``--checkpoint-every 0``: the state replayed from seq 1, as before checkpoints.  The
dqlite database still holds every record (archiving is not built yet), so RSS is
not expected to follow.
"""

from __future__ import annotations

import argparse
import json
import time

from bench._util import Figure, append_churn, machine, table
from lab import Lab


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def once(events: int, every: int) -> tuple[float, float, int]:
    with Lab(3, daemon_args=("--checkpoint-every", str(every))) as lab:
        lab.start_all()
        append_churn(lab, 1, events)
        head = json.loads(lab.cli(1, "status", "--json").stdout)["head"]
        lab.stop(3)
        started = time.perf_counter()
        lab.start(3)
        took = time.perf_counter() - started
        applied = json.loads(lab.cli(3, "status", "--json").stdout)["applied"]
        assert applied >= head, (applied, head)
        return took, _rss_mib(lab.host(3).proc.pid), head


def run(events: int = 100_000) -> tuple[str, list[Figure]]:
    ours = once(events, 10_000)
    anchor = once(events, 0)
    rows = [["--checkpoint-every 10000", f"{ours[0]:.2f}", f"{ours[1]:.1f}", ours[2]],
            ["--checkpoint-every 0 (anchor: from seq 1)", f"{anchor[0]:.2f}",
             f"{anchor[1]:.1f}", anchor[2]]]
    text = (f"restart: {events:,} events of history, 3 hosts, host 3 restarted; {machine()}\n"
            + table(["daemon", "start → caught up, s", "RSS MiB", "log head"], rows))
    return text, [Figure(f"restart after {events:,} events → caught up",
                         f"{ours[0]:.2f} s", f"from seq 1 {anchor[0]:.2f} s",
                         f"{ours[0] / anchor[0]:.2f}×", "≤ 1 s (at 1 M)", ours[0] <= 1.0),
                  Figure(f"daemon RSS after {events:,} events", f"{ours[1]:.1f} MiB",
                         f"from seq 1 {anchor[1]:.1f} MiB", f"{ours[1] / anchor[1]:.2f}×",
                         "≤ 80 MiB (at 1 M)", ours[1] <= 80)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    print(run(args.events)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
