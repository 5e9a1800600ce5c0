"""Helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
from dataclasses import dataclass


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_in_netns(name: str, coro_fn):
    """``asyncio.run(coro_fn())`` in a thread inside network namespace ``name``."""
    from cantainer.kernel import netns

    return netns.run_in(name, lambda: asyncio.run(coro_fn()))


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


@dataclass
class Figure:
    """One line of the results table: our figure next to its anchor and the target."""

    name: str
    ours: str
    anchor: str
    ratio: str
    target: str
    met: bool | None  # None: no target, or not comparable


def figures_table(figures: list[Figure]) -> str:
    verdict = {True: "met", False: "**missed**", None: "-"}
    return table(["figure", "ours", "anchor (same run)", "ratio", "target", ""],
                 [[f.name, f.ours, f.anchor, f.ratio, f.target, verdict[f.met]]
                  for f in figures])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def append_churn(lab, host: int, events: int, batch: int = 1000, prefix: str = "b") -> None:
    """Append ``events`` events from ``host`` through the API, ``batch`` at a time: /28
    networks created and removed (issue 17's workload: history, no live state), named
    ``PREFIX<i>`` in 198.18.0.0/16."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ct-bench-churn-") as tmp:
        path = os.path.join(tmp, "batch.jsonl")
        for first in range(0, events // 2, batch // 2):
            lines = []
            for i in range(first, first + batch // 2):
                cidr = f"198.18.{(i // 16) % 256}.{(i % 16) * 16}/28"
                lines.append(json.dumps({"type": "NetworkCreated",
                                         "data": {"name": f"{prefix}{i}", "cidr": cidr}}))
                lines.append(json.dumps({"type": "NetworkRemoved",
                                         "data": {"name": f"{prefix}{i}"}}))
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            lab.cli(host, "submit-event", "--file", path, timeout=120)
