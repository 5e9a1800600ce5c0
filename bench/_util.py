"""Helpers shared by the benchmarks."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import threading


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_in_netns(name: str, coro_fn):
    """Run ``asyncio.run(coro_fn())`` in a thread that lives in network namespace ``name``.

    Namespaces are per thread: the thread's sockets are the host's sockets.
    """
    from cantainer.kernel import netns

    result: dict = {}

    def target():
        try:
            netns.enter(name)
            result["value"] = asyncio.run(coro_fn())
        except BaseException as exc:  # handed back to the caller
            result["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])
