"""IPAM: networks, their VNIs, and every container's address and MAC.

Everything here follows from log order, so every host computes the same
answer with no further coordination:

* a network's VNI is ``VNI_BASE`` + the number of networks created before it
  (never reused);
* a container's address is the lowest free host address of its network,
  skipping the network and broadcast addresses and the ``.1`` gateway;
* its MAC is ``02:42:`` followed by the four bytes of that address.

An address is freed by ``ContainerRemoved`` and by ``NodeLeft`` of its host; so is
each port a container publishes on its host (one container a port and protocol
a host: the later ``ContainerCreated`` is rejected).
A ``ContainerCreated`` naming a CIDR that no network has creates that
network implicitly (named after the CIDR, e.g. ``198.18.0.0-24``); one naming
``default`` before that network exists creates it with the CIDR
``ClusterCreated`` recorded (no other network may overlap that CIDR, and none
other may take the name; a log without ``ClusterCreated``, from before there
was one, keeps any network it named so).  Live
containers differ in their first ``SHORT_ID`` id digits: those name their
kernel objects (``kernel/names.py``).

IPAM reads the membership projection (whether a host is a member), which
its owner (``projections/state.py``) applies first: it never applies it itself.
"""

from __future__ import annotations

import heapq
import ipaddress
from ipaddress import IPv4Address, IPv4Network

import attrs

from cantainer.events import (
    ClusterCreated,
    ContainerCreated,
    ContainerExited,
    ContainerRemoved,
    ContainerStarted,
    ContainerStartRequested,
    ContainerStopRequested,
    NetworkCreated,
    NetworkRemoved,
    NodeLeft,
)
from cantainer.events.validate import parse_port
from cantainer.kernel.names import SHORT_ID
from cantainer.projections.base import Projection
from cantainer.projections.membership import Membership

VNI_BASE = 4096
DEFAULT_NETWORK = "default"  # run without -n; its CIDR is the cluster's (ClusterCreated)


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
    internal: bool = False  # no egress (network create --internal)

    @property
    def gateway(self) -> IPv4Address:
        """The .1 address: every host's bridge of this network holds it (its containers'
        route out and their name server)."""
        return self.cidr.network_address + 1


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
    run: int = 0       # how many times it was asked to run again (ContainerStartRequested)
    restarts: int = 0  # of those, how many its restart policy decided


def mac_of(ip: IPv4Address) -> str:
    return "02:42:%02x:%02x:%02x:%02x" % tuple(ip.packed)


def implicit_name(cidr: IPv4Network) -> str:
    return cidr.with_prefixlen.replace("/", "-")


