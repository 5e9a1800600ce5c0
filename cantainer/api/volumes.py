"""This host's named volumes (``kernel/volumes.py``), and which containers use them.

    {"op": "volume_create", "name": N?}  -> {"volume": {...}}   (a random name if none)
    {"op": "volume_ls"}                  -> {"volumes": [...]}
    {"op": "volume_inspect", "name": N}  -> {"volume": {..., "containers": [NAME, ...]}}
    {"op": "volume_rm", "name": N}       -> {"removed": N}       refused while in use
"""

from __future__ import annotations

import asyncio
import os

from cantainer.api import fields as f
from cantainer.errors import Conflict, Invalid
from cantainer.events.validate import NAME_RE, parse_volume


def users(h, name: str) -> list[str]:
    """The containers of this host the log still has that mount the volume."""
    return sorted(c.name for c in h.state.ipam.containers.values()
                  if c.host == h.node and any(parse_volume(v)[0] == name
                                              for v in c.created.volumes))


def _name(name: str, value) -> str:
    text = f.text(name, value)
    if not NAME_RE.match(text):
        raise Invalid(f"{text!r} is not a volume name (letters, digits, '_.-')")
    return text


async def volume_create(h, req: dict, ex) -> None:
    name = req["name"] or os.urandom(16).hex()
    await ex.send({"volume": await asyncio.to_thread(h.volumes.create, name)})


async def volume_ls(h, req: dict, ex) -> None:
    await ex.send({"volumes": await asyncio.to_thread(h.volumes.list)})


async def volume_inspect(h, req: dict, ex) -> None:
    await h.wait_applied()
    meta = await asyncio.to_thread(h.volumes.inspect, req["name"])
    await ex.send({"volume": {**meta, "containers": users(h, req["name"])}})


async def volume_rm(h, req: dict, ex) -> None:
    await h.wait_applied()
    await asyncio.to_thread(h.volumes.inspect, req["name"])  # not found first
    if using := users(h, req["name"]):
        raise Conflict(f"volume {req['name']} is in use by container "
                       f"{', '.join(using)}: remove {'it' if len(using) == 1 else 'them'} "
                       "first")
    await ex.send({"removed": await asyncio.to_thread(h.volumes.remove, req["name"])})


OPS = {
    "volume_create": (volume_create, {"name": (_name, None)}),
    "volume_ls": (volume_ls, {}),
    "volume_inspect": (volume_inspect, {"name": (_name, f.REQUIRED)}),
    "volume_rm": (volume_rm, {"name": (_name, f.REQUIRED)}),
}
