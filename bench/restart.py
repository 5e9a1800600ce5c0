"""A daemon's memory and restart after N events of history, with checkpoints and the
archive, and without.

    .venv/bin/python -m bench.restart [--events 1000000]

A three-host lab appends N events through the API (batches of 1,000: networks created
and removed, the issue's workload).  Host 3's RSS is read once the leader has
compacted the log (its database then holds ``--retain`` records behind the head),
then its daemon is stopped and started again: the time from its start to its API
answering (it answers once its state has caught up with the log's head) and its RSS
then.  Then a five-host lab (three voters, a stand-by, a spare) after the same
history: each daemon's RSS by its Raft role.  Ours: the defaults (``--checkpoint-every 10000 --retain 20000``); anchor, the
same lab with ``--checkpoint-every 0``: no checkpoints, no archive, the state
replayed from seq 1 and every record in the database, as before issue 17.
"""

from __future__ import annotations

import argparse
import json
import time

from bench._util import Figure, append_churn, machine, table
from cantainer.config import RETAIN
from lab import Lab


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _status(lab, n: int) -> dict:
    return json.loads(lab.cli(n, "status", "--json").stdout)


def once(events: int, every: int) -> tuple[float, float, int, float, int]:
    """Restart time, RSS after it, head, RSS before it, the oldest record in the database."""
    with Lab(3, daemon_args=("--checkpoint-every", str(every))) as lab:  # --retain: default
        lab.start_all()
        append_churn(lab, 1, events)
        head = _status(lab, 1)["head"]
        deadline = time.monotonic() + 60
        while every and _status(lab, 1)["first"] < head - RETAIN - 2 * every \
                and time.monotonic() < deadline:
            time.sleep(0.5)  # the leader compacts within a few seconds
        while _status(lab, 3)["applied"] < head:
            time.sleep(0.1)
        first = _status(lab, 3)["first"]
        running = _rss_mib(lab.host(3).proc.pid)
        lab.stop(3)
        started = time.perf_counter()
        lab.start(3)
        took = time.perf_counter() - started
        applied = json.loads(lab.cli(3, "status", "--json").stdout)["applied"]
        assert applied >= head, (applied, head)
        return took, _rss_mib(lab.host(3).proc.pid), head, running, first


def by_role(events: int) -> list[tuple[str, str, float]]:
    """(host, Raft role, RSS MiB) of each daemon of a five-host lab (three voters, one
    stand-by, one spare) after ``events`` events, the defaults: only voters and
    stand-bys hold the Raft log and the database; in a large cluster almost every
    host is a spare."""
    with Lab(5) as lab:
        lab.start_all()
        lab.wait_formed()
        append_churn(lab, 1, events)
        head = _status(lab, 1)["head"]
        deadline = time.monotonic() + 60
        while _status(lab, 1)["first"] < head - RETAIN - 20_000 and time.monotonic() < deadline:
            time.sleep(0.5)
        for n in range(1, 6):
            while _status(lab, n)["applied"] < head:
                time.sleep(0.1)
        roles = lab._roles_seen_by(lab.host(1))
        return [(h.name, roles.get(h.dqlite_address, "?"), _rss_mib(h.proc.pid))
                for h in lab.hosts]


def run(events: int = 1_000_000) -> tuple[str, list[Figure]]:
    ours = once(events, 10_000)
    anchor = once(events, 0)
    roles = by_role(events)
    rows = [[name, f"{r[0]:.2f}", f"{r[3]:.1f}", f"{r[1]:.1f}", r[2], r[2] - r[4] + 1]
            for name, r in (("defaults (checkpoints, archive)", ours),
                            ("--checkpoint-every 0 (anchor: from seq 1)", anchor))]
    text = (f"restart: {events:,} events of history, 3 hosts, host 3 restarted; {machine()}\n"
            + table(["daemon", "start → caught up, s", "RSS MiB running",
                     "RSS MiB restarted", "log head", "records in the database"], rows)
            + f"\nfive hosts, {events:,} events, the defaults: RSS of each daemon by its role\n"
            + table(["host", "Raft role", "RSS MiB"], [[n, r, f"{m:.1f}"] for n, r, m in roles]))
    rss = max(ours[1], ours[3])
    return text, [Figure(f"restart after {events:,} events → caught up",
                         f"{ours[0]:.2f} s", f"from seq 1 {anchor[0]:.2f} s",
                         f"{ours[0] / anchor[0]:.2f}×", "≤ 1 s (at 1 M)", ours[0] <= 1.0),
                  Figure(f"daemon RSS after {events:,} events (running, restarted: the more)",
                         f"{rss:.1f} MiB", f"from seq 1 {max(anchor[1], anchor[3]):.1f} MiB",
                         f"{rss / max(anchor[1], anchor[3]):.2f}×", "≤ 80 MiB (at 1 M)",
                         rss <= 80),
                  Figure(f"spare's RSS after {events:,} events (five hosts)",
                         f"{max(m for _, r, m in roles if r == 'spare'):.1f} MiB",
                         f"voters {max(m for _, r, m in roles if r == 'voter'):.1f} MiB",
                         "", "≤ 80 MiB (at 1 M)",
                         max(m for _, r, m in roles if r == 'spare') <= 80)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    print(run(args.events)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
