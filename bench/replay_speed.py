"""Replay speed: ``cantainer replay`` over 100 000 events, next to msgpack alone.

    .venv/bin/python -m bench.replay_speed [--events N] [--reps N]

The events are a cluster's life: 8 hosts join, 10 networks are created,
then containers are created, started, exited and removed on every host and
network in turn (about 2 000 alive at any time, 25 000 in all).  Timed, REPS
times each (the median is reported):

* ``cantainer replay --file F --json``, the whole command, over those events
  as ``cantainer events --json`` prints them, and as ``events --msgpack`` writes
  them (the log's own rows);
* ``cantainer replay --json`` against a one-host lab whose log holds them:
  the daemon reads them from dqlite and streams them to the CLI;
* the anchor: ``msgpack.unpackb`` of the same events' stored payloads, in a
  loop, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import msgpack

from bench._util import Figure, machine, median, table
from cantainer import events as ev
from cantainer.events import encode

HOSTS, NETWORKS, ALIVE = 8, 10, 2000
BATCH = 1000  # events per submit: the API's limit


def container_id(i: int) -> str:
    """64 digits, unique in the first 12 (which name a container's kernel objects)."""
    return f"{i:012x}".ljust(64, "0")


def life(n: int) -> list[ev.Event]:
    """``n`` events of a cluster's life, every one of them accepted by the projections."""
    out: list[ev.Event] = [ev.NodeJoined(name=f"n{h}", address=f"198.51.100.{100 + h}",
                                         dqlite_address=f"198.51.100.{100 + h}:9000")
                           for h in range(HOSTS)]
    out += [ev.NetworkCreated(name=f"net{k}", cidr=f"198.18.{16 * k}.0/20")
            for k in range(NETWORKS)]
    i = 0
    while len(out) < n:
        cid = container_id(i)
        out += [ev.ContainerCreated(container=cid, name=f"c{i}", host=f"n{i % HOSTS}",
                                    network=f"net{i % NETWORKS}", command=("sleep", "1000")),
                ev.ContainerStarted(container=cid, pid=1000 + i % 100_000),
                ev.ContainerExited(container=cid, exit_code=0)]
        if i >= ALIVE:
            out.append(ev.ContainerRemoved(container=container_id(i - ALIVE)))
        i += 1
    return out[:n]


def as_jsonl(events: list[ev.Event]) -> str:
    lines = []
    for seq, e in enumerate(events, 1):
        lines.append(json.dumps({"seq": seq, "id": f"e{seq}", "type": e.type_name(),
                                 "version": e.VERSION, "node": "n0", "time": 1.7e9 + seq,
                                 "data": ev.to_data(e)}, separators=(",", ":")))
    return "\n".join(lines) + "\n"


def as_record_stream(events: list[ev.Event]) -> bytes:
    """The same records as ``cantainer events --msgpack`` writes them."""
    return ev.pack_rows((seq, f"e{seq}", e.type_name(), e.VERSION, "n0", 1.7e9 + seq,
                         encode(e)) for seq, e in enumerate(events, 1))


def timed(argv: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr}")
    return elapsed


def run(n: int = 100_000, reps: int = 3, daemon: bool = True) -> tuple[str, list[Figure]]:
    events = life(n)
    payloads = [encode(e) for e in events]
    msgpack_times = []
    for _ in range(reps):
        started = time.perf_counter()
        for p in payloads:
            msgpack.unpackb(p, raw=False)
        msgpack_times.append(time.perf_counter() - started)
    replay = [sys.executable, "-m", "cantainer.cli", "replay", "--json"]
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="ctbench-") as tmp:
        path = os.path.join(tmp, "events.jsonl")
        with open(path, "w") as f:
            f.write(as_jsonl(events))
        results["cantainer replay --file (JSON Lines)"] = [
            timed(replay + ["--file", path]) for _ in range(reps)]
        stream = os.path.join(tmp, "events.msgpack")
        with open(stream, "wb") as f:
            f.write(as_record_stream(events))
        results["cantainer replay --file (events --msgpack)"] = [
            timed(replay + ["--file", stream]) for _ in range(reps)]
    if daemon:
        from cantainer.cli import client as cli
        from lab import Lab
        # The hosts n0..n7 send no heartbeats: no NodeSuspected during the bench, please.
        with Lab(1, daemon_args=("--suspect-after", "3600")) as lab:
            lab.start(1)
            for start in range(0, n, BATCH):
                items = [{"type": e.type_name(), "data": ev.to_data(e)}
                         for e in events[start:start + BATCH]]
                cli.call(lab.host(1).socket, {"op": "submit", "events": items})
            env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
            results["cantainer replay (from the daemon)"] = [timed(replay, env)
                                                             for _ in range(reps)]
    anchor = median(msgpack_times)
    for name, ts in results.items():
        rows.append([name, f"{median(ts):.2f} s", f"{n / median(ts):,.0f}",
                     f"{median(ts) / anchor:.1f}"])
    rows.append(["msgpack.unpackb alone (anchor)", f"{anchor:.3f} s", f"{n / anchor:,.0f}",
                 "1.0"])
    text = (f"replay speed, {n:,} events, median of {reps} runs; {machine()}\n"
            + table(["what", "time", "events/s", "time / msgpack"], rows))
    figures = []
    for name, ts in results.items():
        rate = n / median(ts)
        figures.append(Figure(f"replay speed: {name}", f"{rate:,.0f} ev/s",
                              f"msgpack alone {n / anchor:,.0f} ev/s",
                              f"{rate / (n / anchor):.3f}× msgpack", "≥ 100,000 ev/s",
                              rate >= 100_000))
    return text, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-daemon", action="store_true", help="only the file and msgpack")
    args = parser.parse_args()
    print(run(args.events, args.reps, not args.no_daemon)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
