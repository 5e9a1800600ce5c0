"""Services: replicas placed on hosts by log order, with no scheduler.

A service (``ServiceCreated``) wants ``replicas`` containers, ``NAME.1`` ...
``NAME.N``.  After every record that can change where they belong, each service is
*placed* again, the same way on every host (so every host derives the same
containers at the same seq, as it derives addresses):

* a replica keeps its host while that host is available (a live member, not
  ``NodeDown``) and allowed by the service's constraints: nothing moves back when a
  host recovers, nothing moves when a host joins;
* a replica without a container (new, its host down or gone, or removed) is given
  one on the allowed available host with the fewest replicas of this service (the
  *spread* rule), ties broken by the highest rendezvous hash of (service, replica,
  host);
* replicas above ``replicas`` (``ServiceScaled``) lose their containers, the
  highest-numbered first; ``ServiceRemoved`` removes them all.

A replica's container is an ordinary one in IPAM (its address, name, DNS, its
host's runtime starts it and records its starts and exits), made by this projection
with an id derived from the service, the replica and the seq that placed it: a
replica that moves is a new container, and the old one leaves the state at that seq
(its host removes it once it reads the log).  A replica no host can take is
*pending*, with the reason; it is placed as soon as a record makes that possible.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter

import attrs

from cantainer.events import (ContainerCreated, ServiceCreated, ServiceRemoved,
                              ServiceScaled)
from cantainer.events.validate import parse_constraint, parse_port
from cantainer.projections.base import Projection
from cantainer.projections.ipam import DEFAULT_NETWORK, Ipam
from cantainer.projections.membership import Membership

# Records after which services are placed again: what changes the hosts available, or
# frees a replica's container.
REPLACING = frozenset({"NodeJoined", "NodeLeft", "NodeDown", "NodeRecovered",
                       "ContainerRemoved", "NetworkCreated", "ClusterCreated"})


@attrs.define
class Service:
    name: str
    spec: ServiceCreated
    seq: int  # of its ServiceCreated
    key: str  # that record's id: random, so two clusters' replicas never share an id
    replicas: int
    slots: dict[int, str] = attrs.Factory(dict)    # replica number -> container id
    pending: dict[int, str] = attrs.Factory(dict)  # replica number -> why it has none

    def allows(self, host: str) -> bool:
        for op, name in map(parse_constraint, self.spec.constraints):
            if (host == name) != (op == "=="):
                return False
        return True


def reserved_ports(members: Membership) -> dict[tuple[int, str], str]:
    """What a service may not publish on every host: the daemons' own ports, VXLAN's,
    the containers' name server's (a DNAT of them would take the cluster's own traffic)."""
    out = {(4789, "udp"): "VXLAN", (53, "udp"): "the containers' name server",
           (53, "tcp"): "the containers' name server"}
    for node in members.live().values():
        port = int(node.dqlite_address.rpartition(":")[2])
        out[(port, "tcp")] = f"dqlite on {node.name}"
        out[(port + 1, "udp")] = f"the heartbeats of {node.name}"
        out[(port + 2, "tcp")] = f"the peer port of {node.name}"
    return out


def rendezvous(service: str, replica: int, host: str) -> int:
    digest = hashlib.blake2b(f"{service}\0{replica}\0{host}".encode(), digest_size=8)
    return int.from_bytes(digest.digest())


def container_id(service: Service, replica: int, seq: int) -> str:
    """A replica's container placed at ``seq``: its kernel objects are named by the first
    digits, so ids differ between replicas, placements, services and clusters."""
    return hashlib.sha256(f"{service.key}\0{service.name}\0{replica}\0{seq}".encode()
                          ).hexdigest()


class Services(Projection):
    def __init__(self, members: Membership, ipam: Ipam) -> None:
        super().__init__()
        self.members = members
        self.ipam = ipam
        self.services: dict[str, Service] = {}
        self.replica_of: dict[str, tuple[str, int]] = {}  # container id -> (service, N)
        self._id = ""  # the id of the record being handled

    def handle(self, rec) -> None:
        self._id = rec.id
        super().handle(rec)

    def accepted(self, rec) -> None:
        """After a record every projection accepted (``ClusterState``): the services are
        placed again if it may change where replicas belong, or while one is pending
        (any record may make it placeable: a network removed frees its CIDR)."""
        if self.services and (rec.type in REPLACING or
                              any(s.pending for s in self.services.values())):
            self._place(*self.services.values(), seq=rec.seq)

    # -- events ---------------------------------------------------------------------

    def on_ServiceCreated(self, e: ServiceCreated, seq: int) -> str | None:
        ipam = self.ipam
        if e.name in self.services:
            return f"service {e.name!r} already exists"
        if clash := sorted(n for n in ipam.names if n.partition(".")[0] == e.name):
            return f"service name {e.name!r} clashes with container {clash[0]!r}"
        if ipam.network_of(e.network) is None and "/" not in e.network and \
                not (e.network == DEFAULT_NETWORK and ipam.default_cidr is not None):
            return f"no network named {e.network!r}"
        if "/" in e.network and ipam.network_of(e.network) is None:
            cidr = ipaddress.IPv4Network(e.network)
            for other in ipam.networks.values():
                if other.cidr.overlaps(cidr):
                    return f"{cidr} overlaps network {other.name!r} ({other.cidr})"
        net = ipam.network_of(e.network)
        if e.ports and net is not None and net.internal:
            return f"network {net.name!r} is internal: no port of it can be published"
        reserved = reserved_ports(self.members) if e.ports else {}
        for _, port, _, proto in map(parse_port, e.ports):
            if (use := reserved.get((port, proto))) is not None:
                return f"port {port}/{proto} is {use}'s"
            if (other := ipam.mesh_ports.get((port, proto))) is not None:
                return f"port {port}/{proto} is published by service {other!r}"
            for (host, p, pr), cid in ipam.published.items():
                if (p, pr) == (port, proto):
                    return (f"port {port}/{proto} is published on {host} by container "
                            f"{ipam.containers[cid].name!r}")
        if not self.members.live():
            return "the cluster has no members"
        for _, name in map(parse_constraint, e.constraints):
            if name not in self.members.nodes:
                return f"constraint node.name: no member named {name!r}"
        service = self.services[e.name] = Service(e.name, e, seq, self._id, e.replicas)
        ipam.service_names.add(e.name)
        for _, port, _, proto in map(parse_port, e.ports):
            ipam.mesh_ports[(port, proto)] = e.name
        self._place(service, seq=seq)
        return None

    def on_ServiceScaled(self, e: ServiceScaled, seq: int) -> str | None:
        service = self.services.get(e.name)
        if service is None:
            return f"no service named {e.name!r}"
        service.replicas = e.replicas
        self._place(service, seq=seq)
        return None

    def on_ServiceRemoved(self, e: ServiceRemoved, seq: int) -> str | None:
        service = self.services.pop(e.name, None)
        if service is None:
            return f"no service named {e.name!r}"
        for replica in sorted(service.slots, reverse=True):
            self._drop(service, replica)
        self.ipam.service_names.discard(e.name)
        for key in [k for k, name in self.ipam.mesh_ports.items() if name == e.name]:
            del self.ipam.mesh_ports[key]
        return None

    # -- placement ------------------------------------------------------------------

    def _drop(self, service: Service, replica: int) -> None:
        cid = service.slots.pop(replica)
        self.replica_of.pop(cid, None)
        if cid in self.ipam.containers:
            self.ipam.forget(cid)

    def _place(self, *services: Service, seq: int) -> None:
        """First every replica that loses its container loses it (its address is free
        again), then the services' replicas without one get one, in order."""
        available = sorted(n.name for n in self.members.available())
        for service in services:
            self._unplace(service, available)
        for service in services:
            self._fill(service, available, seq)

    def _unplace(self, service: Service, available: list[str]) -> None:
        containers = self.ipam.containers
        for replica in sorted(service.slots, reverse=True):
            cid = service.slots[replica]
            c = containers.get(cid)
            if c is None:  # removed, or its host left
                del service.slots[replica]
                self.replica_of.pop(cid, None)
            elif replica > service.replicas or c.host not in available or \
                    not service.allows(c.host):
                self._drop(service, replica)
        for replica in [r for r in service.pending if r > service.replicas]:
            del service.pending[replica]

    def _fill(self, service: Service, available: list[str], seq: int) -> None:
        containers = self.ipam.containers
        hosts = [h for h in available if service.allows(h)]
        count = Counter(containers[cid].host for cid in service.slots.values())
        for replica in range(1, service.replicas + 1):
            if replica in service.slots:
                continue
            if not hosts:
                service.pending[replica] = ("no available member satisfies its constraints"
                                            if available else "no member is available")
                continue
            host = min(hosts, key=lambda h: (count[h], -rendezvous(service.name, replica, h)))
            cid = container_id(service, replica, seq)
            reason = self.ipam.create(self._container(service, replica, host, cid), seq)
            if reason is not None:
                service.pending[replica] = reason
                continue
            service.pending.pop(replica, None)
            service.slots[replica] = cid
            self.replica_of[cid] = (service.name, replica)
            count[host] += 1

    @staticmethod
    def _container(service: Service, replica: int, host: str, cid: str) -> ContainerCreated:
        s = service.spec
        return ContainerCreated(
            container=cid, name=f"{s.name}.{replica}", host=host, network=s.network,
            image=s.image, command=s.command, entrypoint=s.entrypoint, env=s.env,
            workdir=s.workdir, user=s.user, memory=s.memory, pids_limit=s.pids_limit,
            cpus=s.cpus, restart=s.restart, init=s.init)
