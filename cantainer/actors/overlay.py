"""Overlay: the VXLAN picture of each host, and the actor that makes it so.

A host materialises a network (a bridge and a VXLAN device enslaved to it)
while the log holds at least one container of that network on this host.
For every container of that network on another live host it holds one FDB
entry (MAC -> that host's underlay address) and one permanent neighbour
entry (IP -> MAC) on the VXLAN device, which answers ARP by proxy: no
flooding, no learning.
"""

from __future__ import annotations

import logging
import threading

import attrs

from pykka import ActorDeadError

from cantainer.actors._base import ProjectionActor
from cantainer.actors._projection import Projection
from cantainer.actors.ipam import Ipam

log = logging.getLogger(__name__)


@attrs.frozen
class Checked:
    """The off-thread periodic check is done: whether the kernel differed from ``plan``."""

    plan: dict
    differs: bool


@attrs.frozen
class NetworkPlan:
    """What one overlay network looks like on one host."""

    name: str
    vni: int
    fdb: dict[str, str]    # MAC of a remote container -> its host's underlay address
    neigh: dict[str, str]  # IP of a remote container -> its MAC

    @property
    def bridge(self) -> str:
        return f"ctbr{self.vni}"

    @property
    def vxlan(self) -> str:
        return f"ctvx{self.vni}"

    def to_json(self) -> dict:
        return {"name": self.name, "vni": self.vni, "bridge": self.bridge,
                "vxlan": self.vxlan, "fdb": dict(sorted(self.fdb.items())),
                "neigh": dict(sorted(self.neigh.items()))}


class Overlay(Projection):
    """IPAM plus the per-host overlay plan derived from it."""

    def __init__(self) -> None:
        super().__init__()
        self.ipam = Ipam()

    def apply(self, rec) -> None:
        self.ipam.apply(rec)
        super().apply(rec)

    def verdict(self, seq: int) -> str | None:
        return self.ipam.verdict(seq)

    def plan(self, host: str) -> dict[int, NetworkPlan]:
        """VNI -> plan of every network ``host`` should have."""
        ipam, live = self.ipam, self.ipam.members.live()
        if host not in live:
            return {}
        local = {c.network for c in ipam.containers.values() if c.host == host}
        plans = {}
        for name in sorted(local):
            net = ipam.networks[name]
            remote = [c for c in ipam.containers.values()
                      if c.network == name and c.host != host and c.host in live]
            plans[net.vni] = NetworkPlan(
                name, net.vni,
                fdb={c.mac: live[c.host].address for c in remote},
                neigh={str(c.ip): c.mac for c in remote})
        return plans


class OverlayActor(ProjectionActor):
    """Reconciles this host's bridges, VXLAN devices, FDB and neighbour entries."""

    name = "overlay"

    def __init__(self, context) -> None:
        super().__init__(context, Overlay())
        self._kernel = None
        self._removals = None
        self._reconciled_plan = None
        self._checking = False

    def on_start(self) -> None:
        from cantainer.kernel.overlay import BRIDGE_PREFIX, VXLAN_PREFIX, OverlayKernel
        from cantainer.kernel.watch import Removals
        self._kernel = OverlayKernel(self.context.address)
        # A deleted device or entry is put back at once; the pipeline's periodic
        # Reconcile catches the rest (changed attributes, a lost notification).
        self._removals = Removals(self.tell_vanished, links=(BRIDGE_PREFIX, VXLAN_PREFIX),
                                   neighbours=(VXLAN_PREFIX,))

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

    def on_stop(self) -> None:
        if self._removals is not None:
            self._removals.close()
        if self._kernel is not None:
            self._kernel.close()

    def reconcile(self, changed_only: bool = False) -> None:
        """After new events (``changed_only``): the entries that changed, if the same
        networks are still here; otherwise, and periodically, a full comparison with
        the kernel."""
        plan = self.projection.plan(self.context.node)
        old = self._reconciled_plan
        if changed_only and plan == old:
            return
        if changed_only and old is not None and plan.keys() == old.keys():
            changes = self._kernel.update_entries(old, plan)
        else:
            changes = self._kernel.reconcile(plan)
        for change in changes:
            log.info("overlay: %s", change)
        self._reconciled_plan = plan

    # -- the periodic check ---------------------------------------------------------

    def check(self) -> None:
        """Read the kernel back off this actor's thread: at scale that is ~1 400
        entries of pyroute2 parsing (0.1 s alone, several times that on a loaded
        machine), and events would wait behind it.  Only a difference costs a full
        reconcile here."""
        if self._checking:
            return
        self._checking = True
        plan = self.projection.plan(self.context.node)
        threading.Thread(target=self._check_off_thread, args=(plan,), name="overlay-check",
                         daemon=True).start()

    def _check_off_thread(self, plan) -> None:
        from cantainer.kernel.overlay import OverlayKernel
        try:
            kernel = OverlayKernel(self.context.address)  # its own netlink socket
            try:
                differs = bool(kernel.differences(plan))
            finally:
                kernel.close()
        except Exception as exc:  # the reconcile that follows will say what is wrong
            log.warning("overlay: checking the kernel failed: %s", exc)
            differs = True
        try:
            self.actor_ref.tell(Checked(plan, differs))
        except ActorDeadError:
            pass

    def on_receive(self, message) -> None:
        if not isinstance(message, Checked):
            super().on_receive(message)
            return
        self._checking = False
        if not message.differs:
            return
        if message.plan == self.projection.plan(self.context.node):
            self.reconcile_fully()  # drift: repair it
        else:  # events moved the plan meanwhile: look again against the new one
            self.check()

    def differences(self) -> list[str]:
        """How the kernel differs from the plan, without changing anything."""
        return self._kernel.differences(self.projection.plan(self.context.node))
