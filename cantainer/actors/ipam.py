"""IPAM: networks, their VNIs, and every container's address and MAC.

Everything here follows from log order, so every host computes the same
answer with no further coordination:

* a network's VNI is ``VNI_BASE`` + the number of networks created before it
  (never reused);
* a container's address is the lowest free host address of its network,
  skipping the network and broadcast addresses and the ``.1`` gateway;
* its MAC is ``02:42:`` followed by the four bytes of that address.

An address is freed by ``ContainerRemoved`` and by ``NodeLeft`` of its host.
A ``ContainerCreated`` naming a CIDR that no network has creates that
network implicitly (named after the CIDR, e.g. ``198.18.0.0-24``).
"""

from __future__ import annotations

import heapq
import ipaddress
from ipaddress import IPv4Address, IPv4Network

import attrs

from cantainer.actors._base import ProjectionActor
from cantainer.actors._projection import Projection
from cantainer.actors.membership import Membership
from cantainer.events import (
    ContainerCreated,
    ContainerExited,
    ContainerRemoved,
    ContainerStarted,
    ContainerStopRequested,
    NetworkCreated,
    NetworkRemoved,
    SHORT_ID,
    NodeLeft,
)

VNI_BASE = 4096


class AddressPool:
    """A network's host addresses: ``allocate`` gives the lowest free one, skipping
    the network and broadcast addresses and the .1 gateway; ``release`` frees one.

    Every address below ``_next`` is in use unless it is in the ``_freed``
    heap, so the lowest free address is the smaller of the two: O(log n) per
    call, however many containers the network has.
    """

    def __init__(self, cidr: IPv4Network) -> None:
        self._next = int(cidr.network_address) + 2
        self._last = int(cidr.broadcast_address) - 1
        self._freed: list[int] = []

    def allocate(self) -> IPv4Address | None:
        if self._freed and self._freed[0] < self._next:
            return IPv4Address(heapq.heappop(self._freed))
        if self._next > self._last:
            return None
        self._next += 1
        return IPv4Address(self._next - 1)

    def release(self, ip: IPv4Address) -> None:
        heapq.heappush(self._freed, int(ip))


@attrs.define
class Network:
    name: str
    cidr: IPv4Network
    vni: int
    seq: int
    pool: AddressPool = attrs.field(eq=False, repr=False)
    containers: int = 0


@attrs.define
class Container:
    id: str
    name: str
    host: str
    network: str
    ip: IPv4Address
    mac: str
    created: ContainerCreated
    seq: int
    state: str = "created"  # created | running | exited
    pid: int | None = None
    exit_code: int | None = None
    stop_timeout: int | None = None  # seconds, once a stop was requested


def mac_of(ip: IPv4Address) -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def implicit_name(cidr: IPv4Network) -> str:
    return cidr.with_prefixlen.replace("/", "-")


