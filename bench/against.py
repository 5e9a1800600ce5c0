"""This build against an older one: the same benchmark modules, interleaved in one run.

    .venv/bin/python -m bench.against COMMIT [--rounds N] MODULE[:JSON-ARGS] ...

e.g. ``python -m bench.against e2703ec --rounds 3 container_start:'{"reps": 20}'
convergence:'{"hosts": 3, "events": 40}'``.  The older build is checked out beside
this tree with ``git worktree`` (kept between runs: ``/tmp/cantainer-at-COMMIT``)
and set up with its own ``scripts/setup``; each round runs each module in each
build in turn, so that the machine's noise falls on both alike.  The table
gives, per figure, the median over the rounds of each build and their ratio.
For "not worse than before" checks: it has no target of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

from bench._util import machine, table

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = """
import importlib, json, sys
module = importlib.import_module("bench." + sys.argv[1])
_, figures = module.run(**json.loads(sys.argv[2]))
print("FIGURES-JSON " + json.dumps([[f.name, f.ours] for f in figures]))
"""


def tree_at(commit: str, fixes: tuple[str, ...] = ()) -> str:
    """The build of ``commit``, checked out and set up beside this tree, with the
    ``fixes`` (commits) applied to its ``cantainer/``: bugs that stop its benchmarks."""
    full = subprocess.run(["git", "-C", HERE, "rev-parse", commit], check=True,
                          capture_output=True, text=True).stdout.strip()
    # One tree for each commit and set of fixes: a tree made without them is not reused.
    tree = f"/tmp/cantainer-at-{full[:12]}" + "".join(f"+{fix[:7]}" for fix in fixes)
    if not os.path.isdir(tree):
        subprocess.run(["git", "-C", HERE, "worktree", "add", "--detach", tree, full],
                       check=True, capture_output=True)
        for fix in fixes:
            patch = subprocess.run(["git", "-C", HERE, "show", fix, "--", "cantainer"],
                                   check=True, capture_output=True).stdout
            subprocess.run(["git", "-C", tree, "apply"], input=patch, check=True)
    subprocess.run([os.path.join(tree, "scripts", "setup")], check=True)
    # Bytecode, as this tree's setup makes it (older setups did not): the builds are
    # compared, not Python compiling their sources at every start.
    subprocess.run([os.path.join(tree, ".venv", "bin", "python"), "-m", "compileall", "-q",
                    "-j", "0", os.path.join(tree, "cantainer"), os.path.join(tree, "lab")],
                   check=True, stdout=subprocess.DEVNULL)
    return tree


def measure(tree: str, module: str, kwargs: dict) -> dict[str, str]:
    """Run one benchmark module of the build in ``tree``; its figures by name."""
    python = os.path.join(tree, ".venv", "bin", "python")
    result = subprocess.run([python, "-c", DRIVER, module, json.dumps(kwargs)], cwd=tree,
                            capture_output=True, text=True)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("FIGURES-JSON ")),
                None)
    if line is None:
        raise RuntimeError(f"{module} in {tree} failed: {result.stderr[-2000:]}")
    return dict(json.loads(line.removeprefix("FIGURES-JSON ")))


def number(text: str) -> float:
    return float(re.search(r"-?[\d,]+(\.\d+)?", text).group(0).replace(",", ""))


def interleaved(trees: dict[str, str], modules: list[tuple[str, dict]],
                rounds: int, extra: dict[str, dict[str, dict]] | None = None
                ) -> dict[str, dict[str, list[float]]]:
    """build -> figure name -> its value in each round.  ``extra``: build -> module ->
    arguments for that build's module only (one the other build's does not take)."""
    found: dict[str, dict[str, list[float]]] = {build: {} for build in trees}
    for _ in range(rounds):
        for build, tree in trees.items():
            for module, kwargs in modules:
                kwargs = {**kwargs, **(extra or {}).get(build, {}).get(module, {})}
                for name, value in measure(tree, module, kwargs).items():
                    found[build].setdefault(name, []).append(number(value))
    return found


def run(commit: str, modules: list[tuple[str, dict]], rounds: int = 3) -> str:
    older = tree_at(commit)
    found = interleaved({"this": HERE, "older": older}, modules, rounds)
    rows = []
    for name in found["this"]:
        ours = statistics.median(found["this"][name])
        theirs = statistics.median(found["older"].get(name, [float("nan")]))
        rows.append([name, f"{ours:,.2f}", f"{theirs:,.2f}",
                     f"{ours / theirs:.2f}×" if theirs else "-"])
    head = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    return (f"this build ({head}, with its working tree) against {commit}, medians of "
            f"{rounds} interleaved rounds; {machine()}\n"
            + table(["figure", "this build", commit, "ratio"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit")
    parser.add_argument("modules", nargs="+", metavar="MODULE[:JSON-ARGS]")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (labs of network namespaces)", file=sys.stderr)
        return 1
    modules = []
    for spec in args.modules:
        name, _, kwargs = spec.partition(":")
        modules.append((name, json.loads(kwargs) if kwargs else {}))
    print(run(args.commit, modules, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
