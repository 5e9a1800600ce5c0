"""The append-only event log: one table in a dqlite database.

    events(seq INTEGER PRIMARY KEY,   -- Raft order, gap-free (rows are never deleted)
           id TEXT UNIQUE,            -- the submitter's idempotency key
           type, version, node, time, payload BLOB)

``append`` writes a batch in one statement (one transaction for batches of
more than ``CHUNK`` events) with ``INSERT OR IGNORE``.  When every row was
new, the seqs follow from the last insert id; otherwise they are read back by
id: a retried append after a timeout, a leader change or an ambiguous commit
finds its rows already there and returns the original seqs.
Every call retries transient failures (no leader yet, leader changed, lost
connection) with bounded backoff, and raises :class:`LogUnavailable` when no
leader answered within ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from dqliteclient import (
    ClusterClient,
    ClusterError,
    ClusterPolicyError,
    DqliteConnection,
    DqliteConnectionError,
    NodeStore,
    OperationalError,
)

from cantainer.errors import InvalidEvent, LogUnavailable
from cantainer.events.catalogue import Event
from cantainer.events.codec import (Recorded, decode_rows, encode, new_event_id,
                                    rows_from_json)
from cantainer.events.validate import event_id

log = logging.getLogger(__name__)

DATABASE = "cantainer"
# Rows per INSERT statement: libdqlite 1.11 (Debian 12) takes at most 255
# parameters in one statement (a one-byte count on the wire); 6 per row.
MAX_PARAMS = 255
CHUNK = MAX_PARAMS // 6
SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    version INTEGER NOT NULL,
    node TEXT NOT NULL,
    time REAL NOT NULL,
    payload BLOB NOT NULL)"""
# Reads ask for their rows as one JSON value: dqlite-client decodes every value of a
# result in Python (13 us a row of seven, the daemon's whole cost of a replay), and
# the node makes this one in C (codec.rows_from_json reads it).
_AS_ONE_VALUE = ("SELECT json_group_array(json_array(seq, id, type, version, node, "
                 "printf('%!.17g', time), CASE WHEN typeof(payload) = 'blob' "
                 "THEN hex(payload) END)) FROM (SELECT * FROM events")
# Beside the log, the few secrets of the cluster (the CA's key, the join secret): they
# are no events — they change, and they must not be kept forever in its history.
SECRETS = """CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL)"""
# libdqlite 1.11 breaks a transaction whose dirty pages spill out of SQLite's page
# cache (default 2 MiB) before COMMIT: "disk I/O error" answers, a transaction kept
# only in part, or an abort in vfsDatabaseTruncate (canonical/dqlite#163; LXD sets
# the same band-aid).  Each session gets a cache no batch the API takes comes near.
PAGE_CACHE = "PRAGMA cache_size = -65536"  # KiB: 64 MiB, allocated only as used

# Records removed per transaction when the log is compacted.  Each transaction is a Raft
# entry, and libraft keeps the last 64-128 entries in memory whatever their size (engine.py):
# a DELETE rewrites every page its rows were on, 0.8 MB for 5,000 records, four times an
# append batch's entry.  At 1,000 (0.18 MB, as a batch) a voter kept 15 MiB less.
COMPACT_CHUNK = 1000

# SQLite result codes that mean "try again, maybe elsewhere": BUSY and dqlite's
# IOERR_NOT_LEADER / IOERR_LEADERSHIP_LOST family (primary code 10).
_RETRY_PRIMARY_CODES = {5, 10}


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ClusterPolicyError):
        return False
    if isinstance(exc, OperationalError):
        return (exc.code & 0xFF) in _RETRY_PRIMARY_CODES
    return isinstance(exc, (DqliteConnectionError, ClusterError, OSError, TimeoutError))


