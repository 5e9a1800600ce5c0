"""Event append throughput on a three-voter lab, next to raw dqlite-client INSERTs.

    .venv/bin/python -m bench.log_append [--reps N]

For batch sizes 1, 10 and 100 it appends REPS batches three ways, on the same
cluster.  The API and the raw anchor take turns batch by batch, which first drawn
at random for each batch (so that each meets the cluster in the same state: the
length of its Raft log, its snapshots, what the other daemons are doing); the
CLI's batches follow.  150 batches a cell: each snapshot stalls the next appends
(~35 ms: libraft closes its open segment, and its io_destroy took 33 ms in the node's
loop, ``strace -T``), and 40 met one or two: which way they fell on decided the ratio.

* ``submit-event``: the whole CLI command (process start, API, validation,
  idempotent append, and the wait for this host's IPAM verdict),
  ``--file -`` for batches;
* API: the same request sent straight to the daemon's socket (no process start);
* raw: dqlite-client from the same host, plain multi-row ``INSERT``s of rows of
  the same shape into a second table, one transaction per batch (the anchor),
  over the same mutual TLS as every member's session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from dqliteclient import ClusterClient, MemoryNodeStore
from dqliteclient.exceptions import OperationalError

from bench._util import Figure, machine, median, run_in_netns, table
from cantainer.cli import client as cli
from cantainer.events import NodeRecovered, encode
from lab import Lab

BATCHES = (1, 10, 100)
ROWS_PER_STATEMENT = 42  # the same 255-parameter limit the EventLog works within


def batch_jsonl(size: int, tag: str) -> str:
    # NodeRecovered of a joined member: accepted, and a no-op for every projection.
    return "\n".join(json.dumps({"type": "NodeRecovered", "data": {"name": "h1"},
                                 "id": f"{tag}-{i}"}) for i in range(size))


def _raw_rows(size: int, tag: str, host: int, payload: bytes) -> list[tuple]:
    return [(f"{tag}-{i}", "NodeRecovered", 1, f"h{host}", time.time(), payload)
            for i in range(size)]


async def _raw_batch(conn, rows: list[tuple]) -> None:
    """One batch as raw INSERTs: one statement per 42 rows, one transaction; again after
    a moment when the leader answers "database is locked" (a daemon's own write: its
    checkpoint, compaction, a heartbeat's event), as the EventLog does."""
    chunks = [rows[i:i + ROWS_PER_STATEMENT] for i in range(0, len(rows), ROWS_PER_STATEMENT)]
    for attempt in range(50):
        try:
            if len(chunks) > 1:
                await conn.execute("BEGIN")
            for chunk in chunks:
                marks = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
                await conn.execute("INSERT INTO raw_bench (id, type, version, node, time, "
                                   f"payload) VALUES {marks}", [x for row in chunk for x in row])
            if len(chunks) > 1:
                await conn.execute("COMMIT")
            return
        except OperationalError as exc:
            if exc.code & 0xFF != 5 or attempt == 49:  # SQLITE_BUSY
                raise
            if len(chunks) > 1:
                try:
                    await conn.execute("ROLLBACK")
                except OperationalError:
                    pass  # no transaction was open
            await asyncio.sleep(0.02)


def bench_ways(lab: Lab, size: int, reps: int, host: int = 2,
               ways: tuple[str, ...] = ("raw", "api", "cli")) -> dict[str, list[float]]:
    """Seconds per batch for each way, the ways taking turns batch by batch (the same
    moment of the cluster for each: its Raft log, its snapshots, the other load).

    * ``raw``: dqlite-client from ``host``'s namespace, over the same mutual TLS as
      every member's session (a member's credentials), into a table of its own;
    * ``api``: the submit request straight to ``host``'s daemon socket;
    * ``cli``: the whole ``submit-event --file -`` command.
    """
    payload = encode(NodeRecovered(name="h1"))
    addresses = [h.dqlite_address for h in lab.hosts]
    tls = lab.tls(host)
    socket_path = lab.host(host).socket

    async def dial(address: str):
        address_host, port = address.rsplit(":", 1)
        return await asyncio.open_connection(address_host, int(port), ssl=tls,
                                             server_hostname=None)

    async def go() -> dict[str, list[float]]:
        client = ClusterClient(MemoryNodeStore(addresses), timeout=5.0, dial_func=dial)
        conn = await client.connect("cantainer")
        await conn.execute("CREATE TABLE IF NOT EXISTS raw_bench (seq INTEGER PRIMARY KEY, "
                           "id TEXT NOT NULL UNIQUE, type TEXT, version INTEGER, node TEXT, "
                           "time REAL, payload BLOB)")
        times: dict[str, list[float]] = {way: [] for way in ways}
        order = random.Random(f"{size}-{host}")  # the same orders in every run
        for r in range(reps):
            # Each after each, in an order drawn anew for each batch: libdqlite snapshots
            # every 64 entries and stalls the next appends (~30 ms, its fsync), and a
            # fixed rotation put every such stall on the same way (the API's, here).
            for way in order.sample(ways, len(ways)):
                tag = f"{way}{size}-h{host}-{r}"
                if way == "raw":
                    rows = _raw_rows(size, tag, host, payload)
                    started = time.perf_counter()
                    await _raw_batch(conn, rows)
                elif way == "api":
                    items = [json.loads(line) for line in batch_jsonl(size, tag).splitlines()]
                    started = time.perf_counter()
                    cli.call(socket_path, {"op": "submit", "events": items})
                else:
                    text = batch_jsonl(size, tag)
                    started = time.perf_counter()
                    lab.cli(host, "submit-event", "--file", "-", input=text)
                times[way].append(time.perf_counter() - started)
        await conn.close()
        return times

    return run_in_netns(lab.host(host).netns, go)


def run(reps: int = 150, interleave: bool = True) -> tuple[str, list[Figure]]:
    """``interleave=False``: the raw batches, then the API's, as builds before did
    (``bench.trust`` compares the API figure with such a build's)."""
    rows, figures = [], []
    with Lab(3) as lab:
        lab.start_all()
        for size in BATCHES:
            if interleave:
                times = bench_ways(lab, size, reps, ways=("raw", "api"))
            else:
                times = {**bench_ways(lab, size, reps, ways=("raw",)),
                         **bench_ways(lab, size, reps, ways=("api",))}
            raw, api = times["raw"], times["api"]
            # Apart: a process start's aftermath would fall on the next batch of the others.
            cmd = bench_ways(lab, size, reps, ways=("cli",))["cli"]
            rate = lambda ts: size * len(ts) / sum(ts)
            rows.append([str(size), f"{rate(cmd):,.0f}", f"{rate(api):,.0f}", f"{rate(raw):,.0f}",
                         f"{rate(cmd) / rate(raw):.2f}", f"{rate(api) / rate(raw):.2f}",
                         f"{median(cmd) * 1000:.1f} / {median(api) * 1000:.1f} / "
                         f"{median(raw) * 1000:.1f}"])
            for label, ts in (("API", api), ("submit-event", cmd)):
                figures.append(Figure(
                    f"append throughput, 3 voters, batch {size}: {label}",
                    f"{rate(ts):,.0f} ev/s", f"raw dqlite-client {rate(raw):,.0f} ev/s",
                    f"{rate(ts) / rate(raw):.2f}× raw", "≥ 0.8× raw",
                    rate(ts) >= 0.8 * rate(raw)))
    text = (f"event append throughput, 3 voters, {reps} batches per cell; {machine()}\n"
            + table(["batch", "submit-event ev/s", "API ev/s", "raw dqlite-client ev/s",
                     "submit-event / raw", "API / raw", "median ms per batch (cli / api / raw)"],
                    rows))
    return text, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=150, help="batches per size and method")
    args = parser.parse_args()
    print(run(args.reps)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
