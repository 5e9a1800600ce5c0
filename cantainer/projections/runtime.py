"""The runtime's plan: the containers the log places on a host, and all their start needs.

A frozen ``ContainerPlan`` per container, so the runtime actor holds a copy of
its part of the state, never the state: the address, MAC and VNI the log
decided, what to run, its limits, and what the log has recorded of its life
(created, running with a pid, exited with a code; a stop asked for; which run
it is at, and its restart policy).
"""

from __future__ import annotations

import attrs

from cantainer.events.validate import parse_user, parse_volume
from cantainer.projections.state import ClusterState


@attrs.frozen
class ContainerPlan:
    id: str
    name: str
    image: str
    command: tuple[str, ...]  # the whole argv: the entrypoint, if one was given, first
    env: tuple[str, ...]
    hostname: str            # the container's host name (its name unless one was given)
    memory: int | None
    pids_limit: int | None
    cpus: float | None
    workdir: str | None
    uid: int | None
    gid: int | None
    cap_add: tuple[str, ...]
    cap_drop: tuple[str, ...]
    volumes: tuple[tuple[str, str, bool], ...]  # (host path or volume name, path, ro)
    tmpfs: tuple[str, ...]
    read_only: bool
    ip: str
    prefixlen: int
    mac: str
    vni: int
    gateway: str             # the network's .1 on this host's bridge: its name server
    egress: bool             # a default route through the gateway (not --internal)
    state: str               # created | running | exited
    pid: int | None
    exit_code: int | None
    stop_timeout: int | None  # seconds, once a stop was asked for
    restart: str             # its restart policy (--restart)
    init: bool               # cantainer-init as its first process (--init)
    run: int                 # which run of it the log is at: 0, then one more a start
    restarts: int            # how many runs its policy decided
    service: bool = False    # a service's replica (stopped while this host is cut off)
    # another host holds its image (ImageStored): if this one lacks it, it waits for
    # the image to be fetched (daemon/images.py) instead of failing to start
    image_elsewhere: bool = False


def report_id(kind: str, container: str, run: int) -> str:
    """The id of a report of its host about a container's run (``ContainerStarted``,
    ``ContainerExited``): one of each kind per run, whoever on the host appends it
    first (the runtime actor, or a foreground ``run`` that saw the end itself)."""
    return f"{kind}-{container}" if run == 0 else f"{kind}-{container}-{run}"


def plan(state: ClusterState, host: str) -> dict[str, ContainerPlan]:
    """Container id -> plan of every container the log places on ``host``."""
    networks = state.ipam.networks
    replicas = state.services.replica_of
    out = {}
    for c in state.ipam.containers.values():
        if c.host != host:
            continue
        e, net = c.created, networks[c.network]
        uid, gid = parse_user(e.user)
        out[c.id] = ContainerPlan(
            id=c.id, name=c.name, image=e.image, command=(*(e.entrypoint or ()), *e.command),
            env=e.env, hostname=e.hostname or c.name, memory=e.memory,
            pids_limit=e.pids_limit, cpus=e.cpus, workdir=e.workdir,
            uid=uid, gid=gid,
            cap_add=e.cap_add, cap_drop=e.cap_drop,
            volumes=tuple(parse_volume(spec) for spec in e.volumes), tmpfs=e.tmpfs,
            read_only=e.read_only, ip=str(c.ip), prefixlen=net.cidr.prefixlen, mac=c.mac, vni=net.vni,
            gateway=str(net.gateway), egress=not net.internal,
            state=c.state, pid=c.pid, exit_code=c.exit_code, stop_timeout=c.stop_timeout,
            restart=e.restart, init=e.init, run=c.run, restarts=c.restarts,
            service=c.id in replicas,
            image_elsewhere=c.state == "created" and bool(set(state.images.holders(
                e.image if ":" in e.image else f"{e.image}:latest")) - {host}))
    return out
