"""The archive: the records the database no longer holds, in segments on every host.

Every host, as its runner applies records, packs the rows of the segment being
filled (seqs ``k·E+1`` .. ``(k+1)·E``, E = ``--checkpoint-every``) and writes it
whole when its last seq is applied, to ``DATA_DIR/archive/FIRST-LAST`` (0600): the
rows as the log stores them, a record stream (``codec.pack_rows``), so every host
writes the same bytes.  The Raft leader records each segment's SHA-256 in the log
(``SegmentArchived``, once: its id names the segment), and once the log vouches for
the segments and the checkpoint up to a seq D at least ``--retain`` records behind
the head, it removes the records up to D from the database (``EventLog.compact``).
So the database holds the retention window and the newest checkpoint's tail, not the
history; every host keeps the whole history on disk.

Reading an archived seq (``cantainer events``, ``replay --until``) reads this host's
segment, checked against the digest the log vouched for (``ClusterState.segments``,
which checkpoints carry); one missing or spoilt is fetched from a live member's peer
port (``api/log.py: log_fetch``), checked the same way, and kept.  When no member
has it the reader gets an error that names the seqs, never other records.  A host
whose state is behind the database's oldest record (down while the log was
compacted, or new) starts from the checkpoint at D: its own, or one fetched the same
way and checked against the log's ``CheckpointTaken`` (``Checkpoints.newest``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os

import msgpack

from cantainer.daemon.checkpoints import write_whole
from cantainer.errors import Unavailable
from cantainer.events import BadStream, pack_rows, unpack_rows

log = logging.getLogger(__name__)

KEEP_UNVOUCHED = 1024  # digests of segments written here that the log has not vouched for


class Archive:
    def __init__(self, data_dir: str, every: int) -> None:
        self.dir = os.path.join(data_dir, "archive")
        self.every = every
        self.mine: dict[int, tuple[int, str]] = {}  # last -> (first, digest) written here
        self.fetch = None  # async (kind, seq) -> bytes from a peer: set by the daemon
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._buf = bytearray()  # the rows of the segment being filled, packed
        self._next = 1  # the seq the segment being filled takes next
        self._first = 0  # where it began; a segment begun part way is not written

    # -- writing, from the runner ---------------------------------------------------------

    def reset(self, applied: int) -> None:
        """The state is at ``applied`` (a checkpoint): rows from the next seq on."""
        self._buf, self._next, self._first = bytearray(), applied + 1, applied + 1

    def add(self, rows) -> None:
        """Rows applied here, in order; a segment is written when its last one comes."""
        if not self.every:
            return
        for row in rows:
            seq = row[0]
            if seq != self._next:
                if seq < self._next:
                    continue  # applied already
                self.reset(seq - 1)  # a gap: crossed to a checkpoint; begins part way
            if seq % self.every == 1 % self.every:
                self._buf, self._first = bytearray(), seq
            self._buf += self._pack(row)
            self._next = seq + 1
            if seq % self.every == 0:
                first = seq - self.every + 1
                if self._first == first:
                    self._save(first, seq, bytes(self._buf))
                self._buf = bytearray()

    def _save(self, first: int, last: int, blob: bytes) -> None:
        """Written off the loop; its digest offered to the leader only once on disk."""
        loop = asyncio.get_running_loop()

        def write() -> None:
            try:
                self._write(first, last, blob)
            except OSError as exc:
                log.error("archive segment %d-%d not written: %s", first, last, exc.strerror)
                return
            loop.call_soon_threadsafe(self._written, first, last,
                                      hashlib.sha256(blob).hexdigest())
        loop.run_in_executor(None, write)

    def _written(self, first: int, last: int, digest: str) -> None:
        self.mine[last] = (first, digest)
        for old in sorted(self.mine)[:-KEEP_UNVOUCHED]:
            del self.mine[old]

    async def ensure(self, rows_of, vouched: dict[int, tuple[int, str]],
                     segments: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
        """Before the database lets go of them: this host holds each of ``segments``
        ((first, last) pairs), rebuilding those it lacks from the database
        (``rows_of(first, last)``).  A rebuilt segment of another digest than the
        log's is an error; the ones the log has not vouched for yet are returned
        ((first, last, digest): the leader appends them)."""
        unvouched = []
        for first, last in segments:
            path = self.path(first, last)
            digest = vouched.get(last, (None, None))[1]
            try:
                with open(path, "rb") as f:
                    if digest is not None and \
                            hashlib.sha256(await asyncio.to_thread(f.read)).hexdigest() == digest:
                        continue
            except FileNotFoundError:
                pass
            blob = pack_rows(await rows_of(first, last))
            made = hashlib.sha256(blob).hexdigest()
            if digest is not None and made != digest:
                raise Unavailable(f"archive segment {first}-{last}: the database's records "
                                  f"have sha256 {made[:12]}, not the log's {digest[:12]}")
            await asyncio.to_thread(self._write, first, last, blob)
            log.info("archive segment %d-%d: made from the database", first, last)
            if digest is None:
                unvouched.append((first, last, made))
        return unvouched

    def _write(self, first: int, last: int, blob: bytes) -> None:
        write_whole(self.path(first, last), blob)

    def path(self, first: int, last: int) -> str:
        return os.path.join(self.dir, f"{first}-{last}")

    def check(self, vouched: dict[int, tuple[int, str]]) -> None:
        """Say so if the log's digest of a segment is not this host's; forget those the
        log has vouched for (the leader appends what remains)."""
        for last, (first, d) in list(self.mine.items()):
            if last not in vouched:
                continue
            del self.mine[last]
            if vouched[last][1] != d:
                log.error("archive segment %d-%d: this host's (sha256 %s) differs from the "
                          "one the log recorded (%s)", first, last, d[:12],
                          vouched[last][1][:12])

    # -- reading, for the API ----------------------------------------------------------------

    async def read(self, vouched: dict[int, tuple[int, str]], after: int, upto: int,
                   limit: int, types=None) -> list:
        """Up to ``limit`` rows with ``after`` < seq <= ``upto`` (of ``types`` only, if
        given), from the segments; ``Unavailable`` naming the seqs when a segment is
        neither here nor at any member."""
        out: list = []
        while after < upto and len(out) < limit:
            first, last = next(((f, end) for end, (f, _) in vouched.items()
                                if f <= after + 1 <= end), (after + 1, after + 1))
            try:
                segment = await self.segment(vouched, first, last)
            except Unavailable:
                if out:
                    return out  # what comes before it; the next read says what is missing
                raise
            for row in segment:
                if after < row[0] <= upto and (not types or row[2] in types):
                    out.append(list(row))
                    if len(out) == limit:
                        break
            after = out[-1][0] if len(out) == limit else last
        return out

    async def segment(self, vouched: dict[int, tuple[int, str]], first: int,
                      last: int) -> tuple:
        """The rows of segment ``first``-``last``: this host's, else a peer's; checked."""
        if vouched.get(last, (None,))[0] != first:
            raise Unavailable(f"seq {first} is archived, but the log vouches for no "
                              "segment that holds it")
        digest = vouched[last][1]
        try:
            with open(self.path(first, last), "rb") as f:
                blob = await asyncio.to_thread(f.read)
            if hashlib.sha256(blob).hexdigest() != digest:
                raise ValueError(f"its sha256 is not the log's {digest[:12]}")
            return tuple(unpack_rows(blob))
        except (OSError, ValueError) as exc:
            log.warning("archive segment %d-%d: %s: asking the members", first, last,
                        exc.strerror if isinstance(exc, OSError) else exc)
        reason = "no member answered"
        if self.fetch is not None:
            try:
                blob = await self.fetch("segment", last, digest)
                rows = tuple(unpack_rows(blob))
            except (Unavailable, BadStream) as exc:
                reason = str(exc)
            else:
                try:
                    await asyncio.to_thread(self._write, first, last, blob)
                except OSError as exc:  # served all the same; fetched again next time
                    log.warning("archive segment %d-%d: fetched but not kept: %s", first,
                                last, exc.strerror)
                else:
                    log.info("archive segment %d-%d: fetched (%d bytes)", first, last,
                             len(blob))
                return rows
        raise Unavailable(f"seqs {first}-{last} are archived, and neither this host nor a "
                          f"member has their segment: {reason}")

