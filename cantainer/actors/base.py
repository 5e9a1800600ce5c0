"""The Pykka side of a kernel actor: receive plans, make the kernel match, tell upward.

An actor owns one part of this host's kernel (the overlay, the containers)
and a frozen copy of what the log wants of it: its *plan*, derived from the
state by the daemon's runner (``projections/overlay.py``, ``runtime.py``).
It never sees the state itself, so no mutable object crosses a thread.

Messages, by ``tell``:

    Desired(seq, plan)   the plan as of log seq ``seq`` (sent after every batch of
                         records); the first one after a start is compared with the
                         kernel in full, later ones only where the plan changed
    Reconcile            compare with the kernel: the runner's periodic nudge
                         (``periodic``: the actor may check first, off its thread),
                         or a look its own threads ask for (``full=False``: only what
                         changed, e.g. a container that started or ended)
    Vanished(items)      the kernel reports some of its links or entries gone
                         (``kernel/watch.py``): put back what the plan still wants

A full comparison makes every request sent before it began moot: a burst of
removals costs one.  An exception in a message crashes the actor on purpose;
the runner logs it and starts a fresh one, which gets the current plan.

Upward, an actor only *tells*, through the ``Listener`` in its context, from its
own thread: which plan seq it has made true, and events to append (its reports:
a container started, exited).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import ClassVar, Protocol

import attrs
import pykka

from cantainer.events import Event

log = logging.getLogger(__name__)


class Listener(Protocol):
    """What the actors tell the daemon.  Called on the actors' threads: thread-safe,
    and returns at once."""

    def reconciled(self, actor: str, seq: int) -> None:
        """``actor`` has made the kernel match its plan as of log seq ``seq``."""

    def report(self, event: Event, event_id: str) -> None:
        """Append ``event`` (fire and forget: its id makes a repeat append nothing).
        What it reports is on this host's disk already: it implies ``noticed``."""

    def noticed(self) -> None:
        """This host's files show a change before the log does (a container's pid or
        exit code, recorded by its shim): whoever waits for one may look now."""


@attrs.frozen
class ActorContext:
    node: str               # this host's name
    address: str            # this host's underlay address
    data_dir: str           # images and container state live here
    listener: Listener
    underlay_mtu: int = 1500
    # the replicas' lease (daemon/lease.py): its file, and how old it may be
    lease: tuple[str, float] | None = None
    # actor name -> [messages handled, seconds spent on them] (only its actor writes it)
    stats: dict = attrs.field(factory=dict, eq=False)


@attrs.frozen
class Desired:
    seq: int
    plan: Mapping


@attrs.frozen
class Reconcile:
    sent: float = attrs.field(factory=time.monotonic)
    periodic: bool = False
    full: bool = True


@attrs.frozen
class Vanished:
    items: tuple  # kernel.watch.Removed
    sent: float = attrs.field(factory=time.monotonic)


class KernelActor(pykka.ThreadingActor):
    name: ClassVar[str]
    # (state, this host) -> this actor's plan: pure, called by the runner on its loop.
    derive: ClassVar[Callable[..., Mapping]]

    def __init__(self, context: ActorContext) -> None:
        super().__init__()
        self.context = context
        self.plan: Mapping | None = None  # None until the first Desired
        self.seq = 0
        self._reconciled_at = float("-inf")  # when the last full comparison began

    def on_receive(self, message) -> None:
        """Each message handled by ``receive``, its time counted (the daemon's metrics:
        ``ActorContext.stats``)."""
        started = time.perf_counter()
        try:
            self.receive(message)
        finally:
            counted = self.context.stats.setdefault(self.name, [0, 0.0])
            counted[0] += 1
            counted[1] += time.perf_counter() - started

    def receive(self, message) -> None:
        if isinstance(message, Desired):
            old, self.plan, self.seq = self.plan, message.plan, message.seq
            if old is None:
                self.reconcile_fully()  # the first look after a start: all of it
            elif message.plan != old:
                self.reconcile(changed_only=True)
            self.context.listener.reconciled(self.name, self.seq)
        elif self.plan is None:
            return  # nothing to compare with yet: the first Desired compares all
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
        log.error("%s actor failed at seq %d: %s: %s", self.name, self.seq,
                  exception_type.__name__, exception_value)

    # -- what an actor defines ------------------------------------------------------------

    def reconcile(self, changed_only: bool = False) -> None:
        """Make the kernel match ``self.plan``.  ``changed_only``: after a new plan or a
        look asked for, what changed; otherwise compare all of it with the kernel."""

    def differences(self) -> list[str]:
        """How the kernel differs from the plan, without changing anything."""
        return []

    def wants_back(self, items: tuple) -> bool:
        """Whether the plan wants any of these vanished links or entries (not the
        ones this actor removed itself, nor ones the kernel keeps by itself)."""
        return True

    def check(self) -> None:
        """The periodic comparison: by default a full reconcile, here and now."""
        self.reconcile_fully()

    # -- helpers ---------------------------------------------------------------------------

    def reconcile_fully(self) -> None:
        """A full comparison with the kernel; requests sent before it began are moot."""
        self._reconciled_at = time.monotonic()
        self.reconcile()

    def tell_self(self, message) -> None:
        """From one of this actor's own threads (a watcher, a timer)."""
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # a fresh actor looks for itself

    def tell_vanished(self, items: list) -> None:
        """``kernel.watch.Removals``' callback, from its thread."""
        self.tell_self(Vanished(tuple(items)))
