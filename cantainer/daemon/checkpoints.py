"""Checkpoints on disk: a restarted daemon starts from the newest one the log vouches for.

Every host, each time its state reaches a seq that is a multiple of
``--checkpoint-every`` (10 000; 0: never), saves the state at that seq
(``projections/checkpoint.py``: canonical, so every host makes the same bytes) to
``DATA_DIR/checkpoints/SEQ`` (0600, written whole, the two newest kept).  The Raft
leader appends ``CheckpointTaken`` (seq, SHA-256) for its own, once (its id names the
seq); a host whose digest of that seq differs says so in its log (its state has
diverged: a bug), and never starts from it.

At start (``restore``) the newest saved checkpoint whose SHA-256 is the one the log
recorded for its seq becomes the state, and the tailer reads only what came after;
a checkpoint that is missing, unreadable, not yet vouched for or of another digest is
passed over with a warning, and with none left the log is read from seq 1 (or, if
the database no longer holds it, from the checkpoint its oldest record follows:
``newest``, a member's if this host has none).  A checkpoint is never trusted for what
it says of itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from cantainer.errors import LogUnavailable, Unavailable
from cantainer.projections.checkpoint import BadCheckpoint, digest, dump, load

log = logging.getLogger(__name__)

KEEP = 2  # checkpoints kept on disk
KEEP_DIGESTS = 1024  # digests of those taken here: the leader vouches for each (compaction
# needs one at least --retain records behind the head, however fast records came)
VOUCH_LOOKAHEAD = 10_000  # records after a checkpoint's seq searched for its CheckpointTaken


class Checkpoints:
    def __init__(self, data_dir: str, every: int) -> None:
        self.dir = os.path.join(data_dir, "checkpoints")
        self.every = every
        self.mine: dict[int, str] = {}  # seq -> digest of the checkpoints taken here
        self.fetch = None  # async (kind, seq, digest) -> bytes from a peer: set by the daemon
        self._warned: set[int] = set()

    def due(self, first: int, last: int) -> bool:
        """Whether a checkpoint's seq is among ``first``..``last``."""
        return bool(self.every) and (first - 1) // self.every != last // self.every

    def take(self, state) -> None:
        """The state as it is now (its seq a multiple of ``every``), saved off the loop."""
        started = time.perf_counter()
        blob = dump(state)
        seq, d = state.applied, digest(blob)
        self.mine[seq] = d
        for old in sorted(self.mine)[:-KEEP_DIGESTS]:
            del self.mine[old]
        log.info("checkpoint at seq %d: %d bytes, sha256 %s, %.1f ms", seq, len(blob), d[:12],
                 (time.perf_counter() - started) * 1000)
        asyncio.get_running_loop().run_in_executor(None, self._write, seq, blob)

    def check(self, recorded: dict[int, str]) -> None:
        """Say so once if the log's digest of a seq is not this host's."""
        for seq, d in self.mine.items():
            if seq in recorded and recorded[seq] != d and seq not in self._warned:
                self._warned.add(seq)
                log.error("checkpoint at seq %d: this host's state (sha256 %s) differs from "
                          "the one the log recorded (%s): it will not be started from",
                          seq, d[:12], recorded[seq][:12])

    def _write(self, seq: int, blob: bytes) -> None:
        write_whole(self.path(seq), blob)
        for old in self.saved()[KEEP:]:
            try:
                os.unlink(os.path.join(self.dir, str(old)))
            except FileNotFoundError:
                pass

    def saved(self) -> list[int]:
        """The seqs of the checkpoints on disk, newest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted((int(n) for n in names if n.isdigit()), reverse=True)

    async def restore(self, state, reader) -> int | None:
        """Make ``state`` the newest checkpoint the log vouches for; its seq, or None
        (the log is then read from seq 1)."""
        for seq in self.saved():
            try:
                with open(os.path.join(self.dir, str(seq)), "rb") as f:
                    blob = f.read()
                recorded = await _recorded(reader, seq)
                if recorded is None:
                    raise BadCheckpoint("the log has no CheckpointTaken for it (yet)")
                if digest(blob) != recorded:
                    raise BadCheckpoint(f"its sha256 {digest(blob)[:12]} is not the log's "
                                        f"{recorded[:12]}")
                loaded = await asyncio.to_thread(load, blob)
                if loaded.applied != seq:
                    raise BadCheckpoint(f"it holds the state at seq {loaded.applied}")
            except (OSError, BadCheckpoint, LogUnavailable) as exc:
                log.warning("checkpoint at seq %d not used: %s", seq, exc)
                continue
            state.take(loaded)
            state.checkpoints[seq] = self.mine[seq] = recorded
            log.info("started from the checkpoint at seq %d (sha256 %s)", seq, recorded[:12])
            return seq
        if self.saved():
            log.warning("no checkpoint the log vouches for: replaying the log from seq 1")
        return None


    async def newest(self, reader, least: int) -> tuple:
        """The state and its digest from the newest checkpoint at seq ``least`` or later
        that the log's database vouches for: this host's, else a member's (``fetch``),
        then kept here.  Used when the records up to ``least`` are archived
        (``daemon/archive.py``): the database holds every record after it."""
        vouched: dict[int, str] = {}
        after = least
        while True:
            batch = await reader.read(after=after, limit=1000, types=["CheckpointTaken"])
            for rec in batch:
                seq = getattr(rec.event, "seq", 0)
                if seq >= least:
                    vouched.setdefault(seq, rec.event.digest)
            if len(batch) < 1000:
                break
            after = batch[-1].seq
        reasons = []
        for seq in sorted(vouched, reverse=True)[:3]:
            try:
                return await self._at(seq, vouched[seq])
            except Unavailable as exc:
                reasons.append(str(exc))
        raise Unavailable("; ".join(reasons) or f"the log vouches for no checkpoint at seq "
                          f"{least} or later")

    async def _at(self, seq: int, recorded: str) -> tuple:
        try:
            with open(self.path(seq), "rb") as f:
                blob = f.read()
            if digest(blob) != recorded:
                raise BadCheckpoint(f"its sha256 {digest(blob)[:12]} is not the log's")
        except (OSError, BadCheckpoint) as exc:
            if self.fetch is None:
                raise Unavailable(f"no checkpoint at seq {seq} here ({exc})") from None
            blob = await self.fetch("checkpoint", seq, recorded)  # checked against it
            await asyncio.to_thread(self._write, seq, blob)
        try:
            loaded = await asyncio.to_thread(load, blob)
        except BadCheckpoint as exc:
            raise Unavailable(f"the checkpoint at seq {seq}: {exc}") from None
        if loaded.applied != seq:
            raise Unavailable(f"the checkpoint at seq {seq} holds the state at seq "
                              f"{loaded.applied}")
        self.mine[seq] = recorded
        return loaded, recorded

    def path(self, seq: int) -> str:
        return os.path.join(self.dir, str(seq))


def write_whole(path: str, blob: bytes) -> None:
    """``blob`` to ``path`` (0600, its directory 0700), whole or not at all: written to
    a scratch file, synced, then renamed (checkpoints, archive segments)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


async def _recorded(reader, seq: int) -> str | None:
    """The digest the log's CheckpointTaken gives for ``seq``."""
    after = seq
    while after < seq + VOUCH_LOOKAHEAD:
        batch = await reader.read(after=after, limit=1000, types=["CheckpointTaken"])
        for rec in batch:
            if getattr(rec.event, "seq", None) == seq:
                return rec.event.digest
        if len(batch) < 1000:
            return None
        after = batch[-1].seq
    return None
