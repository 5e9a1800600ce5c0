"""The leader's CPU per appended event, and heartbeat datagrams per host, at 4, 8, 16 hosts.

    .venv/bin/python -m bench.leader_load [--hosts 4 8 16] [--events 3000]

For each cluster size a lab is built (one container per host, on one network, as
the issue's lab may pack hosts), the Raft leader found, and ``--events`` events
appended from a host that is not the leader (batches of 100: networks created and
removed).  The leader's CPU (its daemon and its TLS relay, user + system, from
``/proc``) over the appends, per 1,000 events, is the figure; the anchor is the same
at the smallest size, in the same run (the issue asks for ≤ 1.2× from 4 to 16).
Each size runs twice: as the daemons start by default (three relays stream the
log to the other hosts: ``daemon/fanout.py``), and with ``--relays 0``, every host
reading the log from the leader as before the fan-out: the anchor.
Heartbeat datagrams per second per host are read from each daemon's metrics
(``cantainer_heartbeat_datagrams_sent_total``) over 10 idle seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time

from bench._util import Figure, append_churn, figures_table, machine, table
from lab import Lab


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the relay), in seconds."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid] + [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _sent(lab, n: int) -> float:
    out = subprocess.run(["ip", "netns", "exec", lab.host(n).netns, "wget", "-q", "-O", "-",
                          "http://127.0.0.1:9003/metrics"], capture_output=True, text=True,
                         timeout=10).stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines()
               if line.startswith("cantainer_heartbeat_datagrams_sent_total")
               and 'kind="heartbeat"' in line)


def once(hosts: int, events: int, relays: int | None = None,
         extra: tuple[str, ...] = ()) -> tuple[float, float]:
    args = (() if relays is None else ("--relays", str(relays))) + extra
    with Lab(hosts, daemon_args=args) as lab:
        lab.start_all()
        lab.cli(1, "network", "create", "198.19.252.0/22", "--name", "load")
        for n in range(1, hosts + 1):
            lab.cli(n, "run", "-d", "-n", "load", "busybox", "sleep", "3600")
        address = json.loads(lab.cli(1, "status", "--json").stdout)["leader"]
        leader = next(h for h in lab.hosts if h.dqlite_address == address)
        appender = next(h.number for h in lab.hosts if h is not leader)
        time.sleep(3)  # the starts' own traffic settles
        first = [_sent(lab, h.number) for h in lab.hosts]
        t0 = time.monotonic()
        time.sleep(10)
        per_host = (sum(_sent(lab, h.number) for h in lab.hosts) - sum(first)) / (
            (time.monotonic() - t0) * hosts)
        before = _cpu_seconds(leader.proc.pid)
        append_churn(lab, appender, events, batch=100, prefix="l")
        cpu = _cpu_seconds(leader.proc.pid) - before
        return cpu / events * 1000 * 1000, per_host  # ms per 1,000 events


def run(hosts=(4, 8, 16), events: int = 3000) -> tuple[str, list[Figure]]:
    results = {n: once(n, events) for n in hosts}
    direct = {n: once(n, events, relays=0) for n in hosts}
    rows = [[n, f"{results[n][0]:.0f}", f"{direct[n][0]:.0f}", f"{results[n][1]:.1f}"]
            for n in hosts]
    small, large = hosts[0], hosts[-1]
    ratio = results[large][0] / results[small][0]
    anchor = direct[large][0] / direct[small][0]
    text = (f"leader load: {events:,} events appended from a host that does not lead, "
            f"batches of 100; {machine()}\n" + table(
                ["hosts", "leader CPU ms / 1,000 events", "the same, --relays 0",
                 "heartbeat datagrams / s / host"], rows))
    return text, [
        Figure(f"leader CPU per 1,000 events, {small} → {large} hosts",
               f"{ratio:.2f}× ({results[small][0]:.0f} → {results[large][0]:.0f} ms)",
               f"--relays 0: {anchor:.2f}× ({direct[small][0]:.0f} → "
               f"{direct[large][0]:.0f} ms)", f"{ratio:.2f}×", "≤ 1.2×", ratio <= 1.2),
        Figure(f"heartbeat datagrams / s / host at {large} hosts",
               f"{results[large][1]:.1f}", f"{small} hosts {results[small][1]:.1f}",
               f"{results[large][1] / results[small][1]:.2f}×", "flat (≈ 1.0×)",
               results[large][1] / results[small][1] <= 1.2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    text, figures = run(tuple(args.hosts), args.events)
    print(text + "\n\n" + figures_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
