"""Services: replicas placed by the log (projections/services.py), from any host.

    {"op": "service_create", "name": N, "replicas": R, "image": I, "command": [...]?,
     "entrypoint": [...]?, "network": N?, "env": [...], "workdir": W?, "user": U?,
     "memory": B?, "pids_limit": N?, "cpus": X?, "ports": ["HOSTPORT:PORT[/udp]", ...],
     "restart": POLICY?, "init": bool, "constraints": ["node.name==H", ...],
     "detach": bool, "id": ID?}
        -> {"service": {...}} once every replica that can be placed runs (or at once
           with "detach"); pending ones are shown, not waited for
    {"op": "service_ls"}                            -> {"services": [...]}
    {"op": "service_ps", "name": N}                 -> {"tasks": [...]}
    {"op": "service_inspect", "name": N}            -> {"service": {...}}
    {"op": "service_scale", "name": N, "replicas": R, "detach": bool, "id": ID?}
                                                    -> {"service": {...}}
    {"op": "service_rm", "name": N, "id": ID?}      -> {"removed": N}
"""

from __future__ import annotations

import asyncio

from cantainer.api import fields as f
from cantainer.api.containers import check_runnable, process_of
from cantainer.api.images import known
from cantainer.errors import Conflict, Invalid, InvalidEvent, NotFound
from cantainer.events import from_data, new_event_id
from cantainer.events.validate import MAX_REPLICAS, parse_constraint, parse_port
from cantainer.projections.ipam import DEFAULT_NETWORK
from cantainer.projections.services import reserved_ports
from cantainer.projections.view import service_detail, service_json, service_tasks

CONVERGE_TIMEOUT = 120.0  # seconds for a service's placed replicas to run


def _replicas(name: str, value) -> int:
    f.count(name, value)
    if value > MAX_REPLICAS:
        raise Invalid(f"--replicas {value}: at most {MAX_REPLICAS}")
    return value


async def _service(h, name: str):
    await h.wait_applied()
    s = h.state.services.services.get(name)
    if s is None:
        raise NotFound(f"no service named {name!r}")
    return s


async def _converged(h, name: str, detach: bool) -> dict:
    """The service's answer, once each placed replica runs (or exited: its restart
    policy, its host's report) — unless ``detach``."""
    def done() -> bool:
        s = h.state.services.services.get(name)
        return s is None or all(h.state.ipam.containers[cid].state != "created"
                                for cid in s.slots.values())
    if not detach:
        await h.until(done, CONVERGE_TIMEOUT, f"the replicas of service {name} to start")
    s = h.state.services.services.get(name)
    if s is None:
        raise NotFound(f"service {name!r} was removed meanwhile")
    return service_json(s, h.state.ipam)


async def service_create(h, req: dict, ex) -> None:
    await known(h, req["image"])
    network = req["network"] or DEFAULT_NETWORK
    await h.wait_applied()
    ipam = h.state.ipam
    if "/" not in network and network not in ipam.networks and not (
            network == DEFAULT_NETWORK and ipam.default_cidr is not None):
        raise NotFound(f"no network named {network!r}")
    check_runnable(req)
    for spec in req["constraints"]:
        try:
            _, host = parse_constraint(spec)
        except InvalidEvent as exc:
            raise Invalid(f"--constraint {exc}") from None
        if host not in h.state.members.nodes:
            raise NotFound(f"--constraint {spec}: no member named {host!r}")
    net = ipam.network_of(network)
    if req["ports"] and net is not None and net.internal:
        raise Invalid(f"-p: network {net.name!r} is internal: nothing comes in or goes out")
    reserved = reserved_ports(h.state.members)
    for spec in req["ports"]:
        try:
            ip, port, _, proto = parse_port(spec)
        except InvalidEvent as exc:
            raise Invalid(f"-p {exc}") from None
        if (use := reserved.get((port, proto))) is not None:
            raise Conflict(f"-p {spec}: port {port}/{proto} is {use}'s")
        if ip is not None:
            raise Invalid(f"-p {spec}: a service's port is published at every address of "
                          "every host (HOSTPORT:PORT)")
        if (other := ipam.mesh_ports.get((port, proto))) is not None:
            raise Conflict(f"-p {spec}: port {port}/{proto} is published by service "
                           f"{other!r}")
        for (host, p, pr), cid in ipam.published.items():
            if (p, pr) == (port, proto):
                raise Conflict(f"-p {spec}: port {port}/{proto} is published on {host} by "
                               f"container {ipam.containers[cid].name!r}")
    if req["name"] in h.state.services.services:
        raise Conflict(f"service {req['name']!r} already exists")
    if clash := sorted(n for n in ipam.names if n.partition(".")[0] == req["name"]):
        raise Conflict(f"service name {req['name']!r} clashes with container {clash[0]!r}")
    fields = {"name": req["name"], "network": network, "replicas": req["replicas"],
              "image": req["image"], **await process_of(h, req),
              "memory": req["memory"], "pids_limit": req["pids_limit"], "cpus": req["cpus"],
              "ports": req["ports"], "restart": req["restart"], "init": req["init"],
              "constraints": req["constraints"]}
    event = from_data("ServiceCreated", {k: v for k, v in fields.items() if v is not None})
    await h.append([event], [req["id"] or new_event_id()])
    await ex.send({"service": await _converged(h, event.name, req["detach"])})


async def service_ls(h, req: dict, ex) -> None:
    await h.wait_applied()
    await ex.send({"services": [service_json(s, h.state.ipam)
                                for s in h.state.services.services.values()]})


async def service_ps(h, req: dict, ex) -> None:
    s = await _service(h, req["name"])
    await ex.send({"tasks": service_tasks(s, h.state.ipam)})


async def service_inspect(h, req: dict, ex) -> None:
    s = await _service(h, req["name"])
    await ex.send({"service": service_detail(s, h.state.ipam)})


async def service_scale(h, req: dict, ex) -> None:
    await _service(h, req["name"])
    event = from_data("ServiceScaled", {"name": req["name"], "replicas": req["replicas"]})
    await h.append([event], [req["id"] or new_event_id()])
    await ex.send({"service": await _converged(h, event.name, req["detach"])})


async def service_rm(h, req: dict, ex) -> None:
    await _service(h, req["name"])
    event = from_data("ServiceRemoved", {"name": req["name"]})
    await h.append([event], [req["id"] or new_event_id()])
    await ex.send({"removed": event.name})


OPS = {
    "service_create": (service_create, {
        "name": (f.text, f.REQUIRED), "replicas": (_replicas, 1),
        "image": (f.text, "busybox"), "command": (f.command, None),
        "entrypoint": (f.command, None), "network": (f.text, None), "env": (f.texts, []),
        "workdir": (f.text, None), "user": (f.text, None), "memory": (f.count, None),
        "pids_limit": (f.count, None), "cpus": (f.number, None), "ports": (f.texts, []),
        "restart": (f.text, None), "init": (f.flag, False), "constraints": (f.texts, []),
        "detach": (f.flag, False), "id": (f.text, None)}),
    "service_ls": (service_ls, {}),
    "service_ps": (service_ps, {"name": (f.text, f.REQUIRED)}),
    "service_inspect": (service_inspect, {"name": (f.text, f.REQUIRED)}),
    "service_scale": (service_scale, {"name": (f.text, f.REQUIRED),
                                      "replicas": (_replicas, f.REQUIRED),
                                      "detach": (f.flag, False), "id": (f.text, None)}),
    "service_rm": (service_rm, {"name": (f.text, f.REQUIRED), "id": (f.text, None)}),
}
