"""Overlay networks.

    {"op": "network_create", "cidr": C, "name": N?, "internal": B?, "id": ID?}
                                                             -> {"network": {...}}
    {"op": "network_ls"}                                     -> {"networks": [...]}
    {"op": "network_rm", "name": N, "id": ID?}               -> {"removed": N}
"""

from __future__ import annotations

from cantainer.api import fields as f
from cantainer.errors import NotFound
from cantainer.events import from_data, new_event_id, parse_cidr
from cantainer.projections.ipam import implicit_name
from cantainer.projections.view import network_json


def _cidr(name: str, value) -> str:
    parse_cidr(value)  # Invalid, naming the value
    return value


async def network_create(h, req: dict, ex) -> None:
    name = req["name"] or implicit_name(parse_cidr(req["cidr"]))
    event = from_data("NetworkCreated", {"name": name, "cidr": req["cidr"],
                                         "internal": req["internal"]})
    await h.append([event], [req["id"] or new_event_id()])
    await ex.send({"network": network_json(h.state.ipam.networks[name])})


async def network_ls(h, req: dict, ex) -> None:
    await h.wait_applied()
    await ex.send({"networks": [network_json(n) for n in h.state.ipam.networks.values()]})


async def network_rm(h, req: dict, ex) -> None:
    await h.wait_applied()
    if req["name"] not in h.state.ipam.networks:  # else log order decides
        raise NotFound(f"no network named {req['name']!r}")
    event = from_data("NetworkRemoved", {"name": req["name"]})
    await h.append([event], [req["id"] or new_event_id()])
    await ex.send({"removed": event.name})


OPS = {
    "network_create": (network_create, {"cidr": (_cidr, f.REQUIRED), "name": (f.text, None),
                                        "internal": (f.flag, False), "id": (f.text, None)}),
    "network_ls": (network_ls, {}),
    "network_rm": (network_rm, {"name": (f.text, f.REQUIRED), "id": (f.text, None)}),
}
