"""Checkpoints: the whole ``ClusterState`` at a seq, as one canonical msgpack value.

Canonical: the same records applied give the same bytes on every host.  Mappings are
written as lists of pairs in their insertion order (which log order made), sets
sorted, events as the codec encodes them (type, version, payload), addresses as
text.  So the SHA-256 of a checkpoint is the digest of the state at its seq, which
hosts can compare through the log (``CheckpointTaken``), and ``load(dump(s))``
derives exactly what ``s`` derives (a property test checks it against a replay).
The verdicts of past records (``rejected``) are not kept: only the submitter of a
record asks for its verdict, at once.  This module is the format's one owner.
"""

from __future__ import annotations

import hashlib
import ipaddress

import msgpack

from cantainer.events import decode, encode
from cantainer.events.codec import UnknownEvent
from cantainer.kernel.names import SHORT_ID
from cantainer.projections.images import Held
from cantainer.projections.ipam import AddressPool, Container, Network
from cantainer.projections.membership import Node
from cantainer.projections.services import Service
from cantainer.projections.state import ClusterState

FORMAT = 3  # 2: the archive's segments and their digests; 3: the leader, checkpoint_every


class BadCheckpoint(ValueError):
    """The bytes are no checkpoint this build can read."""


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _event(e) -> list:
    return [e.type_name(), e.VERSION, encode(e)]


def _unevent(item):
    event = decode(*item)
    if isinstance(event, UnknownEvent):
        raise BadCheckpoint(f"an event it holds does not decode: {event.reason}")
    return event


def dump(state: ClusterState) -> bytes:
    m, ipam, svc, img = state.members, state.ipam, state.services, state.images
    data = [
        FORMAT, state.applied,
        [[n.name, n.address, n.dqlite_address, n.state, n.since, n.joined, n.certificate,
          n.fingerprint, n.kx, n.down] for n in m.nodes.values()],
        sorted(m.left_fingerprints), m.leader,
        [[n.name, str(n.cidr), n.vni, n.seq, n.containers, n.internal,
          n.pool._next, n.pool._last, list(n.pool._freed)] for n in ipam.networks.values()],
        [[c.id, c.name, c.host, c.network, str(c.ip), c.mac, _event(c.created), c.seq,
          c.state, c.pid, c.exit_code, c.stop_timeout, c.run, c.restarts]
         for c in ipam.containers.values()],
        [[host, port, proto, cid] for (host, port, proto), cid in ipam.published.items()],
        ipam.networks_created,
        str(ipam.default_cidr) if ipam.default_cidr is not None else None,
        sorted(ipam.service_names),
        [[port, proto, name] for (port, proto), name in ipam.mesh_ports.items()],
        [[s.name, _event(s.spec), s.seq, s.key, s.replicas, list(s.slots.items()),
          list(s.pending.items())] for s in svc.services.values()],
        [[cid, name, replica] for cid, (name, replica) in svc.replica_of.items()],
        [[image, [[host, h.digest, h.size, h.kind, h.seq] for host, h in hosts.items()]]
         for image, hosts in img.held.items()],
        [[last, first, d] for last, (first, d) in state.segments.items()],
        state.checkpoint_every,
    ]
    return msgpack.packb(data, use_bin_type=True)


def load(blob: bytes) -> ClusterState:
    try:
        data = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        (fmt, applied, nodes, left, leader, networks, containers, published, created, default,
         service_names, mesh, services, replica_of, held, segments, every) = data
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadCheckpoint(f"not a checkpoint: {exc}") from None
    if fmt != FORMAT:
        raise BadCheckpoint(f"checkpoint format {fmt!r}, this build reads {FORMAT}")
    try:
        state = ClusterState()
        m, ipam, svc, img = state.members, state.ipam, state.services, state.images
        for row in nodes:
            m.nodes[row[0]] = Node(*row)
        m.left_fingerprints = set(left)
        m.leader = leader
        for name, cidr, vni, seq, count, internal, nxt, last, freed in networks:
            pool = AddressPool(ipaddress.IPv4Network(cidr))
            pool._next, pool._last, pool._freed = nxt, last, list(freed)
            ipam.networks[name] = Network(name, ipaddress.IPv4Network(cidr), vni, seq, pool,
                                          count, internal)
        for (cid, name, host, network, ip, mac, event, seq, st, pid, code, timeout, run,
             restarts) in containers:
            ipam.containers[cid] = Container(cid, name, host, network,
                                             ipaddress.IPv4Address(ip), mac, _unevent(event),
                                             seq, st, pid, code, timeout, run, restarts)
            ipam.names[name] = cid
            ipam.short_ids[cid[:SHORT_ID]] = cid
        ipam.published = {(host, port, proto): cid for host, port, proto, cid in published}
        ipam.networks_created = created
        ipam.default_cidr = ipaddress.IPv4Network(default) if default else None
        ipam.service_names = set(service_names)
        ipam.mesh_ports = {(port, proto): name for port, proto, name in mesh}
        for name, spec, seq, key, replicas, slots, pending in services:
            svc.services[name] = Service(name, _unevent(spec), seq, key, replicas,
                                         dict(slots), dict(pending))
        svc.replica_of = {cid: (name, replica) for cid, name, replica in replica_of}
        for image, hosts in held:
            img.held[image] = {host: Held(d, size, kind, seq)
                               for host, d, size, kind, seq in hosts}
        state.segments = {last: (first, d) for last, first, d in segments}
        state.checkpoint_every = every
    except (ValueError, TypeError, KeyError) as exc:
        raise BadCheckpoint(f"a part of the checkpoint is not what it should be: {exc}") \
            from None
    for p in (state, m, ipam, svc, img):
        p.applied = applied
    return state
