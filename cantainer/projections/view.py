"""What the state looks like to a user: the JSON forms ``ps``, ``inspect``,
``network ls``, ``events`` and ``replay`` print, and ``replay`` itself.

``replay`` runs the projections over a log (the daemon's, or a file written by
``cantainer events --json``) without touching the kernel: what every host
*should* look like at that point of the log.  Pure: no root, no netlink.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cantainer.errors import Invalid, NotFound
from cantainer.events import BadStream, Recorded, UnknownEvent, decode_fields, unpack_records
from cantainer.projections import overlay
from cantainer.projections.ipam import Container, Ipam, Network
from cantainer.projections.services import Service
from cantainer.projections.state import ClusterState


# -- records --------------------------------------------------------------------------

def record_json(rec: Recorded) -> dict:
    """A log record as ``events --json`` prints it (and ``record_from_json`` reads it)."""
    out = {"seq": rec.seq, "id": rec.id, "type": rec.type, "version": rec.version,
           "node": rec.node, "time": rec.time, "data": rec.data()}
    if isinstance(rec.event, UnknownEvent):
        out["unknown"] = rec.event.reason
    return out


def record_from_json(obj: dict) -> Recorded:
    """A record as ``events --json`` prints it."""
    try:
        return Recorded(int(obj["seq"]), str(obj["id"]), str(obj["type"]), obj["version"],
                        str(obj["node"]), float(obj["time"]),
                        decode_fields(obj["type"], obj["version"], obj.get("data")))
    except (KeyError, TypeError, ValueError) as exc:
        raise Invalid(f"not an event record: {exc}") from None


def records_from_json_lines(data: bytes) -> list[Recorded]:
    """The records of a file of ``events --json`` (JSON Lines).

    Each 4 096 lines are parsed as one JSON array: one call into ``json``'s C parser, not
    one a line (a third of a replay's time at 100 000 events), and few parsed lines held
    at once.  Only when that fails, or finds more values than lines, are the lines parsed
    one by one, to name the line at fault."""
    lines = [line for line in data.splitlines() if line.strip()]
    records = []
    for start in range(0, len(lines), _JSON_CHUNK):
        chunk = lines[start:start + _JSON_CHUNK]
        try:
            objs = json.loads(b"[" + b",".join(chunk) + b"]")
        except ValueError:
            objs = None
        if objs is None or len(objs) != len(chunk):
            raise Invalid(_json_fault(data))
        records += [record_from_json(obj) for obj in objs]
    return records


_JSON_CHUNK = 4096


def _json_fault(data: bytes) -> str:
    """What is wrong with JSON Lines that do not parse as one value a line."""
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except ValueError as exc:
                return f"line {number}: {exc}"
    return "a line holds more than one JSON value"


def records_from_stream(data: bytes) -> list[Recorded]:
    """The records of a record stream (``events --msgpack``, the log's own rows)."""
    try:
        return list(unpack_records(data))
    except BadStream as exc:
        raise Invalid(str(exc)) from None


# -- networks and containers ------------------------------------------------------------

def network_json(net: Network) -> dict:
    return {"name": net.name, "cidr": str(net.cidr), "vni": net.vni, "seq": net.seq,
            "gateway": str(net.gateway), "internal": net.internal,
            "containers": net.containers}


def container_json(c: Container) -> dict:
    return {"id": c.id, "name": c.name, "host": c.host, "network": c.network,
            "ip": str(c.ip), "mac": c.mac, "state": c.state, "seq": c.seq,
            "image": c.created.image, "ports": list(c.created.ports)}


def container_detail(c: Container) -> dict:
    """``inspect``: all the log says of one container."""
    created = c.created
    return {**container_json(c), "command": list(created.command), "env": list(created.env),
            "hostname": created.hostname, "pid": c.pid, "exit_code": c.exit_code,
            "memory": created.memory, "pids_limit": created.pids_limit, "cpus": created.cpus,
            "workdir": created.workdir, "user": created.user,
            "entrypoint": list(created.entrypoint) if created.entrypoint is not None else None,
            "cap_add": list(created.cap_add), "cap_drop": list(created.cap_drop),
            "volumes": list(created.volumes), "tmpfs": list(created.tmpfs),
            "read_only": created.read_only, "init": created.init, "restart": created.restart,
            "restart_count": c.restarts, "starts": c.run + 1}


# -- services -------------------------------------------------------------------------

def service_json(s: Service, ipam: Ipam) -> dict:
    running = sum(1 for cid in s.slots.values() if ipam.containers[cid].state == "running")
    spec = s.spec
    return {"name": s.name, "seq": s.seq, "image": spec.image, "network": spec.network,
            "replicas": s.replicas, "running": running, "pending": len(s.pending),
            "ports": list(spec.ports), "constraints": list(spec.constraints),
            "restart": spec.restart}


def service_detail(s: Service, ipam: Ipam) -> dict:
    """``service inspect``: the service as the log made it, and its replicas."""
    spec = s.spec
    return {**service_json(s, ipam), "command": list(spec.command),
            "entrypoint": list(spec.entrypoint) if spec.entrypoint is not None else None,
            "env": list(spec.env), "workdir": spec.workdir, "user": spec.user,
            "memory": spec.memory, "pids_limit": spec.pids_limit, "cpus": spec.cpus,
            "init": spec.init, "tasks": service_tasks(s, ipam)}


def service_tasks(s: Service, ipam: Ipam) -> list[dict]:
    """``service ps``: each replica, its container or why it has none."""
    out = []
    for replica in range(1, s.replicas + 1):
        if (cid := s.slots.get(replica)) is not None:
            c = ipam.containers[cid]
            out.append({"replica": replica, "name": c.name, "id": c.id, "host": c.host,
                        "state": c.state, "ip": str(c.ip), "seq": c.seq})
        else:
            out.append({"replica": replica, "name": f"{s.name}.{replica}", "id": None,
                        "host": None, "state": "pending", "ip": None,
                        "reason": s.pending.get(replica)})
    return out


# -- replay -----------------------------------------------------------------------------

def replay(records: Iterable[Recorded], until: int | None = None) -> ClusterState:
    state = ClusterState()
    for rec in records:
        if until is not None and rec.seq > until:
            break
        state.apply(rec)
    return state


def view(state: ClusterState, node: str | None = None) -> dict:
    members = state.members.nodes
    if node is not None and node not in members:
        raise NotFound(f"no host named {node!r} in the log")
    hosts = [node] if node else sorted(state.members.live())
    return {
        "applied": state.applied,
        "members": [{"name": n.name, "address": n.address,
                     "state": "down" if n.down else n.state, "since": n.since}
                    for n in members.values()],
        "default_network": str(state.ipam.default_cidr) if state.ipam.default_cidr else None,
        "networks": [network_json(net) for net in state.ipam.networks.values()],
        "containers": [container_json(c) for c in state.ipam.containers.values()],
        "services": [service_json(s, state.ipam) for s in state.services.services.values()],
        "hosts": {h: [p.to_json() for p in overlay.plan(state, h).values()] for h in hosts},
        "rejected": [{"seq": seq, "reason": reason}
                     for seq, reason in sorted(state.rejected().items())],
    }


def render(v: dict) -> str:
    out = [f"at seq {v['applied']}", "", "members:"]
    out += [f"  {m['name']:<14} {m['address']:<16} {m['state']}" for m in v["members"]]
    out += ["", f"networks (default: {v['default_network'] or 'none'}):"]
    out += [f"  {n['name']:<16} {n['cidr']:<18} vni {n['vni']:<6} {n['containers']} containers"
            for n in v["networks"]] or ["  (none)"]
    if v.get("services"):
        out += ["", "services:"]
        out += [f"  {s['name']:<16} {s['running']}/{s['replicas']} running  {s['image']}"
                f"  {s['network']}" for s in v["services"]]
    out += ["", "containers:"]
    out += [f"  {c['name']:<16} {c['host']:<10} {c['network']:<16} {c['ip']:<15} {c['mac']}"
            f"  {c['state']}" for c in v["containers"]] or ["  (none)"]
    for host, plans in v["hosts"].items():
        out += ["", f"host {host}:"]
        if not plans:
            out.append("  no overlay network")
        for p in plans:
            out.append(f"  {p['bridge']} + {p['vxlan']} (vni {p['vni']}, network {p['name']})")
            out += [f"    fdb   {mac} dst {dst}" for mac, dst in p["fdb"].items()]
            out += [f"    neigh {ip} lladdr {mac}" for ip, mac in p["neigh"].items()]
    if v["rejected"]:
        out += ["", "rejected:"]
        out += [f"  seq {r['seq']}: {r['reason']}" for r in v["rejected"]]
    return "\n".join(out)
