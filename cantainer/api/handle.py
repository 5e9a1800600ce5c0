"""What the API may ask of the daemon: the ``Handle``, and nothing else.

The daemon gives the API server one object with these members
(``daemon/handle.py``); the API imports nothing from the daemon, and its
handlers can be tested against a fake handle (tests/unit/test_api.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

from cantainer.events import Event, Recorded
from cantainer.kernel.images import ImageStore
from cantainer.kernel.volumes import VolumeStore
from cantainer.projections.state import ClusterState
from cantainer.trust.tls import Gate


class Handle(Protocol):
    node: str              # this host's name
    data_dir: str          # containers' state directories live under it
    images: ImageStore     # this host's images
    volumes: VolumeStore   # this host's named volumes
    state: ClusterState    # what the log decides, as applied here: read it, never change it
    ca: str                # the cluster CA's certificate (PEM)
    gate: Gate             # who may connect: the live members' certificates
    peer_tls: ssl.SSLContext  # how this member dials another's peer port

    async def append(self, events: Sequence[Event], ids: Sequence[str]) -> list[int]:
        """Append as one batch and wait until this host has applied it; their seqs.
        Raises ``Rejected`` when log order rejected one, ``LogUnavailable`` (naming
        the ids to retry with) when no quorum answered."""

    async def read(self, after: int, limit: int,
                   types: Sequence[str] | None = None) -> list[Recorded]:
        """Records after seq ``after``, from the replicated log (archived ones from the
        archive: this host's segments, or a member's)."""

    async def read_rows(self, after: int, limit: int,
                        types: Sequence[str] | None = None) -> list[list]:
        """The same as stored, payloads not decoded (a record stream's rows)."""

    async def head(self) -> int:
        """The seq of the log's last record."""

    async def first(self) -> int:
        """The seq of the oldest record the database holds (older ones are archived)."""

    async def relay_rows(self, after: int, limit: int) -> list[list] | None:
        """For a follower (``log_follow``): the database's records after ``after``, or
        None when they do not begin right after it (compacted)."""

    async def relayed(self, timeout: float) -> bool:
        """Until this host applied more records (true), or ``timeout`` seconds."""

    def fresh(self) -> float:
        """Seconds since this host's tailer last had an answer from a quorum."""

    def feed(self) -> str:
        """Whom this host's tailer reads the log from: a relay's name, or "leader"."""

    def archived(self, kind: str, seq: int) -> str | None:
        """The file of this host's archive segment ending at ``seq`` (``kind``
        "segment") or checkpoint at ``seq`` ("checkpoint"), if it has one."""

    async def wait_applied(self, seq: int | None = None) -> None:
        """Until the state has applied ``seq`` (the log's head when None)."""

    async def until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``done()`` (a question to the state) holds, asked again as records are
        applied; ``Unavailable`` naming ``what`` after ``timeout`` seconds."""

    async def changed(self, timeout: float) -> None:
        """Until records are applied or an actor reports (a pid, an exit code on disk),
        or ``timeout`` seconds: a pause for one who looks at files too."""

    def follow(self, container: str, on: bool) -> None:
        """A foreground ``run`` records its container's first run itself (``on``): the
        runtime leaves its end, and its start for a moment, to that call; ``on=False``
        when the call is over, however it ended (the runtime records what is left)."""

    async def acted_on(self, seq: int) -> None:
        """Until every kernel actor of this host has acted on the state at ``seq``."""

    async def fetch_image(self, image: str) -> None:
        """Until ``image`` (NAME:TAG) is in this host's store, fetched from a member the
        log says holds it; ``Unavailable`` if none could give it."""

    async def differences(self) -> list[str]:
        """How this host's kernel differs from the state (every actor's part)."""

    async def secret(self, name: str) -> str | None:
        """One of the cluster's secrets (the CA's key, the join secret), from the log's
        database."""

    async def set_secret(self, name: str, value: str, *, replace: bool) -> str:
        """Store a secret (``replace=False``: only if there is none); the value held."""

    def peer(self, host: str) -> tuple[str, int] | None:
        """Where a live member serves its peers (logs, exec); None if it is no member."""

    async def raft(self) -> dict:
        """The Raft group as its leader sees it: {"node_id", "address", "leader",
        "members": [{"id", "address", "role"}]}."""

    def heard(self) -> dict[str, dict]:
        """Heartbeats: member name -> {"applied": seq, "heard": seconds ago}."""

    def heartbeats_refused(self) -> int:
        """Datagrams on the heartbeat port that failed a check (forged, replayed, stale)."""

    def stop(self) -> None:
        """Stop the daemon (after the answer in flight)."""
