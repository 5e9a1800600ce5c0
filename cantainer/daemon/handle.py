"""The API's handle on the daemon (``api/handle.py`` says what it is for)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cantainer.config import Config, peer_port
from cantainer.errors import LogUnavailable
from cantainer.events import Event, Recorded
from cantainer.events.log import EventLog
from cantainer.events.raft import RaftMember
from cantainer.kernel.images import ImageStore
from cantainer.daemon.heartbeat import Heartbeats
from cantainer.daemon.runner import Runner


class DaemonHandle:
    def __init__(self, config: Config, log: EventLog, reader: EventLog, runner: Runner,
                 raft: RaftMember, heartbeats: Heartbeats, images: ImageStore,
                 appended: Callable[[], None], stop: Callable[[], None]) -> None:
        self.node = config.name
        self.data_dir = config.data_dir
        self.images = images
        self.state = runner.state
        self._config = config
        self._log, self._reader = log, reader
        self._runner, self._raft, self._heartbeats = runner, raft, heartbeats
        self._appended, self._stop = appended, stop

    async def append(self, events: Sequence[Event], ids: Sequence[str]) -> list[int]:
        try:
            seqs = await self._log.append(events, ids)
        except LogUnavailable as exc:
            # Raft may still commit what the old leader holds: only a retry with the
            # same id is safe, so say which id that is.
            again = f"--id {ids[0]}" if len(ids) == 1 else "the same ids"
            raise LogUnavailable(f"{exc}; the event may still be appended later: retry "
                                 f"with {again} to append it at most once") from None
        self._appended()
        await self._runner.wait_applied(max(seqs))
        if (rejected := self.state.rejection(seqs)) is not None:
            raise rejected
        return seqs

    async def read(self, after: int, limit: int,
                   types: Sequence[str] | None = None) -> list[Recorded]:
        return await self._reader.read(after=after, limit=limit, types=types)

    async def head(self) -> int:
        return await self._reader.head()

    async def wait_applied(self, seq: int | None = None) -> None:
        await self._runner.wait_applied(await self.head() if seq is None else seq)

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        await self._runner.until(done, timeout, what)

    async def acted_on(self, seq: int) -> None:
        for actor in self._runner.refs:
            await self._runner.wait_reconciled(actor, seq)

    async def differences(self) -> list[str]:
        found = []
        for actor in self._runner.refs:
            found += await self._runner.ask(actor, "differences")
        return found

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

    def stop(self) -> None:
        self._stop()