class Ipam(Projection):
    def __init__(self) -> None:
        super().__init__()
        self.members = Membership()
        self.networks: dict[str, Network] = {}
        self.containers: dict[str, Container] = {}
        self.names: dict[str, str] = {}  # container name -> id
        self.short_ids: dict[str, str] = {}  # id[:SHORT_ID] -> id: kernel names use it
        self.networks_created = 0

    def apply(self, rec) -> None:
        self.members.apply(rec)
        super().apply(rec)

    def verdict(self, seq: int) -> str | None:
        return self.members.verdict(seq) or super().verdict(seq)

    # -- queries ----------------------------------------------------------------------

    def network_of(self, ref: str) -> Network | None:
        """A network by name, or by CIDR."""
        if ref in self.networks:
            return self.networks[ref]
        if "/" in ref:
            for net in self.networks.values():
                if net.cidr.with_prefixlen == ref:
                    return net
        return None

    # -- networks ---------------------------------------------------------------------

    def _create_network(self, name: str, cidr: IPv4Network, seq: int) -> str | None:
        if name in self.networks:
            return f"network {name!r} already exists"
        for other in self.networks.values():
            if other.cidr.overlaps(cidr):
                return f"{cidr} overlaps network {other.name!r} ({other.cidr})"
        self.networks[name] = Network(name, cidr, VNI_BASE + self.networks_created, seq,
                                      AddressPool(cidr))
        self.networks_created += 1
        return None

    def on_NetworkCreated(self, e: NetworkCreated, seq: int) -> str | None:
        return self._create_network(e.name, ipaddress.IPv4Network(e.cidr), seq)

    def on_NetworkRemoved(self, e: NetworkRemoved, seq: int) -> str | None:
        if e.name not in self.networks:
            return f"no network named {e.name!r}"
        if self.networks[e.name].containers:
            users = sorted(c.name for c in self.containers.values() if c.network == e.name)
            return f"network {e.name!r} still has containers: {', '.join(users[:5])}"
        del self.networks[e.name]
        return None

    # -- containers -------------------------------------------------------------------

    def on_ContainerCreated(self, e: ContainerCreated, seq: int) -> str | None:
        if e.container in self.containers:
            return f"container id {e.container} already exists"
        if e.name in self.names:
            return f"container name {e.name!r} is already in use"
        if (other := self.short_ids.get(e.container[:SHORT_ID])) is not None:
            return (f"container id {e.container} has the same first {SHORT_ID} digits as "
                    f"container {other} (its namespace and veth are named by them)")
        if e.host not in self.members.live():
            return f"host {e.host!r} is not a member of the cluster"
        net = self.network_of(e.network)
        if net is None:
            if "/" not in e.network:
                return f"no network named {e.network!r}"
            cidr = ipaddress.IPv4Network(e.network)
            reason = self._create_network(implicit_name(cidr), cidr, seq)
            if reason:
                return reason
            net = self.networks[implicit_name(cidr)]
        ip = net.pool.allocate()
        if ip is None:
            return f"network {net.name!r} ({net.cidr}) is full"
        self.containers[e.container] = Container(e.container, e.name, e.host, net.name, ip,
                                                 mac_of(ip), e, seq)
        self.names[e.name] = e.container
        self.short_ids[e.container[:SHORT_ID]] = e.container
        net.containers += 1
        return None

    def _forget(self, cid: str) -> None:
        """The container is gone: its name and address are free again."""
        c = self.containers.pop(cid)
        del self.names[c.name]
        del self.short_ids[cid[:SHORT_ID]]
        net = self.networks[c.network]
        net.pool.release(c.ip)
        net.containers -= 1

    def on_ContainerStarted(self, e: ContainerStarted, seq: int) -> str | None:
        c = self.containers.get(e.container)
        if c is None:
            return f"no container {e.container}"
        c.state, c.pid = "running", e.pid
        return None

    def on_ContainerStopRequested(self, e: ContainerStopRequested, seq: int) -> str | None:
        c = self.containers.get(e.container)
        if c is None:
            return f"no container {e.container}"
        if c.state != "exited":
            c.stop_timeout = e.timeout if c.stop_timeout is None else min(c.stop_timeout,
                                                                          e.timeout)
        return None

    def on_ContainerExited(self, e: ContainerExited, seq: int) -> str | None:
        c = self.containers.get(e.container)
        if c is None:
            return f"no container {e.container}"
        c.state, c.exit_code, c.pid = "exited", e.exit_code, None
        return None

    def on_ContainerRemoved(self, e: ContainerRemoved, seq: int) -> str | None:
        if e.container not in self.containers:
            return f"no container {e.container}"
        self._forget(e.container)
        return None

    def on_NodeLeft(self, e: NodeLeft, seq: int) -> str | None:
        # Membership decided the verdict; here the host's containers and addresses go.
        for cid in [cid for cid, c in self.containers.items() if c.host == e.name]:
            self._forget(cid)
        return None


def network_json(net: Network, ipam: Ipam) -> dict:
    return {"name": net.name, "cidr": str(net.cidr), "vni": net.vni, "seq": net.seq,
            "containers": net.containers}


def container_json(c: Container) -> dict:
    return {"id": c.id, "name": c.name, "host": c.host, "network": c.network,
            "ip": str(c.ip), "mac": c.mac, "state": c.state, "seq": c.seq,
            "image": c.created.image}


class IpamActor(ProjectionActor):
    """Keeps the IPAM projection: verdicts, networks and addresses for the API."""

    name = "ipam"

    def __init__(self, context) -> None:
        super().__init__(context, Ipam())

    def networks(self) -> list[dict]:
        return [network_json(n, self.projection) for n in self.projection.networks.values()]

    def containers(self) -> list[dict]:
        return [container_json(c) for c in self.projection.containers.values()]

    def resolve(self, ref: str) -> dict | None:
        """A container by full id, name, or unique id prefix."""
        containers = self.projection.containers
        prefixed = [c for cid, c in containers.items() if cid.startswith(ref)]
        found = containers.get(ref) or next((c for c in containers.values() if c.name == ref),
                                            None) or (prefixed[0] if len(prefixed) == 1 else None)
        if found is None:
            return {"ambiguous": len(prefixed)} if len(prefixed) > 1 else None
        created = found.created
        return {**container_json(found), "command": list(created.command),
                "env": list(created.env), "hostname": created.hostname, "pid": found.pid,
                "exit_code": found.exit_code, "memory": created.memory,
                "pids_limit": created.pids_limit, "cpus": created.cpus}
