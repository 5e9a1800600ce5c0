"""The event catalogue: one frozen attrs class per fact the cluster records.

Events are past tense and never change once written.  Each class has a
``VERSION``; a change to a class's fields bumps it and teaches the codec to
read the older form (docs/ARCHITECTURE.md, "Events").  The type name stored in the
log is the class name.
"""

from typing import ClassVar

import attrs

from cantainer.events import validate as v


@attrs.frozen
class Event:
    """Base of every event in the catalogue."""

    VERSION: ClassVar[int] = 1

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


# -- the cluster ------------------------------------------------------------------


@attrs.frozen
class ClusterCreated(Event):
    """The cluster was created (appended once, by the host that bootstrapped it), with
    the settings every host must share: the CIDR of the network ``default``, which
    ``run`` without ``-n`` joins and the first such run creates; version 2 added
    ``checkpoint_every``, the records between checkpoints, whose boundaries archive
    segments share (a version 1 record leaves it unrecorded: None)."""

    VERSION: ClassVar[int] = 2

    default_network: str = attrs.field(validator=v.cidr)
    checkpoint_every: int | None = attrs.field(default=None, validator=v.checkpoint_every)


# -- membership -----------------------------------------------------------------


@attrs.frozen
class NodeJoined(Event):
    """A host entered the cluster, with the certificate it is known by on every channel
    and the X25519 public key its heartbeats are keyed with.  Version 2 added both; a
    version 1 record (from before cluster trust) names a host no channel accepts."""

    VERSION: ClassVar[int] = 2

    name: str = attrs.field(validator=v.name)
    address: str = attrs.field(validator=v.ipv4_address)  # underlay address (VTEP)
    dqlite_address: str = attrs.field(validator=v.host_port)
    certificate: str | None = attrs.field(default=None, validator=v.optional_certificate)
    kx: str | None = attrs.field(default=None, validator=v.optional_hex32)


@attrs.frozen
class NodeLeft(Event):
    """A host left the cluster: gracefully, or evicted by an operator."""

    name: str = attrs.field(validator=v.name)


@attrs.frozen
class NodeSuspected(Event):
    """The leader stopped hearing a host's heartbeat."""

    name: str = attrs.field(validator=v.name)


@attrs.frozen
class NodeRecovered(Event):
    """A suspected host's heartbeat came back."""

    name: str = attrs.field(validator=v.name)


@attrs.frozen
class LeaderElected(Event):
    """This member's dqlite node leads the Raft group now, as the leader itself saw at
    one of its rounds: how the hosts whose own node does not take part in Raft
    (spares) know whom to send heartbeats to, and who relays the log."""

    name: str = attrs.field(validator=v.name)


@attrs.frozen
class NodeDown(Event):
    """A suspected host stayed silent for the grace period (``--reschedule-after``): its
    service replicas are placed on other hosts.  ``NodeRecovered`` ends it."""

    name: str = attrs.field(validator=v.name)


# -- networks -------------------------------------------------------------------


@attrs.frozen
class NetworkCreated(Event):
    """An overlay subnet was created; its VNI follows from log order.  Version 2 added
    ``internal``: no traffic in or out of the cluster (a version 1 record has egress)."""

    VERSION: ClassVar[int] = 2

    name: str = attrs.field(validator=v.name)
    cidr: str = attrs.field(validator=v.cidr)
    internal: bool = attrs.field(default=False, validator=v.boolean)


@attrs.frozen
class NetworkRemoved(Event):
    """An overlay subnet was removed."""

    name: str = attrs.field(validator=v.name)


# -- containers -----------------------------------------------------------------


