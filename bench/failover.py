"""Time from SIGKILL of the Raft leader to the next acknowledged append.

    .venv/bin/python -m bench.failover [--reps N]

Each repetition builds a fresh three-host lab, appends once, kills the leader's
daemon with SIGKILL and times ``cantainer submit-event`` on a survivor until it
returns a seq (retried with the same id while it reports no leader).  The anchor is the same with a 5 s election timeout
(``--network-latency-ms 333``), the order of libdqlite's own defaults.
"""

from __future__ import annotations

import argparse
import json
import time

from bench._util import Figure, machine, median, table
from lab import Lab
from cantainer.config import NETWORK_LATENCY_MS


def failover_once(latency_ms: int | None) -> float:
    args = () if latency_ms is None else ("--network-latency-ms", str(latency_ms))
    with Lab(3, daemon_args=args) as lab:
        lab.start_all()
        lab.cli(1, "submit-event", "NetworkCreated", "name=before", "cidr=198.18.0.0/24")
        leader = json.loads(lab.cli(1, "status", "--json").stdout)["leader"]
        dead = next(h.number for h in lab.hosts if h.dqlite_address == leader)
        survivor = 2 if dead == 1 else 1
        lab.kill(dead)
        started = time.perf_counter()
        while True:  # a slow election outlasts one command's retries: retry, same id
            done = lab.cli(survivor, "submit-event", "NetworkCreated", "name=after",
                           "cidr=198.18.1.0/24", "--id", "failover-after", check=False)
            if done.returncode == 0:
                return time.perf_counter() - started
            if time.perf_counter() - started > 60:
                raise SystemExit(f"no append acknowledged 60 s after the kill: {done.stderr}")


def run(reps: int = 5) -> tuple[str, list[Figure]]:
    rows, medians = [], {}
    for label, latency in ((f"cantainerd default ({NETWORK_LATENCY_MS} ms latency)",
                            NETWORK_LATENCY_MS),
                           ("5 s election timeout, latency 333 ms (anchor)", 333)):
        times = [failover_once(latency) for _ in range(reps)]
        medians[latency] = median(times)
        rows.append([label, f"{median(times):.2f}", f"{min(times):.2f}", f"{max(times):.2f}"])
    text = (f"fail-over: SIGKILL of the leader -> next append acknowledged, {reps} runs each; "
            f"{machine()}\n" + table(["Raft timing", "median s", "min s", "max s"], rows))
    return text, [Figure("fail-over: leader SIGKILLed → next acknowledged append (median)",
                         f"{medians[NETWORK_LATENCY_MS]:.2f} s", f"5 s election timeout {medians[333]:.2f} s",
                         f"{medians[NETWORK_LATENCY_MS] / medians[333]:.2f}× anchor", "-", None)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(run(args.reps)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
