"""What cluster trust costs: the same figures on this build and on the last plaintext one,
interleaved in one run on this machine.

    .venv/bin/python -m bench.trust [--rounds N] [--reps N]

The plaintext build is commit ``PLAINTEXT`` (the last one before mutual TLS,
heartbeat MACs and the VXLAN table), checked out beside this tree with
``git worktree`` and set up with its own ``scripts/setup`` (``bench/against.py``).  Each round runs,
for each build in turn, that build's own benchmark modules (``bench.log_append``,
``bench.convergence``, ``bench.failover``, ``bench.idle``) and collects their
figures; the table gives the median over the rounds of each, the ratio, and the
issue's target:

    append throughput through the API, batch 1/10/100   ≥ 0.9× plaintext
    convergence at 3 hosts, submit-event → entries p99   ≤ 100 ms
    fail-over (leader SIGKILLed → next append)           (reported)
    idle CPU of a daemon (worst of 3)                    ≤ 1 % of a core
    idle RSS of a daemon (worst of 3)                    (reported)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench._util import Figure, machine, table
from bench.against import HERE, interleaved, tree_at

PLAINTEXT = "0571ec590f785a59656af054d6a0fa958301ccac"
# Fixes applied to that checkout: bugs that stop its benchmarks, not what they measure
# (a919007: busybox built twice at once on a fresh lab's first 'run').
PLAINTEXT_FIXES = ["a9190070d1080b64fff7a09f987bec636c232e45"]

# What each build runs, and which of its figures are compared: (module, arguments)
MEASURES = [("log_append", "reps"), ("convergence", None), ("failover", None), ("idle", None)]
COMPARED = {  # name in this table -> (figure name prefix, target text, check of (ours, theirs))
    "append, batch 1 (API)": ("append throughput, 3 voters, batch 1: API", "≥ 0.9× plaintext",
                              lambda ours, theirs: ours >= 0.9 * theirs),
    "append, batch 10 (API)": ("append throughput, 3 voters, batch 10: API", "≥ 0.9× plaintext",
                               lambda ours, theirs: ours >= 0.9 * theirs),
    "append, batch 100 (API)": ("append throughput, 3 voters, batch 100: API",
                                "≥ 0.9× plaintext", lambda ours, theirs: ours >= 0.9 * theirs),
    "convergence, 3 hosts, p99 (ms)": ("convergence, 3 hosts: submit-event returned → entries",
                                       "≤ 100 ms", lambda ours, theirs: ours <= 100),
    "fail-over, median (s)": ("fail-over: leader SIGKILLed", "-", None),
    "idle CPU, worst daemon (%)": ("idle CPU of one daemon", "≤ 1 % of a core",
                                   lambda ours, theirs: ours <= 1.0),
    "idle RSS, worst daemon (MiB)": ("idle RSS of one daemon", "-", None),
}

def plaintext_tree() -> str:
    """The plaintext build, checked out and set up beside this tree (kept between runs)."""
    return tree_at(PLAINTEXT, tuple(PLAINTEXT_FIXES))


def run(rounds: int = 3, reps: int = 100, quick: bool = False) -> tuple[str, list[Figure]]:
    plain = plaintext_tree()
    kwargs = {"log_append": {"reps": reps},
              "convergence": {"hosts": 3, "events": 10 if quick else 40},
              "failover": {"reps": 1 if quick else 2},
              "idle": {"seconds": 10.0 if quick else 30.0, "containers": 2 if quick else 5}}
    # The plaintext build's log_append measures the API's batches after the raw ones;
    # this build's takes turns unless told not to: told, so that the two API figures
    # are measured alike.
    found = interleaved({"plaintext": plain, "trust": HERE},
                        [(module, kwargs[module]) for module, _ in MEASURES], rounds,
                        extra={"trust": {"log_append": {"interleave": False}}})
    rows, figures = [], []
    for label, (prefix, target, check) in COMPARED.items():
        values = {build: next((statistics.median(v) for name, v in figures_of.items()
                               if name.startswith(prefix)), None)
                  for build, figures_of in found.items()}
        ours, theirs = values["trust"], values["plaintext"]
        if ours is None or theirs is None:
            rows.append([label, "-", "-", "-", target, "not measured"])
            continue
        ratio = ours / theirs if theirs else float("inf")
        met = check(ours, theirs) if check else None
        rows.append([label, f"{ours:,.2f}", f"{theirs:,.2f}", f"{ratio:.2f}×", target,
                     {True: "met", False: "**missed**", None: "-"}[met]])
        figures.append(Figure(f"trust cost: {label}", f"{ours:,.2f}",
                              f"plaintext build {theirs:,.2f}", f"{ratio:.2f}×", target, met))
    text = (f"cluster trust against the plaintext build {PLAINTEXT[:12]}, medians of {rounds} "
            f"interleaved rounds; {machine()}\n"
            + table(["figure", "trust", "plaintext", "ratio", "target", ""], rows))
    return text, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=100,
                        help="batches per append cell (with 30, one stall moved a batch-1 "
                             "cell by a tenth)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (labs of network namespaces)", file=sys.stderr)
        return 1
    print(run(args.rounds, args.reps, args.quick)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