@attrs.frozen
class ContainerCreated(Event):
    """A container was requested on a host; its address follows from log order.
    Version 2 added how its process runs: ``workdir``, ``user``, ``entrypoint``,
    ``cap_add``/``cap_drop``, and what is mounted: ``volumes``, ``tmpfs``,
    ``read_only`` (a version 1 record has their defaults).  Version 3 added ``ports``
    published on its host, ``[IP:]HOSTPORT:PORT[/tcp|/udp]`` (none before), its
    ``restart`` policy (``no`` before), and ``init`` (an init as its first process)."""

    VERSION: ClassVar[int] = 3

    container: str = attrs.field(validator=v.container_id)
    name: str = attrs.field(validator=v.name)
    host: str = attrs.field(validator=v.name)
    network: str = attrs.field(validator=v.network_ref)
    image: str = attrs.field(default="busybox", validator=v.image)
    command: tuple[str, ...] = attrs.field(default=("/bin/sh",), converter=v.to_tuple,
                                           validator=v.argv)
    env: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple, validator=v.env)
    hostname: str | None = attrs.field(default=None, validator=v.optional_name)
    memory: int | None = attrs.field(default=None, validator=v.optional_in_range(4 << 20, 1 << 50))
    pids_limit: int | None = attrs.field(default=None, validator=v.optional_in_range(1, 1 << 22))
    cpus: float | None = attrs.field(default=None, validator=v.optional_cpus)
    workdir: str | None = attrs.field(default=None, validator=v.optional_abs_path)
    user: str | None = attrs.field(default=None, validator=v.optional_user)
    # The process is entrypoint + command (Docker's --entrypoint); None: command alone.
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=v.to_tuple,
                                                     validator=v.optional_argv)
    cap_add: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple,
                                           validator=v.capabilities)
    cap_drop: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple,
                                            validator=v.capabilities)
    volumes: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple,
                                           validator=v.volumes)  # SOURCE:TARGET[:ro|rw]
    tmpfs: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple, validator=v.paths)
    read_only: bool = attrs.field(default=False, validator=v.boolean)
    ports: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple, validator=v.ports)
    # no | on-failure[:N] | always | unless-stopped (docker run --restart)
    restart: str = attrs.field(default="no", validator=v.restart_policy)
    init: bool = attrs.field(default=False, validator=v.boolean)  # docker run --init

    def __attrs_post_init__(self) -> None:
        if not self.volumes and not self.tmpfs:
            return
        try:
            v.mount_targets([*(v.parse_volume(m)[1] for m in self.volumes), *self.tmpfs])
        except v.InvalidEvent as exc:
            raise v.InvalidEvent(f"field 'volumes': {exc}") from None


@attrs.frozen
class ContainerStarted(Event):
    """The owning host reports the container's process running."""

    container: str = attrs.field(validator=v.container_id)
    pid: int = attrs.field(validator=v.in_range(1, 1 << 22))


@attrs.frozen
class ContainerStopRequested(Event):
    """Someone asked the owning host to stop the container: SIGTERM, then SIGKILL
    after ``timeout`` seconds.  Any host may append it; the owner acts on it."""

    container: str = attrs.field(validator=v.container_id)
    timeout: int = attrs.field(default=10, validator=v.in_range(0, 3600))  # seconds


@attrs.frozen
class ContainerStartRequested(Event):
    """The container, exited, is to run again: asked for (``start``, ``restart``: any
    host may append it) or, with ``policy``, decided by its owner from its restart
    policy (counted as a restart).  Its owner starts it: ``ContainerStarted`` again."""

    container: str = attrs.field(validator=v.container_id)
    policy: bool = attrs.field(default=False, validator=v.boolean)


@attrs.frozen
class ContainerExited(Event):
    """The container's process ended with this code (128 + signal when killed)."""

    container: str = attrs.field(validator=v.container_id)
    exit_code: int = attrs.field(validator=v.in_range(0, 255))


@attrs.frozen
class ContainerRemoved(Event):
    """The container and its address are gone."""

    container: str = attrs.field(validator=v.container_id)


# -- history ---------------------------------------------------------------------


@attrs.frozen
class CheckpointTaken(Event):
    """The state the projections derive from seqs 1..``seq`` has this SHA-256 (of its
    canonical form, ``projections/checkpoint.py``), as the host that appended it
    derived it: a host checks its own checkpoint of that seq against it before it
    starts from it."""

    seq: int = attrs.field(validator=v.in_range(1, 1 << 62))
    digest: str = attrs.field(validator=v.hex64)


