"""Overlay convergence: an event appended on one host -> FDB and neighbour entries on the others.

    .venv/bin/python -m bench.convergence [--events N] [--hosts N]

On a lab of N hosts, every host but the first gets one container on a
shared network, so each holds that network's VXLAN device.  Then EVENTS
times: ``cantainer submit-event ContainerCreated`` for a container on host 1
returns, and the clock runs until the new container's FDB entry and
neighbour entry are present on every other host (each host's kernel is
polled every 2 ms from a thread inside its namespace).  Reported from the
moment the command returns (the issue's definition) and from the moment it
started.  Also the idle cost of one daemon: CPU over ``--idle`` seconds and
resident memory.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from bench._util import machine, median, percentile, table
from cantainer.actors.ipam import mac_of
from cantainer.kernel import netns
from cantainer.lab import Lab

NET = "198.18.0.0/16"


class Watcher:
    """Records when each MAC (FDB) and IP (neighbour) first appears in a host's kernel."""

    def __init__(self, netns_name: str) -> None:
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=netns.run_in, args=(netns_name, self._poll))
        self._thread.start()

    def _poll(self) -> None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            while not self._stop.is_set():
                now = time.perf_counter()
                for entry in ipr.fdb("dump"):
                    if entry.get("NDA_DST"):
                        self.seen.setdefault(entry.get("NDA_LLADDR"), now)
                for entry in ipr.neigh("dump", family=2):
                    if entry["state"] & 0x80:
                        self.seen.setdefault(entry.get("NDA_DST"), now)
                time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def container_id(i: int) -> str:
    return f"{i:012x}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    with Lab(args.hosts) as lab:
        lab.start_all()
        others = [h for h in lab.hosts if h.number != 1]
        for h in others:
            lab.cli(1, "submit-event", "ContainerCreated", f"container={container_id(h.number)}",
                    f"name=base{h.number}", f"host={h.name}", f"network={NET}")
        time.sleep(1.0)
        watchers = [Watcher(h.netns) for h in others]
        from_return, from_start = [], []
        try:
            for i in range(args.events):
                n = 1000 + i
                # Addresses are handed out in order: base containers took .2, .3, ...
                ip = f"198.18.{(2 + len(others) + i) // 256}.{(2 + len(others) + i) % 256}"
                import ipaddress
                mac = mac_of(ipaddress.IPv4Address(ip))
                started = time.perf_counter()
                lab.cli(1, "submit-event", "ContainerCreated", f"container={container_id(n)}",
                        f"name=c{n}", "host=h1", f"network={NET}")
                returned = time.perf_counter()
                deadline = returned + 10
                while not all(mac in w.seen and ip in w.seen for w in watchers):
                    if time.perf_counter() > deadline:
                        raise SystemExit(f"event {i}: entries for {ip} not everywhere in 10 s")
                    time.sleep(0.001)
                done = max(max(w.seen[mac], w.seen[ip]) for w in watchers)
                from_return.append(done - returned)
                from_start.append(done - started)
                time.sleep(0.05)
        finally:
            for w in watchers:
                w.close()

        time.sleep(2.0)
        pid = lab.host(2).proc.pid
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = rss_mib(pid)

    ms = lambda v: f"{v * 1000:.1f}"
    print(f"overlay convergence on {args.hosts} hosts, {args.events} ContainerCreated events; "
          f"{machine()}")
    print(table(["measured from", "p50 ms", "p99 ms", "max ms"], [
        ["submit-event returned", ms(median(from_return)), ms(percentile(from_return, 99)),
         ms(max(from_return))],
        ["submit-event started", ms(median(from_start)), ms(percentile(from_start, 99)),
         ms(max(from_start))],
    ]))
    print(f"idle daemon (h2) over {args.idle:.0f}s: {idle_cpu:.2f}% of one core, "
          f"RSS {rss:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
