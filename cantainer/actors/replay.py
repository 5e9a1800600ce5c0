"""``cantainer replay``: every projection over a log, without touching the kernel.

The records come from the daemon or from a file written by
``cantainer events --json``; the result is what every host *should* look
like at that point of the log.  Pure: no root, no netlink.
"""

from __future__ import annotations

from collections.abc import Iterable

from cantainer.actors.ipam import container_json, network_json
from cantainer.actors.overlay import Overlay
from cantainer.errors import CantainerError
from cantainer.events import Recorded, decode_fields


def record_from_json(obj: dict) -> Recorded:
    """A record as ``events --json`` prints it."""
    try:
        return Recorded(int(obj["seq"]), str(obj["id"]), str(obj["type"]), obj["version"],
                        str(obj["node"]), float(obj["time"]),
                        decode_fields(obj["type"], obj["version"], obj.get("data")))
    except (KeyError, TypeError, ValueError) as exc:
        raise CantainerError(f"not an event record: {exc}") from None


def replay(records: Iterable[Recorded], until: int | None = None) -> Overlay:
    overlay = Overlay()
    for rec in records:
        if until is not None and rec.seq > until:
            break
        overlay.apply(rec)
    return overlay


def view(overlay: Overlay, node: str | None = None) -> dict:
    ipam = overlay.ipam
    members = ipam.members.nodes
    if node is not None and node not in members:
        raise CantainerError(f"no host named {node!r} in the log")
    hosts = [node] if node else sorted(ipam.members.live())
    return {
        "applied": overlay.applied,
        "members": [{"name": n.name, "address": n.address, "state": n.state, "since": n.since}
                    for n in members.values()],
        "networks": [network_json(net, ipam) for net in ipam.networks.values()],
        "containers": [container_json(c) for c in ipam.containers.values()],
        "hosts": {h: [p.to_json() for p in overlay.plan(h).values()] for h in hosts},
        "rejected": [{"seq": seq, "reason": reason}
                     for seq, reason in sorted({**ipam.members.rejected,
                                                **ipam.rejected}.items())],
    }


def render(v: dict) -> str:
    out = [f"at seq {v['applied']}", "", "members:"]
    out += [f"  {m['name']:<14} {m['address']:<16} {m['state']}" for m in v["members"]]
    out += ["", "networks:"]
    out += [f"  {n['name']:<16} {n['cidr']:<18} vni {n['vni']:<6} {n['containers']} containers"
            for n in v["networks"]] or ["  (none)"]
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