@attrs.frozen
class SegmentArchived(Event):
    """The records ``first``..``last``, as the log stores them (``codec.pack_rows``), have
    this SHA-256: a host checks an archive segment against it, its own or one fetched
    from a peer, before it serves a record from it (``daemon/archive.py``)."""

    first: int = attrs.field(validator=v.in_range(1, 1 << 62))
    last: int = attrs.field(validator=v.in_range(1, 1 << 62))
    digest: str = attrs.field(validator=v.hex64)


# -- images ---------------------------------------------------------------------


@attrs.frozen
class ImageStored(Event):
    """A host holds an image, made from an archive of this SHA-256 (``kind``: a root
    tarball, ``image import``/``pull``; or layers, ``image load``): another host that
    needs it fetches that archive from it and checks the digest."""

    host: str = attrs.field(validator=v.name)
    image: str = attrs.field(validator=v.image)  # NAME:TAG
    digest: str = attrs.field(validator=v.hex64)
    size: int = attrs.field(validator=v.in_range(0, 1 << 50))
    kind: str = attrs.field(default="rootfs", validator=v.image_kind)


@attrs.frozen
class ImageDeleted(Event):
    """A host no longer holds an image."""

    host: str = attrs.field(validator=v.name)
    image: str = attrs.field(validator=v.image)


# -- services -------------------------------------------------------------------


@attrs.frozen
class ServiceCreated(Event):
    """A service: ``replicas`` containers named ``NAME.1`` ... ``NAME.N``, each placed
    on a host by log order (``projections/services.py``), with the fields a container
    of it gets; ``ports`` (``HOSTPORT:PORT[/tcp|/udp]``) are published on every host
    and sent to a running replica (the routing mesh); ``constraints`` limit the hosts
    (``node.name==H``, ``node.name!=H``)."""

    name: str = attrs.field(validator=v.service_name)
    network: str = attrs.field(validator=v.network_ref)
    replicas: int = attrs.field(default=1, validator=v.in_range(0, v.MAX_REPLICAS))
    image: str = attrs.field(default="busybox", validator=v.image)
    command: tuple[str, ...] = attrs.field(default=("/bin/sh",), converter=v.to_tuple,
                                           validator=v.argv)
    entrypoint: tuple[str, ...] | None = attrs.field(default=None, converter=v.to_tuple,
                                                     validator=v.optional_argv)
    env: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple, validator=v.env)
    workdir: str | None = attrs.field(default=None, validator=v.optional_abs_path)
    user: str | None = attrs.field(default=None, validator=v.optional_user)
    memory: int | None = attrs.field(default=None, validator=v.optional_in_range(4 << 20, 1 << 50))
    pids_limit: int | None = attrs.field(default=None, validator=v.optional_in_range(1, 1 << 22))
    cpus: float | None = attrs.field(default=None, validator=v.optional_cpus)
    ports: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple, validator=v.ports)
    restart: str = attrs.field(default="always", validator=v.restart_policy)
    init: bool = attrs.field(default=False, validator=v.boolean)
    constraints: tuple[str, ...] = attrs.field(default=(), converter=v.to_tuple,
                                               validator=v.constraints)


@attrs.frozen
class ServiceScaled(Event):
    """The service is to have this many replicas (the highest-numbered go first)."""

    name: str = attrs.field(validator=v.service_name)
    replicas: int = attrs.field(validator=v.in_range(0, v.MAX_REPLICAS))


@attrs.frozen
class ServiceRemoved(Event):
    """The service and every replica of it are gone."""

    name: str = attrs.field(validator=v.service_name)


CATALOGUE: dict[str, type[Event]] = {
    cls.type_name(): cls
    for cls in (ClusterCreated, NodeJoined, NodeLeft, NodeSuspected, NodeRecovered,
                NodeDown, LeaderElected, NetworkCreated, NetworkRemoved,
                ContainerCreated, ContainerStarted, ContainerStopRequested,
                ContainerStartRequested, ContainerExited, ContainerRemoved,
                CheckpointTaken, SegmentArchived, ImageStored, ImageDeleted, ServiceCreated, ServiceScaled, ServiceRemoved)
}
