"""The firewall actor: this host accepts VXLAN from the live members' addresses only,
masquerades its containers' traffic out, and keeps networks apart.

Its plan (``allowed``) is the state seen from this host (a new plan changes
only what differs from the last; the periodic and first looks read the table): the underlay addresses
of the live members; the CIDRs of the networks with a container here and egress
(NAT out through this host); the bridges of those that are internal (nothing
routed in or out); the ports its containers publish (DNAT, while the container
exists); the services' ports (``mesh``: on every host, to a running replica); or None once this host is no member (it left: the table
goes).  The table (``kernel/firewall.py``) is Cantainer's own; a
plain stop of the daemon leaves it in place, so the containers that run on
stay protected.
"""

from __future__ import annotations

import logging

from cantainer.actors.base import KernelActor
from cantainer.kernel import names
from cantainer.events.validate import parse_port
from cantainer.kernel.firewall import Firewall, FirewallPlan, Mesh, NftError, Published

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
                        mesh=mesh(state, host),
                        egress=frozenset(n.cidr.with_prefixlen for n in local
                                         if not n.internal),
                        internal=frozenset(names.bridge(n.vni) for n in local if n.internal),
                        published=published,
                        within=frozenset(names.bridge(n.vni) for n in local))


def mesh(state, host: str) -> frozenset[Mesh]:
    """The services' ports on ``host``: to its own running replicas, if it has any; else
    to the hosts that have one (joined, not suspected)."""
    out = []
    members = state.members.nodes
    containers = state.ipam.containers
    for service in state.services.services.values():
        if not service.spec.ports:
            continue
        running = [containers[cid] for _, cid in sorted(service.slots.items())
                   if containers[cid].state == "running"]
        local = [str(c.ip) for c in running if c.host == host]
        hosts = sorted({members[c.host].address for c in running if c.host != host
                        and members[c.host].state == "joined"})
        for _, host_port, port, proto in map(parse_port, service.spec.ports):
            if local:
                out.append(Mesh(proto, host_port, service.name, tuple(local), port, False))
            elif hosts:
                out.append(Mesh(proto, host_port, service.name, tuple(hosts), host_port,
                                True))
    return frozenset(out)


class FirewallActor(KernelActor):
    name = "firewall"
    derive = staticmethod(allowed)

    def __init__(self, context) -> None:
        super().__init__(context)
        self._firewall: Firewall | None = None
        self._applied: FirewallPlan | None = None  # what the table was last made to hold

    def on_start(self) -> None:
        self._firewall = Firewall()

    def on_stop(self) -> None:
        if self._firewall is not None:
            self._firewall.close()

    def reconcile(self, changed_only: bool = False) -> None:
        """A new plan changes only what differs from the last one the table was made to
        hold (``Firewall.update``); anything else compares the table with the plan."""
        old, plan = self._applied, self.plan
        self._applied = None  # until the change below is in
        changes = None
        if changed_only and old is not None and plan is not None:
            try:
                changes = self._firewall.update(old, plan)
            except NftError as exc:  # the table changed behind our back: look at it
                log.warning("firewall: %s: comparing the whole table", exc)
        if changes is None:
            changes = self._firewall.ensure(plan)
        self._applied = plan
        for change in changes:
            log.info("firewall: %s", change)

    def differences(self) -> list[str]:
        return self._firewall.differences(self.plan)