class EventLog:
    """Append to and read from the replicated log, from any member node.

    ``nodes`` is where to look for the leader: the members this host knows
    (``MemoryNodeStore([...addresses])`` will do).  One operation at a time
    goes over the connection; create a second ``EventLog`` for a reader
    that must not wait behind writers.
    """

    def __init__(self, nodes: NodeStore, *, node: str, timeout: float = 10.0,
                 rpc_timeout: float = 2.0, clock: Callable[[], float] = time.time,
                 dial=None) -> None:
        self.node = node
        self.timeout = timeout
        self._clock = clock
        # ``dial``: how to reach a member (trust/dqlite.py: TLS); the library's plain
        # TCP when None (a one-node log on loopback, in tests).  Its timeout covers a
        # TLS handshake too.
        self._cluster = ClusterClient(nodes, timeout=rpc_timeout,
                                      dial_timeout=min(rpc_timeout, 1.5), dial_func=dial)
        self._conn: DqliteConnection | None = None
        self._lock = asyncio.Lock()
        self._schema_ready = False

    # -- plumbing -------------------------------------------------------------------

    async def _connection(self) -> DqliteConnection:
        if self._conn is None or not self._conn.is_connected:
            self._conn = await self._cluster.connect(DATABASE, max_attempts=1)
            await self._conn.execute(PAGE_CACHE)
            if not self._schema_ready:
                await self._conn.execute(SCHEMA)
                await self._conn.execute(SECRETS)
                self._schema_ready = True
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _retrying[T](self, what: str, op: Callable[[DqliteConnection], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = 0.02
        async with self._lock:
            while True:
                try:
                    return await op(await self._connection())
                except Exception as exc:
                    await self._drop()  # never reuse a session left mid-transaction
                    if not _transient(exc):
                        raise
                    if loop.time() + delay > deadline:
                        raise LogUnavailable(
                            f"{what}: no dqlite leader answered within {self.timeout:g}s "
                            f"(last error: {exc})") from None
                    log.debug("%s: retrying after %s", what, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    # -- the log --------------------------------------------------------------------

    async def append(self, events: Sequence[Event], ids: Sequence[str] | None = None) -> list[int]:
        """Append events in order, atomically; return their seqs.

        ``ids`` are idempotency keys (fresh UUIDs when omitted): an id already
        in the log is not appended again, and its original seq is returned.
        """
        return (await self.append_recorded(events, ids))[0]

    async def append_recorded(self, events: Sequence[Event], ids: Sequence[str] | None = None
                              ) -> tuple[list[int], list[Recorded] | None]:
        """``append``, and the records as the log now holds them when every one was new
        (None when some id was there already: then what the log holds is its own)."""
        if not events:
            return [], None
        if ids is None:
            ids = [new_event_id() for _ in events]
        if len(ids) != len(events):
            raise InvalidEvent("append needs one id per event")
        now = self._clock()
        rows = [(event_id(i), e.type_name(), e.VERSION, self.node, now, encode(e))
                for i, e in zip(ids, events, strict=True)]

        async def write(conn: DqliteConnection):
            chunks = [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)]
            if len(chunks) > 1:
                await conn.execute("BEGIN")
            seqs: list[int] | None = []
            for chunk in chunks:
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
                last, inserted = await conn.execute(
                    f"INSERT OR IGNORE INTO events (id, type, version, node, time, payload) "
                    f"VALUES {values}", [x for row in chunk for x in row])
                if seqs is not None and inserted == len(chunk):
                    # Every row is new: an INTEGER PRIMARY KEY gives one statement's
                    # rows consecutive seqs, ending at the last insert id.
                    seqs.extend(range(last - inserted + 1, last + 1))
                else:
                    seqs = None  # some ids were there already: ask for their seqs
            if len(chunks) > 1:
                await conn.execute("COMMIT")
            if seqs is None:
                return await self._seqs_of(conn, list(ids)), None
            return seqs, [Recorded(seq, row[0], row[1], row[2], row[3], row[4], event)
                          for seq, row, event in zip(seqs, rows, events, strict=True)]

        return await self._retrying("append", write)

    async def _seqs_of(self, conn: DqliteConnection, ids: list[str]) -> list[int]:
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), MAX_PARAMS):
            part = unique[i:i + MAX_PARAMS]
            marks = ", ".join("?" * len(part))
            for row_id, seq in await conn.fetchall(
                    f"SELECT id, seq FROM events WHERE id IN ({marks})", part):
                found[row_id] = seq
        return [found[i] for i in ids]

    async def read(self, after: int = 0, limit: int = 1000,
                   types: Sequence[str] | None = None) -> list[Recorded]:
        """Up to ``limit`` events with seq > ``after`` (of ``types`` only, if given)."""
        return decode_rows(await self.read_rows(after, limit, types))

    async def read_rows(self, after: int = 0, limit: int = 1000,
                        types: Sequence[str] | None = None) -> list[list]:
        """``read``'s rows as stored, ``[seq, id, type, version, node, time, payload]``,
        the payloads not decoded (a record stream's rows: ``codec.pack_rows``)."""
        where, params = "seq > ?", [after]
        if types:
            where += f" AND type IN ({', '.join('?' * len(types))})"
            params += list(types)

        async def query(conn: DqliteConnection) -> str:
            return await conn.fetchval(f"{_AS_ONE_VALUE} WHERE {where} ORDER BY seq LIMIT ?)",
                                       [*params, limit])

        return rows_from_json(json.loads(await self._retrying("read", query)))

    async def secret(self, name: str) -> str | None:
        async def query(conn: DqliteConnection) -> str | None:
            return await conn.fetchval("SELECT value FROM secrets WHERE name = ?", [name])

        return await self._retrying("read a secret", query)

    async def set_secret(self, name: str, value: str, *, replace: bool) -> str:
        """Store a secret (``replace=False``: only if it has none yet); the value it holds."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"

        async def write(conn: DqliteConnection) -> str:
            await conn.execute(f"{verb} INTO secrets (name, value) VALUES (?, ?)", [name, value])
            return await conn.fetchval("SELECT value FROM secrets WHERE name = ?", [name])

        return await self._retrying("write a secret", write)

    async def first(self) -> int:
        """The seq of the oldest record the database still holds (0: none); older ones
        are archived (``daemon/archive.py``)."""

        async def query(conn: DqliteConnection) -> int:
            return await conn.fetchval("SELECT coalesce(min(seq), 0) FROM events")

        return await self._retrying("first", query)

    async def compact(self, upto: int, chunk: int = COMPACT_CHUNK) -> int:
        """Remove the records up to seq ``upto`` from the database, ``chunk`` a
        transaction (a Raft entry each); how many went.  Only for records every host
        can have from elsewhere: archive segments and a checkpoint at ``upto``, vouched
        for by records after it, which stay (so the next seq is still head + 1)."""
        removed = 0

        async def write(conn: DqliteConnection) -> int:
            oldest = await conn.fetchval("SELECT coalesce(min(seq), 0) FROM events")
            if not oldest or oldest > upto:
                return 0
            _, n = await conn.execute("DELETE FROM events WHERE seq <= ?",
                                      [min(upto, oldest + chunk - 1)])
            return n

        while n := await self._retrying("compact", write):
            removed += n
        return removed

    async def head(self) -> int:
        """The seq of the last event, 0 for an empty log."""

        async def query(conn: DqliteConnection) -> int:
            return await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events")

        return await self._retrying("head", query)
