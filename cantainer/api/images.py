"""Images: this host's store, and where the log says each image is; the slow work runs
off the event loop.

    {"op": "image_ls"}                          -> {"images": [...]} (with "hosts": where)
    {"op": "image_import", "ref": R, "path": P} -> {"image": {...}}
    {"op": "image_load", "path": P, "ref": R?}   -> {"image": {...}}
    {"op": "image_pull", "ref": R, "mirror": URL?} -> {"image": {...}}
    {"op": "image_rm", "ref": R}                -> {"removed": "name:tag"}
    {"op": "image_fetch", "image": R, "digest": D} (peer port, members)
        -> {"data": BASE64} per chunk of the archive the image was made from, then
           {"end": true, "size": N}

Each image added here is recorded in the log (``ImageStored``: this host, the
archive's SHA-256); if that append fails, the image is removed again (nothing
half-done).  ``daemon/images.py`` fetches what this host lacks.
"""

from __future__ import annotations

import asyncio
import base64

from cantainer.api import fields as f
from cantainer.errors import Conflict, NotFound
from cantainer.events import from_data, new_event_id
from cantainer.kernel.images import DEFAULT_IMAGE, parse_ref
from cantainer.pull import pull_alpine

CHUNK = 256 << 10  # bytes of archive a fetch answer line carries


def ref_of(meta: dict) -> str:
    return f"{meta['name']}:{meta['tag']}"


async def record_stored(h, meta: dict) -> dict:
    """``ImageStored`` for an image just added here; if the log cannot take it, the
    image goes again and the error is raised."""
    event = from_data("ImageStored", {"host": h.node, "image": ref_of(meta),
                                      "digest": meta["sha256"],
                                      "size": meta.get("archive_size", 0),
                                      "kind": meta.get("kind", "rootfs")})
    try:
        await h.append([event], [new_event_id()])
    except BaseException:
        await asyncio.to_thread(h.images.remove, ref_of(meta))
        raise
    return meta


async def known(h, image: str) -> None:
    """An image this host holds (busybox: built now if need be), or fetched now from a
    live member the log says holds it (``docker run`` pulls first too: its config gives
    the container's defaults here); else NotFound."""
    try:
        await asyncio.to_thread(h.images.rootfs, image)
    except NotFound:
        name, tag = parse_ref(image)
        await h.wait_applied()
        if not h.state.images.holders(f"{name}:{tag}"):
            raise NotFound(f"no image {name}:{tag} on this host or any other (see "
                           "'cantainer image ls', 'image load', 'image import', "
                           "'image pull')") from None
        await h.fetch_image(f"{name}:{tag}")


async def image_ls(h, req: dict, ex) -> None:
    await h.wait_applied()
    local = {ref_of(m): m for m in await asyncio.to_thread(h.images.list)}
    held = h.state.images
    out = []
    for ref in sorted(set(local) | set(held.held)):
        hosts = sorted(held.holders(ref))
        m = local.get(ref)
        if m is None:
            first = next(iter(held.holders(ref).values()), None)
            if first is None:
                continue
            name, tag = parse_ref(ref)
            m = {"name": name, "tag": tag, "size": first.size, "created": None,
                 "source": "-", "sha256": first.digest}
        out.append({**m, "here": ref in local,
                    "hosts": hosts if ref != f"{DEFAULT_IMAGE}:latest" else ["(each host)"]})
    await ex.send({"images": out})


async def image_import(h, req: dict, ex) -> None:
    meta = await asyncio.to_thread(h.images.import_tarball, req["ref"], req["path"])
    await ex.send({"image": await record_stored(h, meta)})


async def image_load(h, req: dict, ex) -> None:
    meta = await asyncio.to_thread(h.images.load_archive, req["path"], req["ref"])
    await ex.send({"image": await record_stored(h, meta)})


async def image_pull(h, req: dict, ex) -> None:
    meta = await asyncio.to_thread(pull_alpine, h.images, req["ref"], req["mirror"])
    await ex.send({"image": await record_stored(h, meta)})


async def image_rm(h, req: dict, ex) -> None:
    name, tag = parse_ref(req["ref"])
    ref = f"{name}:{tag}"
    await h.wait_applied()
    users = sorted(c.name for c in h.state.ipam.containers.values()
                   if c.host == h.node and c.created.image in (ref, name))
    if users:
        raise Conflict(f"image {ref} is used by container {users[0]!r} on this host")
    removed = await asyncio.to_thread(h.images.remove, ref)
    if h.node in h.state.images.holders(ref):
        event = from_data("ImageDeleted", {"host": h.node, "image": ref})
        await h.append([event], [new_event_id()])
    await ex.send({"removed": removed})


async def image_fetch(h, req: dict, ex) -> None:
    """A member asks for the archive of one of this host's images, by its digest."""
    try:
        path, meta = await asyncio.to_thread(h.images.archive, req["image"])
    except NotFound:
        raise NotFound(f"no image {req['image']} on host {h.node}") from None
    if meta.get("sha256") != req["digest"]:
        raise NotFound(f"image {req['image']} on host {h.node} is not of digest "
                       f"{req['digest'][:12]}")
    size = 0
    with open(path, "rb") as f_:
        while chunk := await asyncio.to_thread(f_.read, CHUNK):
            size += len(chunk)
            await ex.send({"data": base64.b64encode(chunk).decode()})
    await ex.send({"end": True, "size": size})


OPS = {
    "image_ls": (image_ls, {}),
    "image_import": (image_import, {"ref": (f.text, f.REQUIRED), "path": (f.text, f.REQUIRED)}),
    "image_load": (image_load, {"path": (f.text, f.REQUIRED), "ref": (f.text, None)}),
    "image_pull": (image_pull, {"ref": (f.text, f.REQUIRED), "mirror": (f.text, None)}),
    "image_rm": (image_rm, {"ref": (f.text, f.REQUIRED)}),
    "image_fetch": (image_fetch, {"image": (f.text, f.REQUIRED),
                                  "digest": (f.text, f.REQUIRED)}, "member"),
}
