"""The base of every projection: apply events in seq order, record verdicts.

A projection is pure: ``apply(record)`` changes its state and nothing else.
It resumes at ``applied + 1`` (a record at or below ``applied`` is ignored),
skips records it cannot read (:class:`UnknownEvent`), and dispatches the rest
to ``on_<EventType>(event, seq)``.  A handler returns ``None`` when it
accepts the event, or a one-line reason when log order rejects it (a later
duplicate, an overlap, a full subnet...); the reason is kept in ``rejected``
so the submitter can report it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from cantainer.events import Event, Recorded


class Projection:
    # "EventType" -> on_EventType, found once per class (replay applies every record
    # to two projections).
    _handlers: ClassVar[dict[str, Callable]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = {name.removeprefix("on_"): getattr(cls, name) for name in dir(cls)
                         if name.startswith("on_")}
        cls.reads = frozenset(cls._handlers)  # the event types it has a handler for

    def __init__(self) -> None:
        self.applied = 0
        self.rejected: dict[int, str] = {}

    def apply(self, rec: Recorded) -> None:
        if rec.seq <= self.applied:
            return
        self.applied = rec.seq
        self.handle(rec)

    def handle(self, rec: Recorded) -> None:
        """``apply`` without the seq check: for a caller that made it (ClusterState)."""
        handler = self._handlers.get(rec.type)
        if handler is not None and isinstance(rec.event, Event):
            reason = handler(self, rec.event, rec.seq)
            if reason:
                self.rejected[rec.seq] = reason

    def apply_all(self, records) -> None:
        for rec in records:
            self.apply(rec)

    def verdict(self, seq: int) -> str | None:
        """Why the event at ``seq`` was rejected, or ``None`` if it was accepted."""
        return self.rejected.get(seq)
