"""Where an append's time goes with TLS: the same batch-1 append from the Raft leader's
host and from a follower's, through the API and as raw dqlite-client INSERTs.

    .venv/bin/python -m bench.append_paths [--reps N]

From the leader's host, an API append reaches the node through its own abstract
socket (no TLS): what is left over plaintext is Raft's round trip to a follower,
which crosses the TLS relays twice each way (trust/relay.c).  From a
follower's host, the request and the answer cross both hosts' relays too.  The
difference of the two rows is what the client's hop costs; the leader's row
against the plaintext build (bench.trust) is what Raft's hops cost.  A
diagnostic for bench/gaps.md: it has no target of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench import log_append
from bench._util import machine, median, percentile, table
from lab import Lab


def run(reps: int = 60) -> str:
    rows = []
    with Lab(3) as lab:
        lab.start_all()
        status = lab.call(1, {"op": "status"})["status"]
        by_address = {h.dqlite_address: h.number for h in lab.hosts}
        leader = by_address[status["leader"]]
        follower = next(n for n in (1, 2, 3) if n != leader)
        for role, n in (("leader", leader), ("follower", follower)):
            times = log_append.bench_ways(lab, 1, reps, host=n, ways=("raw", "api"))
            api, raw = times["api"], times["raw"]
            ms = lambda ts: (f"{median(ts) * 1000:.2f} / {statistics.mean(ts) * 1000:.2f} / "  # noqa: E731
                             f"{percentile(ts, 99) * 1000:.1f} / {max(ts) * 1000:.1f}")
            rows.append([f"h{n} ({role})", ms(api), ms(raw), f"{len(api) / sum(api):,.0f}",
                         f"{len(raw) / sum(raw):,.0f}"])
    return (f"batch-1 appends from the leader's and a follower's host, {reps} each; "
            f"{machine()}\n" + table(["from", "API ms (median / mean / p99 / max)",
                                      "raw ms (median / mean / p99 / max)", "API ev/s",
                                      "raw ev/s"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (labs of network namespaces)", file=sys.stderr)
        return 1
    print(run(args.reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
