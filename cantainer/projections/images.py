"""Images: which host holds which image, made from an archive of which digest.

Images live in each host's store (``kernel/images.py``); the log records where
(``ImageStored``, ``ImageDeleted``; a host that leaves holds nothing), so that a host
that must run a container of an image it lacks knows whom to fetch it from and what
digest to check (``daemon/images.py``), and ``image ls`` shows where each one is.
``busybox`` is built by every host itself and never recorded.
"""

from __future__ import annotations

import attrs

from cantainer.events import ImageDeleted, ImageStored, NodeLeft
from cantainer.projections.base import Projection
from cantainer.projections.membership import Membership


@attrs.frozen
class Held:
    digest: str  # SHA-256 of the archive the host made it from
    size: int
    kind: str    # rootfs | image
    seq: int


class Images(Projection):
    def __init__(self, members: Membership) -> None:
        super().__init__()
        self.members = members
        self.held: dict[str, dict[str, Held]] = {}  # image -> host -> what it holds

    def holders(self, image: str, digest: str | None = None) -> dict[str, Held]:
        """The live hosts that hold ``image`` (of that digest, if one is given)."""
        return {host: held for host, held in sorted(self.held.get(image, {}).items())
                if self.members.is_live(host) and (digest is None or held.digest == digest)}

    def on_ImageStored(self, e: ImageStored, seq: int) -> str | None:
        if not self.members.is_live(e.host):
            return f"host {e.host!r} is not a member of the cluster"
        self.held.setdefault(e.image, {})[e.host] = Held(e.digest, e.size, e.kind, seq)
        return None

    def on_ImageDeleted(self, e: ImageDeleted, seq: int) -> str | None:
        if self.held.get(e.image, {}).pop(e.host, None) is None:
            return f"host {e.host!r} holds no image {e.image}"
        if not self.held[e.image]:
            del self.held[e.image]
        return None

    def on_NodeLeft(self, e: NodeLeft, seq: int) -> str | None:
        for image in list(self.held):
            self.held[image].pop(e.name, None)
            if not self.held[image]:
                del self.held[image]
        return None