class Ipam(Projection):
    def __init__(self, members: Membership) -> None:
        super().__init__()
        self.members = members
        self.networks: dict[str, Network] = {}
        self.containers: dict[str, Container] = {}
        self.names: dict[str, str] = {}  # container name -> id
        self.short_ids: dict[str, str] = {}  # id[:SHORT_ID] -> id: kernel names use it
        self.published: dict[tuple[str, int, str], str] = {}  # (host, port, proto) -> id
        self.networks_created = 0
        # Kept by the services projection (projections/services.py): the names of the
        # services (NAME and NAME.anything are theirs), and the ports they publish on
        # every host -> the service.
        self.service_names: set[str] = set()
        self.mesh_ports: dict[tuple[int, str], str] = {}
        self.default_cidr: IPv4Network | None = None  # from ClusterCreated

    # -- queries ----------------------------------------------------------------------

    def matching(self, ref: str) -> list[Container]:
        """The container with this id or name; else those whose id starts with it."""
        found = self.containers.get(ref) or self.containers.get(self.names.get(ref, ""))
        if found is not None:
            return [found]
        return [c for cid, c in self.containers.items() if cid.startswith(ref)]

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

    def on_ClusterCreated(self, e: ClusterCreated, seq: int) -> str | None:
        if self.default_cidr is not None:
            return "the cluster was created already"
        self.default_cidr = ipaddress.IPv4Network(e.default_network)
        return None

    def _create_network(self, name: str, cidr: IPv4Network, seq: int,
                        internal: bool = False) -> str | None:
        if name in self.networks:
            return f"network {name!r} already exists"
        for other in self.networks.values():
            if other.cidr.overlaps(cidr):
                return f"{cidr} overlaps network {other.name!r} ({other.cidr})"
        if name != DEFAULT_NETWORK and self.default_cidr is not None and \
                DEFAULT_NETWORK not in self.networks and self.default_cidr.overlaps(cidr):
            return (f"{cidr} overlaps the default network's {self.default_cidr} (made at "
                    "the first 'run' without -n)")
        self.networks[name] = Network(name, cidr, VNI_BASE + self.networks_created, seq,
                                      AddressPool(cidr), internal=internal)
        self.networks_created += 1
        return None

    def on_NetworkCreated(self, e: NetworkCreated, seq: int) -> str | None:
        # A log from before ClusterCreated may have made a network of that name itself.
        if e.name == DEFAULT_NETWORK and self.default_cidr is not None:
            return (f"the network {DEFAULT_NETWORK!r} is the cluster's: 'run' without -n "
                    "makes it")
        return self._create_network(e.name, ipaddress.IPv4Network(e.cidr), seq, e.internal)

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
        if (owner := e.name.partition(".")[0]) in self.service_names:
            return f"container name {e.name!r} belongs to service {owner!r}"
        for _, port, _, proto in map(parse_port, e.ports):
            if (service := self.mesh_ports.get((port, proto))) is not None:
                return f"port {port}/{proto} is published by service {service!r} on every host"
        return self.create(e, seq)

    def create(self, e: ContainerCreated, seq: int) -> str | None:
        """A container, unless log order refuses it (the reason): a service's replicas
        come here from the services projection, as its own records come above."""
        if e.container in self.containers:
            return f"container id {e.container} already exists"
        if e.name in self.names:
            return f"container name {e.name!r} is already in use"
        if (other := self.short_ids.get(e.container[:SHORT_ID])) is not None:
            return (f"container id {e.container} has the same first {SHORT_ID} digits as "
                    f"container {other} (its namespace and veth are named by them)")
        if not self.members.is_live(e.host):
            return f"host {e.host!r} is not a member of the cluster"
        wanted = [(e.host, port, proto) for _, port, _, proto in map(parse_port, e.ports)]
        for key in wanted:
            if key in self.published:
                holder = self.containers[self.published[key]].name
                return (f"port {key[1]}/{key[2]} is already published on {e.host} by "
                        f"container {holder!r}")
        net = self.network_of(e.network)
        if net is None and e.network == DEFAULT_NETWORK and self.default_cidr is not None:
            reason = self._create_network(DEFAULT_NETWORK, self.default_cidr, seq)
            if reason:
                return reason
            net = self.networks[DEFAULT_NETWORK]
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
        for key in wanted:
            self.published[key] = e.container
        net.containers += 1
        return None

    def forget(self, cid: str) -> None:
        """The container is gone: its name and address are free again."""
        c = self.containers.pop(cid)
        del self.names[c.name]
        del self.short_ids[cid[:SHORT_ID]]
        for _, port, _, proto in map(parse_port, c.created.ports):
            del self.published[(c.host, port, proto)]
        net = self.networks[c.network]
        net.pool.release(c.ip)
        net.containers -= 1

    def on_ContainerStarted(self, e: ContainerStarted, seq: int) -> str | None:
        c = self.containers.get(e.container)
        if c is None:
            return f"no container {e.container}"
        if c.state != "created":  # a report of a run that has ended already
            return f"container {c.name} is {c.state}, not starting"
        c.state, c.pid = "running", e.pid
        return None

    def on_ContainerStartRequested(self, e: ContainerStartRequested, seq: int) -> str | None:
        c = self.containers.get(e.container)
        if c is None:
            return f"no container {e.container}"
        if c.state != "exited":
            return f"container {c.name} is {c.state}: only an exited one starts again"
        c.state, c.pid, c.exit_code, c.stop_timeout = "created", None, None, None
        c.run += 1
        c.restarts += e.policy
        return None

    def on_ContainerStopRequested(self, e: ContainerStopRequested, seq: int) -> str | None:
        c = self.containers.get(e.container)
        if c is None:
            return f"no container {e.container}"
        # Kept after an exit too: a container stopped on purpose is not restarted.
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
        self.forget(e.container)
        return None

    def on_NodeLeft(self, e: NodeLeft, seq: int) -> str | None:
        # Membership decided the verdict; here the host's containers and addresses go.
        for cid in [cid for cid, c in self.containers.items() if c.host == e.name]:
            self.forget(cid)
        return None
