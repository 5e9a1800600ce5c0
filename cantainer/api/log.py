"""The log itself: ``submit`` raw events, read them with ``events``.

    {"op": "submit", "events": [{"type": T, "data": {...}, "id": ID?}, ...]}
        -> {"seqs": [N, ...]}            one atomic batch, in order, with this host's verdict
    {"op": "events", "since": N, "follow": bool, "types": [T, ...], "raw": bool}
        -> {"event": {...}} per record, then {"end": true} unless following;
           raw: {"records": BASE64} per batch instead, a record stream
           (events/codec.py: the stored rows, payloads as stored, for the reader to
           decode: ``events --msgpack`` and ``replay``)
    {"op": "log_follow", "after": N, "every": S} (peer port, members)
        -> {"after": A, "records": BASE64, "fresh": S} per batch, the records right
           after seq A as the database holds them, A the last one sent before;
           {"fresh": S} when there is nothing new for ``every`` seconds (0.1..10,
           default 1); a batch holds at most RELAY_BYTES of payloads; {"gap": true} when
           the records right after the last one sent are compacted.  S: seconds since
           this host last read from a quorum (``daemon/fanout.py``)
    {"op": "log_fetch", "kind": "segment" | "checkpoint", "seq": N} (peer port, members)
        -> {"data": BASE64} ..., {"end": true}: this host's archive segment ending at N,
           or checkpoint at N (``daemon/archive.py``)
"""

from __future__ import annotations

import asyncio
import base64

from cantainer.api import fields as f
from cantainer.errors import Invalid, InvalidEvent, NotFound
from cantainer.events import from_data, new_event_id, pack_rows
from cantainer.projections.view import record_json

MAX_BATCH = 1000  # events per append: one transaction, bounded (events/log.py: PAGE_CACHE)
FOLLOW_POLL = 0.1  # seconds between reads of the log while following
RAW_BATCH = 1000  # records per line of a record stream
FETCH_CHUNK = 256 * 1024  # bytes per line of a log_fetch answer
RELAY_BYTES = 512 * 1024  # payload bytes a line of log_follow carries at most (payloads
#                          are at most 64 KiB: a line stays under 1 MiB, peers.MAX_LINE)


def _batch(name: str, value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise InvalidEvent("submit needs a non-empty list of events")
    if len(value) > MAX_BATCH:
        raise InvalidEvent(f"a batch holds at most {MAX_BATCH} events, got {len(value)}")
    return value


def _types(name: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise Invalid("--type must name event types")
    return value


def _since(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Invalid(f"--since must be a seq >= 0, got {value!r}")
    return value


async def submit(h, req: dict, ex) -> None:
    items = req["events"]
    events, ids = [], []
    for n, item in enumerate(items, 1):
        where = f"event {n}: " if len(items) > 1 else ""
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise InvalidEvent(f"{where}needs a type")
        try:
            events.append(from_data(item["type"], item.get("data", {})))
        except InvalidEvent as exc:
            raise InvalidEvent(f"{where}{exc}") from None
        ids.append(item.get("id") or new_event_id())
    await ex.send({"seqs": await h.append(events, ids)})


async def events(h, req: dict, ex) -> None:
    since, types = req["since"], req["types"] or None
    if req["raw"]:
        return await _raw_events(h, since, types, req["follow"], ex)
    while True:
        batch = await h.read(since, 1000, types)
        for rec in batch:
            await ex.send({"event": record_json(rec)})
        if batch:
            since = batch[-1].seq
            continue
        if not req["follow"]:
            await ex.send({"end": True})
            return
        await asyncio.sleep(FOLLOW_POLL)


async def _raw_events(h, since: int, types, follow: bool, ex) -> None:
    """The record stream, a batch per line; the next batch is read from the log while
    this one is sent (and the client decodes it)."""
    reading = asyncio.ensure_future(h.read_rows(since, RAW_BATCH, types))
    try:
        while True:
            rows = await reading
            if rows:
                since = rows[-1][0]
                reading = asyncio.ensure_future(h.read_rows(since, RAW_BATCH, types))
                await ex.send({"records": base64.b64encode(pack_rows(rows)).decode()})
                continue
            if not follow:
                await ex.send({"end": True})
                return
            await asyncio.sleep(FOLLOW_POLL)
            reading = asyncio.ensure_future(h.read_rows(since, RAW_BATCH, types))
    finally:
        reading.cancel()


async def log_follow(h, req: dict, ex) -> None:
    """A member follows the log through this host (``daemon/fanout.py``)."""
    since, every = req["after"], req["every"]
    while True:
        rows = await h.relay_rows(since, RAW_BATCH)
        if rows is None:
            await ex.send({"gap": True})
            return
        if rows:
            size, cut = 0, len(rows)
            for n, row in enumerate(rows):  # a line stays under the follower's 1 MiB
                size += len(row[6]) + 128
                if size > RELAY_BYTES and n:
                    cut = n
                    break
            rows = rows[:cut]
            await ex.send({"after": since, "fresh": h.fresh(),
                           "records": base64.b64encode(pack_rows(rows)).decode()})
            since = rows[-1][0]
        elif not await h.relayed(every):
            await ex.send({"fresh": h.fresh()})


async def log_fetch(h, req: dict, ex) -> None:
    """A member asks for one of this host's archive segments or checkpoints (it checks
    the bytes against the log's digest itself: ``daemon/peers.py``)."""
    path = h.archived(req["kind"], req["seq"])
    if path is None:
        raise NotFound(f"host {h.node} has no {req['kind']} ending at seq {req['seq']}")
    with open(path, "rb") as f_:
        while chunk := await asyncio.to_thread(f_.read, FETCH_CHUNK):
            await ex.send({"data": base64.b64encode(chunk).decode()})
    await ex.send({"end": True})


def _every(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0.1 <= value <= 10:
        raise Invalid(f"{name} must be 0.1..10 seconds, got {value!r}")
    return float(value)


def _kind(name: str, value) -> str:
    if value not in ("segment", "checkpoint"):
        raise Invalid(f"{name} must be segment or checkpoint, got {value!r}")
    return value


OPS = {
    "submit": (submit, {"events": (_batch, f.REQUIRED)}),
    "events": (events, {"since": (_since, 0), "follow": (f.flag, False),
                        "types": (_types, []), "raw": (f.flag, False)}),
    "log_follow": (log_follow, {"after": (_since, f.REQUIRED), "every": (_every, 1.0)},
                   "member"),
    "log_fetch": (log_fetch, {"kind": (_kind, f.REQUIRED), "seq": (f.count, f.REQUIRED)},
                  "member"),
}
