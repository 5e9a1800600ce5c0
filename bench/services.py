"""Services on three hosts: create 30 replicas until all run and resolve; a host killed
until all run again.

    .venv/bin/python -m bench.services [--replicas 30] [--reps 3]

Each repetition builds a fresh three-host lab (``--suspect-after 3
--reschedule-after 2``), warms each host (busybox built, a warm shim) and times:

* ``service create --replicas N`` until it returns (every replica running in the
  log), and until a container on each of the three hosts resolves the service's name
  to all N addresses.  Anchor, in the same lab: N containers started the way one
  would without services, ``run -d`` one after another, N/3 on each host.
* the host with a third of the replicas killed (its daemon and containers SIGKILLed,
  its link cut) until ``service ps`` on a survivor shows all N running on the other
  two.  Anchor: ``--suspect-after`` + ``--reschedule-after``, the time the log waits
  before it moves them.
"""

from __future__ import annotations

import argparse
import json
import time

from bench._util import Figure, machine, median, table
from lab import Lab

SUSPECT, RESCHEDULE = 3.0, 2.0
NET = "198.18.48.0/22"


def _addresses(lab, n: int, name: str) -> int:
    out = lab.cli(n, "run", "--rm", "-n", "bench", "busybox", "nslookup", name,
                  check=False).stdout
    return sum(1 for line in out.splitlines()
               if line.startswith("Address:") and ":53" not in line)


def _all_running(lab, n: int, name: str, replicas: int, away: str | None = None) -> bool:
    try:
        tasks = json.loads(lab.cli(n, "service", "ps", name, "--json", check=False,
                                   timeout=10).stdout or "[]")
    except Exception:  # the survivors may be electing a leader
        return False
    return len(tasks) == replicas and all(t["state"] == "running" and t["host"] != away
                                          for t in tasks)


def once(replicas: int) -> dict[str, float]:
    with Lab(3, daemon_args=("--suspect-after", str(SUSPECT),
                             "--reschedule-after", str(RESCHEDULE))) as lab:
        lab.start_all()
        lab.cli(1, "network", "create", NET, "--name", "bench")
        for n in (1, 2, 3):  # busybox built, shims warm: what a host has after its first
            lab.cli(n, "run", "--rm", "-n", "bench", "busybox", "true")

        started = time.perf_counter()
        lab.cli(1, "service", "create", "--name", "s", "--replicas", str(replicas), "-n",
                "bench", "busybox", "sleep", "3600", timeout=300)
        created = time.perf_counter() - started
        for n in (1, 2, 3):
            while _addresses(lab, n, "s") != replicas:
                if time.perf_counter() - started > 300:
                    raise SystemExit("the replicas did not all resolve in 300 s")
        resolved = time.perf_counter() - started

        started = time.perf_counter()
        for i in range(replicas):  # the anchor: by hand, a third on each host
            lab.cli(1 + i % 3, "run", "-d", "--name", f"hand{i}", "-n", "bench", "busybox",
                    "sleep", "3600")
        by_hand = time.perf_counter() - started

        lab.kill(3)
        lab._kill_containers(lab.host(3))
        lab.cut(3)
        killed = time.perf_counter()
        while not _all_running(lab, 1, "s", replicas, away="h3"):
            if time.perf_counter() - killed > 120:
                raise SystemExit("the replicas did not run again within 120 s")
            time.sleep(0.05)
        moved = time.perf_counter() - killed
    return {"created": created, "resolved": resolved, "by_hand": by_hand, "moved": moved}


def run(replicas: int = 30, reps: int = 3) -> tuple[str, list[Figure]]:
    results = [once(replicas) for _ in range(reps)]
    m = {k: median([r[k] for r in results]) for k in results[0]}
    rows = [[f"service create --replicas {replicas}: returned (all running)",
             f"{m['created']:.2f}"],
            ["... and resolved on all 3 hosts", f"{m['resolved']:.2f}"],
            [f"anchor: {replicas} × run -d, {replicas // 3} per host", f"{m['by_hand']:.2f}"],
            ["a host killed → all replicas running on the others", f"{m['moved']:.2f}"],
            ["anchor: --suspect-after + --reschedule-after", f"{SUSPECT + RESCHEDULE:.2f}"]]
    text = (f"services: 3 hosts, {replicas} replicas, median of {reps}; {machine()}\n"
            + table(["what", "seconds"], rows))
    return text, [
        Figure(f"service create --replicas {replicas} → running and resolvable, 3 hosts",
               f"{m['resolved']:.2f} s", f"{replicas} × run -d {m['by_hand']:.2f} s",
               f"{m['resolved'] / m['by_hand']:.2f}×", "-", None),
        Figure("a host killed → its replicas running elsewhere",
               f"{m['moved']:.2f} s", f"suspect + reschedule {SUSPECT + RESCHEDULE:.1f} s",
               f"+{m['moved'] - SUSPECT - RESCHEDULE:.2f} s", "-", None)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(run(args.replicas, args.reps)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
