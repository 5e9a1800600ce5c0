"""CLI start: ``cantainer status`` with no daemon, next to bare Python's start.

    .venv/bin/python -m bench.cli_start [--reps N]

Times, REPS times each and taking turns, the whole process from ``exec`` to exit:

* ``cantainer status`` as a user runs it (the installed ``cantainer`` script), with
  ``CANTAINER_SOCKET`` naming a socket nobody listens on: its start, its parser,
  the connect that fails, the one-line error;
* the anchor: ``python3.13 -c pass``, the same interpreter and venv doing nothing.

Needs no root and no lab.  The median and the p99 are reported; the figure is the
ratio of the medians (target ≤ 1.5×).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench._util import Figure, machine, median, percentile, table

CANTAINER = os.path.join(os.path.dirname(sys.executable), "cantainer")


def timed(argv: list[str], env: dict, expect: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}: {result.stderr!r}")
    return elapsed


def run(reps: int = 100) -> tuple[str, list[Figure]]:
    with tempfile.TemporaryDirectory(prefix="ctbench-cli-") as tmp:
        env = dict(os.environ, CANTAINER_SOCKET=os.path.join(tmp, "nobody.sock"))
        ways = {"cantainer status (no daemon)": ([CANTAINER, "status"], 5),
                "python3.13 -c pass (anchor)": ([sys.executable, "-c", "pass"], 0)}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for name, (argv, code) in ways.items():  # a first start of each, not counted
            timed(argv, env, code)
        for _ in range(reps):
            for name, (argv, code) in ways.items():
                times[name].append(timed(argv, env, code))
    anchor = median(times["python3.13 -c pass (anchor)"])
    ours = median(times["cantainer status (no daemon)"])
    rows = [[name, f"{median(ts) * 1000:.1f} ms", f"{percentile(ts, 99) * 1000:.1f} ms",
             f"{median(ts) / anchor:.2f}"] for name, ts in times.items()]
    text = (f"CLI start, {reps} runs each, taking turns; {machine()}\n"
            + table(["command", "median", "p99", "median / python"], rows))
    figure = Figure("CLI start: `cantainer status`, no daemon (median)", f"{ours * 1000:.1f} ms",
                    f"python3.13 -c pass {anchor * 1000:.1f} ms", f"{ours / anchor:.2f}× python",
                    "≤ 1.5× python", ours <= 1.5 * anchor)
    return text, [figure]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args()
    print(run(args.reps)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
