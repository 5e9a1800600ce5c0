"""The cluster's state as the log decides it: every projection, each record applied once.

    ClusterState
      ├── members: Membership   who is in the cluster (projections/membership.py)
      ├── ipam: Ipam            networks, VNIs, containers, addresses (projections/ipam.py)
      ├── services: Services    services, their replicas' placement (projections/services.py)
      └── images: Images        which host holds which image (projections/images.py)

On a host, the daemon's runner (``daemon/runner.py``) owns the one
``ClusterState``: it applies each record once, on the daemon's event loop, and
gives the kernel actors frozen plans derived from it (``overlay.plan``,
``runtime.plan``), never the state itself.  ``cantainer replay`` builds one
from a log it reads (``projections/view.py``).
"""

from __future__ import annotations

from cantainer.errors import Rejected
from cantainer.events import Recorded
from cantainer.events.codec import UnknownEvent
from cantainer.projections.images import Images
from cantainer.projections.ipam import Ipam
from cantainer.projections.membership import Membership
from cantainer.projections.services import Services

KEEP_DIGESTS = 1024  # the newest CheckpointTaken digests kept (compaction looks back)


class ClusterState:
    def __init__(self) -> None:
        self.members = Membership()
        self.ipam = Ipam(self.members)
        self.services = Services(self.members, self.ipam)
        self.images = Images(self.members)
        self.applied = 0
        # seq -> the digest CheckpointTaken recorded for the state at it (the newest few;
        # no projection's: a checkpoint does not hold them)
        self.checkpoints: dict[int, str] = {}
        # last seq -> (first seq, digest): every archive segment SegmentArchived vouched
        # for (a checkpoint holds them: a host started from one can check any segment)
        self.segments: dict[int, tuple[int, str]] = {}
        # --checkpoint-every as ClusterCreated recorded it (None: a cluster from before)
        self.checkpoint_every: int | None = None

    def apply(self, rec: Recorded) -> None:
        """Apply one record in seq order (one at or below ``applied`` changes nothing);
        membership first: IPAM reads it; services last: they read both, and place
        their replicas' containers in IPAM."""
        if rec.seq <= self.applied:
            return
        self.members.applied = self.ipam.applied = self.services.applied = \
            self.images.applied = self.applied = rec.seq
        self.members.handle(rec)
        self.ipam.handle(rec)
        # Only the types they read (a replay applies 100 000 records a second).
        if rec.type in self.services.reads:
            self.services.handle(rec)
        if rec.type in self.images.reads:
            self.images.handle(rec)
        if self.services.services and self.verdict(rec.seq) is None:
            self.services.accepted(rec)
        if rec.type == "CheckpointTaken" and not isinstance(rec.event, UnknownEvent):
            self.checkpoints[rec.event.seq] = rec.event.digest
            while len(self.checkpoints) > KEEP_DIGESTS:
                del self.checkpoints[min(self.checkpoints)]
        elif rec.type == "ClusterCreated" and self.ipam.verdict(rec.seq) is None and \
                not isinstance(rec.event, UnknownEvent):
            self.checkpoint_every = rec.event.checkpoint_every
        elif rec.type == "SegmentArchived" and not isinstance(rec.event, UnknownEvent):
            self.segments.setdefault(rec.event.last, (rec.event.first, rec.event.digest))

    def take(self, other: ClusterState) -> None:
        """Become ``other`` (a loaded checkpoint), in place: whoever holds this object
        (the API's handle, the name server) sees the new state."""
        self.members, self.ipam, self.services, self.images = (
            other.members, other.ipam, other.services, other.images)
        self.segments = other.segments
        self.checkpoint_every = other.checkpoint_every
        self.applied = other.applied

    def apply_all(self, records) -> None:
        for rec in records:
            self.apply(rec)

    def verdict(self, seq: int) -> str | None:
        """Why log order rejected the event at ``seq``, or ``None`` if it was accepted."""
        return (self.members.verdict(seq) or self.ipam.verdict(seq)
                or self.services.verdict(seq) or self.images.verdict(seq))

    def checkpoint_refusal(self, every: int | None) -> str | None:
        """Why a host with ``--checkpoint-every`` ``every`` may not take part (None: it
        may, or it did not say, or the log recorded none)."""
        if self.checkpoint_every is None or every is None or every == self.checkpoint_every:
            return None
        return (f"--checkpoint-every {every} is not this cluster's: its log records "
                f"{self.checkpoint_every} (every host's checkpoints and archive segments "
                f"share those boundaries); start with --checkpoint-every "
                f"{self.checkpoint_every}")

    def rejected(self) -> dict[int, str]:
        return {**self.members.rejected, **self.ipam.rejected, **self.services.rejected,
                **self.images.rejected}

    def rejection(self, seqs) -> Rejected | None:
        """The error for the first of these (applied) seqs that log order rejected."""
        for seq in seqs:
            if (reason := self.verdict(seq)) is not None:
                return Rejected(f"seq {seq} was appended but rejected: {reason}")
        return None
