"""The API's handle on the daemon (``api/handle.py`` says what it is for)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from cantainer.actors.runtime import Followed
from cantainer.config import Config, peer_port
from cantainer.errors import LogUnavailable
from cantainer.events import Event, Recorded, decode_rows
from cantainer.events.log import EventLog
from cantainer.events.raft import RaftMember
from cantainer.kernel.images import ImageStore
from cantainer.kernel.volumes import VolumeStore
from cantainer.daemon.heartbeat import Heartbeats
from cantainer.daemon.runner import Runner
from cantainer.trust.files import Credentials
from cantainer.trust.tls import Gate, client_context


class DaemonHandle:
    def __init__(self, config: Config, log: EventLog, reader: EventLog, runner: Runner,
                 raft: RaftMember, heartbeats: Heartbeats, images: ImageStore,
                 creds: Credentials, gate: Gate, appended: Callable[[], None],
                 stop: Callable[[], None]) -> None:
        self.node = config.name
        self.data_dir = config.data_dir
        self.images = images
        self.volumes = VolumeStore(config.data_dir)
        self.state = runner.state
        self.ca = creds.ca
        self.gate = gate
        self.peer_tls = client_context(creds, creds.ca)
        self._config = config
        self._log, self._reader = log, reader
        self._runner, self._raft, self._heartbeats = runner, raft, heartbeats
        self._appended, self._stop = appended, stop
        self.follower = None  # daemon/images.py: ImageFollower, set by the daemon
        self.metrics = None  # daemon/metrics.py: Metrics, set by the daemon
        self.archive = runner.archive  # daemon/archive.py
        self._first = 0  # the database's oldest seq, as last seen (it only grows)
        self.checkpoints = runner.checkpoints  # daemon/checkpoints.py

    async def append(self, events: Sequence[Event], ids: Sequence[str]) -> list[int]:
        started = time.perf_counter()
        try:
            seqs, records = await self._log.append_recorded(events, ids)
        except LogUnavailable as exc:
            # Raft may still commit what the old leader holds: only a retry with the
            # same id is safe, so say which id that is.
            again = f"--id {ids[0]}" if len(ids) == 1 else "the same ids"
            raise LogUnavailable(f"{exc}; the event may still be appended later: retry "
                                 f"with {again} to append it at most once") from None
        # The next ones in order: applied without a read (and no read of our own after).
        self._appended(read_here=not self._runner.offer(records))
        await self._runner.wait_applied(max(seqs))
        if self.metrics is not None:
            self.metrics.append_seconds.observe(time.perf_counter() - started)
        if (rejected := self.state.rejection(seqs)) is not None:
            raise rejected
        return seqs

    async def read(self, after: int, limit: int,
                   types: Sequence[str] | None = None) -> list[Recorded]:
        return decode_rows(await self.read_rows(after, limit, types))

    async def read_rows(self, after: int, limit: int,
                        types: Sequence[str] | None = None) -> list[list]:
        """The log's rows after ``after``: archived ones from the archive (this host's
        segments, or a member's), the rest from the database.  The database's oldest
        seq is asked for only when a read does not begin right after ``after``: the
        log has no gaps but compaction's."""
        while True:
            if self._first > after + 1:
                await self.wait_applied()  # the SegmentArchived records up to the head
                rows = await self.archive.read(self.state.segments, after, self._first - 1,
                                               limit, types)
                if rows:
                    return rows
                after = self._first - 1
            rows = await self._reader.read_rows(after=after, limit=limit, types=types)
            if rows and rows[0][0] == after + 1:
                return rows
            first = await self._reader.first()
            if first <= after + 1:
                return rows  # only other types in between, or nothing yet
            self._first = first  # compacted past ``after``: those are in the archive

    async def first(self) -> int:
        return await self._reader.first()

    # -- relaying the log (daemon/fanout.py) ---------------------------------------------

    async def relay_rows(self, after: int, limit: int) -> list[list] | None:
        """The database's records after ``after``, for a follower: those applied here
        last, else read from the leader; None when they do not begin right after it
        (compacted: the follower must see that gap in the database itself)."""
        rows = self._runner.recent.after(after, limit)
        if rows is None:
            rows = await self._reader.read_rows(after=after, limit=limit)
            if rows and rows[0][0] != after + 1:
                return None
        return rows

    async def relayed(self, timeout: float) -> bool:
        """Until this host applied more records (true), or ``timeout`` seconds."""
        return await self._runner.recent.added(timeout)

    def fresh(self) -> float:
        """Seconds since this host's tailer last had an answer from a quorum."""
        return max(0.0, time.monotonic() - self._runner.last_read_ok)

    def feed(self) -> str:
        """Whom this host's tailer reads the log from: a relay's name, or the leader."""
        return getattr(self._runner.log, "source", None) or "leader"

    def archived(self, kind: str, seq: int) -> str | None:
        if kind == "segment":
            first = self.state.segments.get(seq, (None,))[0]
            path = self.archive.path(first, seq) if first is not None else None
        else:
            path = self.checkpoints.path(seq)
        return path if path is not None and os.path.exists(path) else None

    async def head(self) -> int:
        return await self._reader.head()

    async def wait_applied(self, seq: int | None = None) -> None:
        await self._runner.wait_applied(await self.head() if seq is None else seq)

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        await self._runner.until(done, timeout, what)

    async def changed(self, timeout: float) -> None:
        await self._runner.changed(timeout)

    def follow(self, container: str, on: bool) -> None:
        self._runner.tell("runtime", Followed(container, on))

    async def acted_on(self, seq: int) -> None:
        for actor in self._runner.refs:
            await self._runner.wait_reconciled(actor, seq)

    async def differences(self) -> list[str]:
        found = []
        for actor in self._runner.refs:
            found += await self._runner.ask(actor, "differences")
        return found

    async def secret(self, name: str) -> str | None:
        return await self._reader.secret(name)

    async def set_secret(self, name: str, value: str, *, replace: bool) -> str:
        return await self._log.set_secret(name, value, replace=replace)

    async def fetch_image(self, image: str) -> None:
        await self.follower.fetch(image)

    def peer(self, host: str) -> tuple[str, int] | None:
        node = self.state.members.live().get(host)
        if node is None:
            return None
        address, _, port = node.dqlite_address.rpartition(":")
        return address, peer_port(int(port))

    async def raft(self) -> dict:
        members = await self._raft.members()
        return {"node_id": f"{self._raft.node_id:x}", "address": self._config.dqlite_address,
                "leader": await self._raft.leader(),
                "members": [{"id": f"{m.node_id:x}", "address": m.address,
                             "role": m.role.name.lower()} for m in members]}

    def heard(self) -> dict[str, dict]:
        return self._heartbeats.seen()

    def heartbeats_refused(self) -> int:
        return self._heartbeats.refused

    def stop(self) -> None:
        self._stop()
