"""The firewall actor: this host accepts VXLAN from the live members' addresses only,
masquerades its containers' traffic out, and keeps networks apart.

Its plan (``allowed``) is the state seen from this host: the underlay addresses
of the live members; the CIDRs of the networks with a container here and egress
(NAT out through this host); the bridges of those that are internal (nothing
routed in or out); the ports its containers publish (DNAT, while the container
exists); or None once this host is no member (it left: the table
goes).  The table (``kernel/firewall.py``) is Cantainer's own; a
plain stop of the daemon leaves it in place, so the containers that run on
stay protected.
"""

from __future__ import annotations

import logging

from cantainer.actors.base import KernelActor
from cantainer.kernel import names
from cantainer.events.validate import parse_port
from cantainer.kernel.firewall import Firewall, FirewallPlan, Published

log = logging.getLogger(__name__)


def allowed(state, host: str) -> FirewallPlan | None:
    live = state.members.live()
    if host not in live:
        return None
    networks = state.ipam.networks
    mine = [c for c in state.ipam.containers.values() if c.host == host]
    local = [networks[n] for n in {c.network for c in mine}]
    published = frozenset(Published(proto, host_ip, host_port, str(c.ip), port)
                          for c in mine for host_ip, host_port, port, proto
                          in map(parse_port, c.created.ports))
    return FirewallPlan(members=frozenset(node.address for node in live.values()),
                        egress=frozenset(n.cidr.with_prefixlen for n in local
                                         if not n.internal),
                        internal=frozenset(names.bridge(n.vni) for n in local if n.internal),
                        published=published,
                        within=frozenset(names.bridge(n.vni) for n in local))


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
