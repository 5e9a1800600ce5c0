"""The overlay actor: this host's bridges, VXLAN devices, FDB and neighbour entries.

Its plan is ``projections.overlay.plan(state, this host)``: VNI -> NetworkPlan.
A new plan of the same networks costs only the entries that changed
(``OverlayKernel.update_entries``); anything else, a full comparison.  A
deleted device or entry is put back at once (rtnetlink, ``kernel/watch.py``);
the runner's periodic nudge catches the rest (a changed attribute, a lost
notification), reading the kernel back off this actor's thread.
"""

from __future__ import annotations

import logging
import threading

import attrs

from cantainer.actors.base import KernelActor
from cantainer.kernel import names
from cantainer.kernel.overlay import OverlayKernel
from cantainer.kernel.watch import Removals
from cantainer.projections import overlay

log = logging.getLogger(__name__)


@attrs.frozen
class Checked:
    """The off-thread periodic check is done: whether the kernel differed from ``plan``."""

    plan: dict
    differs: bool


class OverlayActor(KernelActor):
    name = "overlay"
    derive = staticmethod(overlay.plan)

    def __init__(self, context) -> None:
        super().__init__(context)
        self._kernel: OverlayKernel | None = None
        self._removals: Removals | None = None
        self._reconciled_plan: dict | None = None  # what the kernel was last made to hold
        self._checking = False

    def on_start(self) -> None:
        self._kernel = OverlayKernel(self.context.address)
        self._removals = Removals(self.tell_vanished,
                                  links=(names.BRIDGE_PREFIX, names.VXLAN_PREFIX),
                                  neighbours=(names.VXLAN_PREFIX,))

    def on_stop(self) -> None:
        if self._removals is not None:
            self._removals.close()

    def receive(self, message) -> None:
        if not isinstance(message, Checked):
            super().receive(message)
            return
        self._checking = False
        if not message.differs:
            return
        if message.plan == self.plan:
            self.reconcile_fully()  # drift: repair it
        else:  # the plan moved meanwhile: look again against the new one
            self.check()

    def reconcile(self, changed_only: bool = False) -> None:
        plan, old = self.plan, self._reconciled_plan
        if changed_only and plan == old:
            return
        if changed_only and old is not None and plan.keys() == old.keys():
            changes = self._kernel.update_entries(old, plan)
        else:
            changes = self._kernel.reconcile(plan)
        for change in changes:
            log.info("overlay: %s", change)
        self._reconciled_plan = plan

    def differences(self) -> list[str]:
        return self._kernel.differences(self.plan)

    def wants_back(self, items: tuple) -> bool:
        if self._reconciled_plan is None:
            return True
        plans = self._reconciled_plan.values()
        for item in items:
            if item[0] == "link" and any(item[1] in (p.bridge, p.vxlan) for p in plans):
                return True
            if item[0] == "neigh" and any(item[1] == p.vxlan and (item[2] in p.fdb
                                                                 or item[2] in p.neigh)
                                          for p in plans):
                return True
        return False

    # -- the periodic check ---------------------------------------------------------

    def check(self) -> None:
        """Read the kernel back off this actor's thread: at scale that is ~1 400
        entries of netlink parsing (0.1 s alone, several times that on a loaded
        machine), and plans would wait behind it.  Only a difference costs a full
        reconcile here."""
        if self._checking:
            return
        self._checking = True
        threading.Thread(target=self._check_off_thread, args=(self.plan,),
                         name="overlay-check", daemon=True).start()

    def _check_off_thread(self, plan) -> None:
        try:
            # Safe beside the actor's own changes: each request opens its own socket.
            differs = bool(self._kernel.differences(plan))
        except Exception as exc:  # the reconcile that follows will say what is wrong
            log.warning("overlay: checking the kernel failed: %s", exc)
            differs = True
        self.tell_self(Checked(plan, differs))
