"""Idle cost of one daemon: CPU over 60 s and resident memory.

    .venv/bin/python -m bench.idle [--seconds S] [--containers N]

A three-host lab, each host running N detached containers on one shared
network (so every daemon holds a VXLAN device with remote entries and
supervises shims), left alone for a few seconds; then the CPU time of
each daemon (user + system, /proc/PID/stat) over S seconds, and its RSS at
the end.  The shims are separate processes and not counted.
"""

from __future__ import annotations

import argparse
import time

from bench._util import Figure, machine, table
from bench.convergence import cpu_seconds, rss_mib
from lab import Lab

NET = "198.18.0.0/24"


def run(seconds: float = 60.0, containers: int = 5) -> tuple[str, list[Figure]]:
    with Lab(3) as lab:
        lab.start_all()
        for h in lab.hosts:
            for i in range(containers):
                lab.cli(h.number, "run", "-d", "-n", NET, "--name", f"idle{h.number}-{i}",
                        "busybox", "sleep", "100000")
        time.sleep(5.0)
        pids = {h.name: h.proc.pid for h in lab.hosts}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = {name: (cpu_seconds(pid) - before[name]) / elapsed * 100
               for name, pid in pids.items()}
        rss = {name: rss_mib(pid) for name, pid in pids.items()}
    rows = [[name, f"{cpu[name]:.2f} %", f"{rss[name]:.1f} MiB"] for name in pids]
    text = (f"idle daemons over {seconds:.0f} s, 3 hosts × {containers} containers; "
            f"{machine()}\n" + table(["daemon", "CPU (of one core)", "RSS"], rows))
    worst_cpu, worst_rss = max(cpu.values()), max(rss.values())
    return text, [
        Figure("idle CPU of one daemon (worst of 3)", f"{worst_cpu:.2f} %", "-", "-",
               "≤ 1 % of one core", worst_cpu <= 1.0),
        Figure("idle RSS of one daemon (worst of 3)", f"{worst_rss:.1f} MiB", "-", "-",
               "≤ 80 MiB", worst_rss <= 80),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--containers", type=int, default=5, help="per host")
    args = parser.parse_args()
    print(run(args.seconds, args.containers)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
