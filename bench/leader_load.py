"""The leader's CPU per appended event, and heartbeat datagrams per host, at 4, 8, 16 hosts.

    .venv/bin/python -m bench.leader_load [--hosts 4 8 16] [--events 10000] [--reps 1]

For each cluster size a lab is built (one container per host, on one network, as
the issue's lab may pack hosts), the Raft leader found, and ``--events`` events
appended from a host that is not the leader (batches of 100: networks created and
removed).  The leader's CPU (its daemon and its TLS relay, user + system, from
``/proc``) over the appends, per 1,000 events, is the figure; the anchor is the same
at the smallest size, in the same run (the issue asks for ≤ 1.2× from 4 to 16).
Each size runs twice: as the daemons start by default (three relays stream the
log to the other hosts, ``daemon/fanout.py``; one Raft stand-by), and as before
the fan-out: ``--relays 0 --standbys 3``, every host reading the log from the
leader, and three stand-bys replicating it: the anchor.  ``BENCH_PROFILE=1``
prints where the leader's time went (threads, its TLS relay, bytes per connection).
CPU time is counted in ticks of 10 ms: 10 000 events make that 1 ms per 1,000.
Heartbeat datagrams per second per host are read from each daemon's metrics
(``cantainer_heartbeat_datagrams_sent_total``) over 10 idle seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time

from bench._util import Figure, append_churn, figures_table, machine, table
from cantainer.daemon.heartbeat import WATCHERS
from lab import Lab


PROFILE = os.environ.get("BENCH_PROFILE") == "1"  # where the leader's time goes


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


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of the daemon (by name) and of its children."""
    ticks, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            fields = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        name = "main" if tid == str(pid) else name  # the event loop; the rest: dqlite's
        out[name] = out.get(name, 0) + (int(fields[11]) + int(fields[12])) / ticks  # threads, actors
    for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
        out["children"] = out.get("children", 0) + _cpu_seconds(int(child))
    return out


def _bytes(lab, n: int) -> dict[str, int]:
    """Bytes sent + received on each established TCP connection of host ``n``, keyed
    by local port and peer."""
    import re
    out = subprocess.run(["ip", "netns", "exec", lab.host(n).netns, "ss", "-tniH",
                          "state", "established"], capture_output=True, text=True).stdout
    found, key = {}, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            parts = line.split()
            key = f"{parts[2].rsplit(':', 1)[1]}<-{parts[3]}"
        else:
            sent = re.search(r"bytes_sent:(\d+)", line)
            got = re.search(r"bytes_received:(\d+)", line)
            found[key] = (int(sent.group(1)) if sent else 0) + (int(got.group(1)) if got else 0)
    return found


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
        idle_cpu, t0 = _cpu_seconds(leader.proc.pid), time.monotonic()
        time.sleep(10)
        idle = time.monotonic() - t0
        idle_cpu = (_cpu_seconds(leader.proc.pid) - idle_cpu) / idle  # CPU s per s, idle
        per_host = (sum(_sent(lab, h.number) for h in lab.hosts) - sum(first)) / (
            idle * hosts)
        before, t1 = _cpu_seconds(leader.proc.pid), time.monotonic()
        threads = _threads(leader.proc.pid) if PROFILE else {}
        flows = _bytes(lab, leader.number) if PROFILE else {}
        append_churn(lab, appender, events, batch=100, prefix="l")
        cpu, took = _cpu_seconds(leader.proc.pid) - before, time.monotonic() - t1
        if PROFILE:
            after = _threads(leader.proc.pid)
            spent = {k: round((v - threads.get(k, 0)) * 1000) for k, v in after.items()}
            feeds = [json.loads(lab.cli(h.number, "status", "--json").stdout)["feed"]
                     for h in lab.hosts]
            print(f"  feeds: {feeds}; leader {leader.name}, appender h{appender}")
            moved = {k: v - flows.get(k, 0) for k, v in _bytes(lab, leader.number).items()}
            print("  bytes: " + ", ".join(f"{k} {v // 1024} KiB" for k, v in sorted(
                moved.items(), key=lambda kv: -kv[1]) if v > 10240))
            print(f"  {hosts} hosts: appends took {took:.2f} s; the leader idle "
                  f"{idle_cpu * 1000:.1f} ms/s, busy {cpu * 1000:.0f} ms: "
                  f"{ {k: v for k, v in sorted(spent.items()) if v} }", flush=True)
        return cpu / events * 1000 * 1000, per_host  # ms per 1,000 events


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))


def run(hosts=(4, 8, 16), events: int = 10_000, reps: int = 1) -> tuple[str, list[Figure]]:
    # Sizes and designs take turns, rep after rep, so that the machine's drift over
    # the run falls on all of them; each figure is the median of its reps.
    ours: dict[int, list] = {n: [] for n in hosts}
    before: dict[int, list] = {n: [] for n in hosts}
    for _ in range(reps):
        for n in hosts:
            ours[n].append(once(n, events))
            before[n].append(once(n, events, relays=0, extra=("--standbys", "3")))
    results = {n: _median(ours[n]) for n in hosts}
    direct = {n: _median(before[n]) for n in hosts}

    def each(runs):
        return "" if reps == 1 else " (" + " / ".join(f"{r[0]:.0f}" for r in runs) + ")"
    rows = [[n, f"{results[n][0]:.0f}{each(ours[n])}", f"{direct[n][0]:.0f}{each(before[n])}",
             f"{results[n][1]:.1f}"] for n in hosts]
    small, large = hosts[0], hosts[-1]
    ratio = results[large][0] / results[small][0]
    anchor = direct[large][0] / direct[small][0]
    text = (f"leader load: {events:,} events appended from a host that does not lead, "
            f"batches of 100, median of {reps} run(s) a size; {machine()}\n" + table(
                ["hosts", "leader CPU ms / 1,000 events", "before: --relays 0 --standbys 3",
                 "heartbeat datagrams / s / host"], rows))
    return text, [
        Figure(f"leader CPU per 1,000 events, {small} → {large} hosts",
               f"{ratio:.2f}× ({results[small][0]:.0f} → {results[large][0]:.0f} ms)",
               f"before: {anchor:.2f}× ({direct[small][0]:.0f} → "
               f"{direct[large][0]:.0f} ms)", f"{ratio:.2f}×", "≤ 1.2×", ratio <= 1.2),
        Figure(f"heartbeat datagrams / s / host at {large} hosts",
               f"{results[large][1]:.1f}", f"{small} hosts {results[small][1]:.1f}",
               f"{results[large][1] / results[small][1]:.2f}×",
               f"≤ {WATCHERS + 1} at every size (the ring's {WATCHERS} and the leader)",
               all(results[n][1] <= WATCHERS + 1.05 for n in hosts))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=1,
                        help="runs of each size and design, taking turns; the median counts")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    text, figures = run(tuple(args.hosts), args.events, args.reps)
    print(text + "\n\n" + figures_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
