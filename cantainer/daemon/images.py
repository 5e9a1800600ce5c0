"""Images that follow their containers: this host fetches what its containers need.

After every batch the runner applies (and every second, for retries), ``update``
looks at the containers the log places on this host that have not started: an image
this host lacks that the log says another live member holds (``ImageStored``) is
fetched from that member's peer port (``api/images.py: image_fetch``, through
``daemon/peers.py``: TLS, each side the certificate the log records for it),
written to a scratch file, its SHA-256 checked against the log's, and added to the store the way its holder made it (a
root tarball or ``image load``'s layers, with the same refusals).  Then this host
records that it holds it, and the runtime is told to look again (it leaves such a
container unstarted meanwhile: ``projections/runtime.py: image_elsewhere``).  A
holder that fails (gone, refusing, a digest that does not match) is logged and the
next one asked; when none can give it, it is asked again ``RETRY`` seconds later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time

from cantainer.actors import Reconcile
from cantainer.daemon import peers
from cantainer.api.images import record_stored
from cantainer.errors import CantainerError, ImageError, Unavailable
from cantainer.kernel.images import DEFAULT_IMAGE, parse_ref

log = logging.getLogger(__name__)

RETRY = 5.0  # seconds before an image no holder could give is asked for again


def normal(ref: str) -> str | None:
    try:
        name, tag = parse_ref(ref)
    except ImageError:
        return None
    return f"{name}:{tag}"


class ImageFollower:
    def __init__(self, handle, runner) -> None:
        self.h = handle
        self.runner = runner
        self._fetching: dict[str, asyncio.Task] = {}
        self._retry_at: dict[str, float] = {}

    def wanted(self, state) -> set[str]:
        """Images of this host's unstarted containers that it lacks and the log says
        another live member holds."""
        out = set()
        for c in state.ipam.containers.values():
            if c.host != self.h.node or c.state != "created":
                continue
            ref = normal(c.created.image)
            if ref is None or ref == f"{DEFAULT_IMAGE}:latest" or ref in out:
                continue
            if state.images.holders(ref) and not self.h.images.has(ref):
                out.add(ref)
        return out

    def update(self, state) -> None:
        now = time.monotonic()
        for ref in self.wanted(state):
            if ref not in self._fetching and now >= self._retry_at.get(ref, 0):
                self._fetching[ref] = asyncio.create_task(self._follow(ref))

    async def fetch(self, ref: str) -> None:
        """Until ``ref`` is here (an API call that needs it now: run, service create)."""
        if not self.h.images.has(ref):
            task = self._fetching.get(ref)
            if task is None:
                task = self._fetching[ref] = asyncio.create_task(self._follow(ref))
            await asyncio.shield(task)
        if not self.h.images.has(ref):
            raise Unavailable(f"image {ref}: no host that holds it could give it (this "
                              "daemon's log says why)")

    async def close(self) -> None:
        for task in self._fetching.values():
            task.cancel()
        await asyncio.gather(*self._fetching.values(), return_exceptions=True)

    async def _follow(self, ref: str) -> None:
        try:
            holders = self.h.state.images.holders(ref)
            for host, held in holders.items():
                if host == self.h.node:
                    continue
                started = time.monotonic()
                try:
                    meta = await self._fetch(ref, host, held)
                    await record_stored(self.h, meta)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 -- a holder's fault: the next one
                    log.warning("image %s: not from %s: %s", ref, host,
                                exc if isinstance(exc, (CantainerError, OSError))
                                else f"{type(exc).__name__}: {exc}")
                    continue
                log.info("image %s: fetched from %s (%d bytes, sha256 %s) in %.2f s", ref,
                         host, held.size, held.digest[:12], time.monotonic() - started)
                self._retry_at.pop(ref, None)
                self.runner.tell("runtime", Reconcile(full=False))
                return
            self._retry_at[ref] = time.monotonic() + RETRY
        finally:
            self._fetching.pop(ref, None)

    async def _fetch(self, ref: str, host: str, held) -> dict:
        os.makedirs(self.h.images.root, mode=0o700, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=".fetch-", dir=self.h.images.root)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                def sink(chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)
                await peers.stream(self.h, host, {"op": "image_fetch", "image": ref,
                                                  "digest": held.digest}, held.size, sink)
            if digest.hexdigest() != held.digest:
                raise ImageError(f"what it sent has sha256 {digest.hexdigest()[:12]}, not "
                                 f"the log's {held.digest[:12]}: refused")
            return await asyncio.to_thread(self.h.images.add, ref, held.kind, scratch,
                                           f"{host} sha256:{held.digest}")
        finally:
            try:
                os.unlink(scratch)
            except FileNotFoundError:
                pass
