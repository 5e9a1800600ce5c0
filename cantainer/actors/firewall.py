"""The firewall actor: this host accepts VXLAN from the live members' addresses only.

Its plan is ``projections.membership`` seen from this host: the underlay
addresses of the live members, or None once this host is no member (it left:
the table goes).  The table (``kernel/firewall.py``) is Cantainer's own; a
plain stop of the daemon leaves it in place, so the containers that run on
stay protected.
"""

from __future__ import annotations

import logging

from cantainer.actors.base import KernelActor
from cantainer.kernel.firewall import Firewall

log = logging.getLogger(__name__)


def allowed(state, host: str) -> frozenset[str] | None:
    live = state.members.live()
    if host not in live:
        return None
    return frozenset(node.address for node in live.values())


class FirewallActor(KernelActor):
    name = "firewall"
    derive = staticmethod(allowed)

    def __init__(self, context) -> None:
        super().__init__(context)
        self._firewall: Firewall | None = None

    def on_start(self) -> None:
        self._firewall = Firewall()

    def on_stop(self) -> None:
        if self._firewall is not None:
            self._firewall.close()

    def reconcile(self, changed_only: bool = False) -> None:
        for change in self._firewall.ensure(self.plan):
            log.info("firewall: %s", change)

    def differences(self) -> list[str]:
        return self._firewall.differences(self.plan)
