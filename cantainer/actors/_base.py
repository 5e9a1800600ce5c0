"""The Pykka side of an actor: feed the projection, reconcile, report progress.

An actor receives three messages by ``tell``: :class:`Deliver` (new records,
in seq order), :class:`Reconcile` (the pipeline's periodic nudge, so drift
heals even when the log is quiet, or a look its own threads ask for) and
:class:`Vanished` (the kernel reports some of its links or entries gone).  It
publishes the seq it has applied in ``context.progress[name]`` and its
rejections in ``context.rejected[name]``, which the daemon reads without
asking (a plain dict write is atomic).  An exception in any message crashes
the actor on purpose: the pipeline logs it and starts a fresh one, which
replays the log from seq 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import ClassVar

import attrs
import pykka

from cantainer.events import Event, Recorded

log = logging.getLogger(__name__)


@attrs.define
class ActorContext:
    node: str                                # this host's name
    address: str                             # this host's underlay address
    append: Callable[[Event, str], None]     # thread-safe, fire-and-forget append with an id
    data_dir: str = ""                       # images and container state live here
    underlay_mtu: int = 1500
    progress: dict[str, int] = attrs.Factory(dict)
    rejected: dict[str, dict[int, str]] = attrs.Factory(dict)  # actor -> seq -> reason
    progressed: Callable[[], None] = lambda: None  # thread-safe: "progress changed"
    peers: dict[str, str] = attrs.Factory(dict)  # live member -> dqlite address (membership)
    suspect_after: float = 10.0


@attrs.frozen
class Deliver:
    records: tuple[Recorded, ...]


@attrs.frozen
class Reconcile:
    """Compare the kernel with the projection.  One that was sent before the last
    comparison began is dropped: a burst of removals costs one full reconcile.
    ``periodic``: the pipeline's safety net, not a known change (an actor may
    check first, off its thread: :meth:`ProjectionActor.check`).  ``full=False``:
    only what changed (``reconcile(changed_only=True)``), e.g. a container that
    started or ended; never dropped."""

    sent: float = attrs.field(factory=time.monotonic)
    periodic: bool = False
    full: bool = True


@attrs.frozen
class Vanished:
    """The kernel reports some of this actor's links or entries gone
    (``kernel.watch.Removals``): put back whatever the plan still wants."""

    items: tuple
    sent: float = attrs.field(factory=time.monotonic)


class ProjectionActor(pykka.ThreadingActor):
    name: ClassVar[str]

    def __init__(self, context: ActorContext, projection) -> None:
        super().__init__()
        self.context = context
        self.projection = projection
        self._reconciled_at = float("-inf")  # when the last full reconcile began

    def on_receive(self, message) -> None:
        if isinstance(message, Deliver):
            self.projection.apply_all(message.records)
            rejected = self.context.rejected.setdefault(self.name, {})
            for rec in message.records:
                reason = self.projection.verdict(rec.seq)
                if reason:
                    rejected[rec.seq] = reason
            self.context.progress[self.name] = self.projection.applied
            self.context.progressed()
            if self._reconciled_at == float("-inf"):
                self.reconcile_fully()  # the first look after a start: all of it
            else:
                self.reconcile(changed_only=True)
        elif isinstance(message, Reconcile) and not message.full:
            self.reconcile(changed_only=True)
        elif isinstance(message, Reconcile) and message.sent >= self._reconciled_at:
            if message.periodic:
                self.check()
            else:
                self.reconcile_fully()
        elif isinstance(message, Vanished) and message.sent >= self._reconciled_at:
            if ("lost",) in message.items or self.wants_back(message.items):
                self.reconcile_fully()

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        log.error("%s actor failed at seq %d: %s: %s", self.name, self.projection.applied,
                  exception_type.__name__, exception_value)

    def reconcile(self, changed_only: bool = False) -> None:
        """Make the kernel match the projection; actors without kernel state skip it.

        ``changed_only``: after new events, only if the desired state changed
        (the periodic :class:`Reconcile` always compares with the kernel).
        """

    def wants_back(self, items: tuple) -> bool:
        """Whether the plan wants any of these vanished links or entries (not the
        ones this actor removed itself, nor ones the kernel keeps by itself)."""
        return True

    def tell_vanished(self, items: list) -> None:
        """``Removals``' callback, from its thread."""
        try:
            self.actor_ref.tell(Vanished(tuple(items)))
        except pykka.ActorDeadError:
            pass  # a fresh actor reconciles on its own

    def reconcile_fully(self) -> None:
        """A full comparison with the kernel; messages sent before it began are moot."""
        self._reconciled_at = time.monotonic()
        self.reconcile()

    def check(self) -> None:
        """The periodic comparison: by default a full reconcile, here and now."""
        self.reconcile_fully()

    # -- asked by the API (through a proxy) -------------------------------------------

    def applied(self) -> int:
        return self.projection.applied


