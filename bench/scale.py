"""Scale: 8 hosts × 50 containers on this machine.

    .venv/bin/python -m bench.scale [--hosts N] [--per-host N] [--events N]

Builds a lab of HOSTS hosts and starts PER_HOST detached busybox containers
on each (through the API, eight hosts at once), all on one network; then

* waits until every host's kernel matches the log (``replay --check``: no
  difference) and counts the FDB and neighbour entries each host holds;
* reachability: from one container on every host, one ping to every
  container of the cluster (HOSTS × HOSTS·PER_HOST pings: every container
  is reached from every host);
* convergence on the loaded cluster, as bench.convergence measures it
  (``submit-event``/``run -d`` returning → entries on every other host, and
  → a TCP connect from another host's container).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from bench._util import Figure, machine, median, ms, percentile, table
from bench.convergence import measure
from cantainer.cli import client as cli
from lab import Lab

NET = "198.18.0.0/16"


def start_containers(lab: Lab, per_host: int) -> float:
    failures: list[str] = []

    def fill(h) -> None:
        for i in range(per_host):
            try:
                cli.call(h.socket, {"op": "run", "image": "busybox", "network": NET,
                                    "name": f"s{h.number}-{i}", "command": ["sleep", "1000000"]})
            except Exception as exc:
                failures.append(f"{h.name}: {exc}")
                return

    started = time.monotonic()
    threads = [threading.Thread(target=fill, args=(h,)) for h in lab.hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit("starting containers failed: " + "; ".join(failures))
    return time.monotonic() - started


def converged(lab: Lab, timeout: float = 120) -> float:
    started = time.monotonic()
    for h in lab.hosts:
        while (check := lab.cli(h.number, "replay", "--check", check=False)).returncode != 0:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"{h.name} still differs from the log after {timeout:g} s:\n"
                                 f"{check.stdout[-3000:]}{check.stderr[-2000:]}")
            time.sleep(0.5)
    return time.monotonic() - started


def pings(lab: Lab, per_host: int) -> tuple[int, list[str], list[str]]:
    """From one container per host to every container: (targets, "host -> ip" of first
    pings unanswered, of targets that answered none of three)."""
    containers = json.loads(lab.cli(1, "ps", "--json").stdout)
    targets = " ".join(c["ip"] for c in containers)
    sent, lost, unreachable = 0, [], []
    for h in lab.hosts:
        result = lab.cli(h.number, "exec", f"s{h.number}-0", "sh", "-c",
                         f"for ip in {targets}; do ping -c 1 -W 2 $ip >/dev/null || "
                         "{ echo lost $ip; ping -c 2 -W 2 $ip >/dev/null || echo unreachable $ip; }; "
                         "done", timeout=900)
        sent += len(containers)
        for line in result.stdout.splitlines():
            kind, ip = line.split()
            (lost if kind == "lost" else unreachable).append(f"{h.name} -> {ip}")
    return sent, lost, unreachable


def run(hosts: int = 8, per_host: int = 50, events: int = 30) -> tuple[str, list[Figure]]:
    with Lab(hosts) as lab:
        lab.start_all()
        start_time = start_containers(lab, per_host)
        settle = converged(lab)
        entries = {}
        for h in lab.hosts:
            counts = lab.cli(h.number, "replay", "--node", h.name, "--json").stdout
            plan = json.loads(counts)["hosts"][h.name]
            entries[h.name] = sum(len(p["fdb"]) + len(p["neigh"]) for p in plan)
        sent, lost, unreachable = pings(lab, per_host)
        conv = measure(lab, events)
    total = hosts * per_host
    rows = [["containers started (API, 8 hosts at once)", f"{total} in {start_time:.1f} s"],
            ["every host's kernel matches the log", f"{settle:.1f} s after the last start"],
            ["FDB + neighbour entries per host", f"{min(entries.values())}–"
                                                 f"{max(entries.values())} (expected "
                                                 f"{2 * (total - per_host)})"],
            ["ping, one container per host → every container",
             f"{sent} targets; first ping unanswered {len(lost)}"
             + (f" ({', '.join(lost[:6])}...)" if lost else "")
             + f"; answering none of 3: {len(unreachable)}"
             + (f" ({', '.join(unreachable[:6])})" if unreachable else "")]]
    for path, values in conv.items():
        rows.append([f"convergence: {path}", f"p50 {ms(median(values))}, "
                                             f"p99 {ms(percentile(values, 99))}, "
                                             f"max {ms(max(values))} ({len(values)} events)"])
    text = (f"scale: {hosts} hosts × {per_host} containers; {machine()}\n"
            + table(["what", "measured"], rows))
    p99 = percentile(conv["submit-event returned → entries"], 99)
    tcp99 = percentile(conv["run -d returned → TCP connect"], 99)
    figures = [
        Figure(f"scale: {hosts} hosts × {per_host} containers reach each other",
               f"{sent - len(unreachable)}/{sent} reached ({len(lost)} first pings lost)",
               "-", "-", "all reach each other",
               not unreachable and min(entries.values()) == 2 * (total - per_host)),
        Figure(f"convergence at scale, {hosts} hosts: submit-event returned → entries (p99)",
               ms(p99), "-", "-", "p99 ≤ 250 ms", p99 <= 0.250),
        Figure(f"convergence at scale, {hosts} hosts: run -d returned → TCP connect (p99)",
               ms(tcp99), "-", "-", "p99 ≤ 250 ms", tcp99 <= 0.250),
    ]
    return text, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--per-host", type=int, default=50)
    parser.add_argument("--events", type=int, default=30)
    args = parser.parse_args()
    print(run(args.hosts, args.per_host, args.events)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
