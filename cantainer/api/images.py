"""This host's images; the slow work runs off the event loop.

    {"op": "image_ls"}                          -> {"images": [...]}
    {"op": "image_import", "ref": R, "path": P} -> {"image": {...}}
    {"op": "image_load", "path": P, "ref": R?}   -> {"image": {...}}
    {"op": "image_pull", "ref": R, "mirror": URL?} -> {"image": {...}}
    {"op": "image_rm", "ref": R}                -> {"removed": "name:tag"}
"""

from __future__ import annotations

import asyncio

from cantainer.api import fields as f
from cantainer.pull import pull_alpine


async def image_ls(h, req: dict, ex) -> None:
    await ex.send({"images": await asyncio.to_thread(h.images.list)})


async def image_import(h, req: dict, ex) -> None:
    meta = await asyncio.to_thread(h.images.import_tarball, req["ref"], req["path"])
    await ex.send({"image": meta})


async def image_load(h, req: dict, ex) -> None:
    meta = await asyncio.to_thread(h.images.load_archive, req["path"], req["ref"])
    await ex.send({"image": meta})


async def image_pull(h, req: dict, ex) -> None:
    meta = await asyncio.to_thread(pull_alpine, h.images, req["ref"], req["mirror"])
    await ex.send({"image": meta})


async def image_rm(h, req: dict, ex) -> None:
    await ex.send({"removed": await asyncio.to_thread(h.images.remove, req["ref"])})


OPS = {
    "image_ls": (image_ls, {}),
    "image_import": (image_import, {"ref": (f.text, f.REQUIRED), "path": (f.text, f.REQUIRED)}),
    "image_load": (image_load, {"path": (f.text, f.REQUIRED), "ref": (f.text, None)}),
    "image_pull": (image_pull, {"ref": (f.text, f.REQUIRED), "mirror": (f.text, None)}),
    "image_rm": (image_rm, {"ref": (f.text, f.REQUIRED)}),
}
