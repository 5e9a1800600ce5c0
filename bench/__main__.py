"""Every benchmark, one table: ``python -m bench`` (``scripts/bench`` sets up first).

    .venv/bin/python -m bench [--quick] [--only NAME ...] [--out bench/RESULTS.md]

Runs each benchmark in turn (each is also a module of its own, runnable
alone), prints its detail table as it finishes, then the summary: every
figure next to its anchor measured in the same run, the ratio, the target
and whether it was met.  Writes all of it to ``bench/RESULTS.md`` with the
date, the machine and the exact commands, followed by ``bench/gaps.md``
(what dominates each remaining gap, from profiling).  Benchmarks are never
part of the tests' pass/fail.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

from bench import (cli_start, container_start, convergence, dataplane, failover, idle,
                   leader_load, log_append, names, replay_speed, restart, scale, services,
                   trust)
from bench._util import Figure, figures_table, machine

# name -> (module, arguments of the full run, arguments of --quick, the command)
BENCHMARKS = {
    "container_start": (container_start, {"reps": 30}, {"reps": 5},
                        "python -m bench.container_start --reps 30"),
    "cli_start": (cli_start, {"reps": 100}, {"reps": 10},
                  "python -m bench.cli_start --reps 100"),
    "convergence": (convergence, {"hosts": 3, "events": 100}, {"hosts": 3, "events": 5},
                    "python -m bench.convergence --hosts 3 --events 100"),
    "log_append": (log_append, {"reps": 150}, {"reps": 5}, "python -m bench.log_append --reps 150"),
    "replay_speed": (replay_speed, {"n": 100_000, "reps": 3}, {"n": 20_000, "reps": 1},
                     "python -m bench.replay_speed --events 100000 --reps 3"),
    "dataplane": (dataplane, {"seconds": 5.0, "reps": 3}, {"seconds": 2.0, "reps": 1},
                  "python -m bench.dataplane --seconds 5 --reps 3"),
    "idle": (idle, {"seconds": 60.0, "containers": 5}, {"seconds": 10.0, "containers": 2},
             "python -m bench.idle --seconds 60 --containers 5"),
    "failover": (failover, {"reps": 5}, {"reps": 1}, "python -m bench.failover --reps 5"),
    "scale": (scale, {"hosts": 8, "per_host": 50, "events": 100},
              {"hosts": 4, "per_host": 10, "events": 5},
              "python -m bench.scale --hosts 8 --per-host 50 --events 100"),
    "names": (names, {"hosts": 3, "reps": 100}, {"hosts": 3, "reps": 10},
              "python -m bench.names --hosts 3 --reps 100"),
    "leader_load": (leader_load, {"hosts": (4, 8, 16), "events": 3000},
                    {"hosts": (3, 4), "events": 500},
                    "python -m bench.leader_load --hosts 4 8 16 --events 3000"),
    "restart": (restart, {"events": 1_000_000}, {"events": 5_000},
                "python -m bench.restart --events 1000000"),
    "services": (services, {"replicas": 30, "reps": 3}, {"replicas": 6, "reps": 1},
                 "python -m bench.services --replicas 30 --reps 3"),
    "trust": (trust, {"rounds": 3, "reps": 100}, {"rounds": 1, "reps": 5, "quick": True},
              "python -m bench.trust --rounds 3 --reps 100"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"some of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (labs of network namespaces)", file=sys.stderr)
        return 1
    started = datetime.datetime.now(datetime.timezone.utc)
    details: list[str] = []
    figures: list[Figure] = []
    commands: list[str] = []
    for name in args.only or BENCHMARKS:
        module, full, quick, command = BENCHMARKS[name]
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            text, found = module.run(**(quick if args.quick else full))
        except (Exception, SystemExit) as exc:  # one broken benchmark must not hide the rest
            text = f"FAILED: {type(exc).__name__}: {exc}"
            found = [Figure(f"{name}: did not complete", "-", "-", "-", "-", False)]
        print(text + f"\n({time.monotonic() - t0:.0f} s)\n", flush=True)
        details.append(f"### {name}\n\n`{command}`\n\n{text}\n")
        figures.extend(found)
        commands.append(command)
    summary = figures_table(figures)
    print(summary)
    with open(os.path.join(os.path.dirname(__file__), "gaps.md")) as f:
        gaps = f.read()
    with open(args.out, "w") as f:
        f.write(f"# Benchmark results\n\n"
                f"- date: {started:%Y-%m-%d %H:%M} UTC{' (--quick: a smoke run)' if args.quick else ''}\n"
                f"- machine: {machine()}, {platform.machine()}, {_cpu_model()}\n"
                f"- Python {platform.python_version()}; each figure's anchor was measured "
                f"in the same run, on the same machine\n"
                f"- commands (from the checkout, as root, after `scripts/setup`; "
                f"`scripts/bench` runs them all):\n"
                + "".join(f"  - `.venv/bin/{c}`\n" for c in commands)
                + f"\n## Summary\n\n{summary}\n\n## Details\n\n" + "\n".join(details)
                + f"\n{gaps}")
    print(f"\nwritten to {args.out}")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
