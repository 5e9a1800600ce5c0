"""The daemon's API: JSON Lines over a unix socket (mode 0600), and the peer port.

A client sends one request line and reads response lines until the daemon
closes the connection.  Every response line is a JSON object; a failure is
``{"error": "one line for the user", "kind": KIND}`` (``cantainer/errors.py``)
and ends the exchange.  The operations, their fields and their answers are in
``OPS`` (one module per concern: log, cluster, networks, containers, services,
images).

Every request passes one filter (``normalise``) before its handler: the
fields its operation takes are checked and given their defaults, others are
dropped, so a handler reads ``req["ref"]`` knowing it is a non-empty string.

The peer listener (dqlite port + 2) is TLS with the cluster's certificates.
It serves the operations marked ``peer``: "member" ones (``logs`` and ``exec``
of this host's containers, which another daemon forwards) to a client whose
certificate the log records for a live member; "anyone" ones (``ca``,
``join``, ``whoami``: what a joiner asks) to any client.  A member's open
exchanges are cut when it leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from cantainer.api import (cluster, containers, images, log as log_ops, networks, services,
                           trust, volumes)
from cantainer.api.fields import REQUIRED
from cantainer.api.handle import Handle
from cantainer.errors import CantainerError, Internal, Invalid, Unavailable
from cantainer.trust.tls import peer_fingerprint

log = logging.getLogger(__name__)

MAX_REQUEST = 16 << 20  # bytes in one request line (a batch of events)


class Exchange:
    """One connection: the request line is read; more lines may follow (exec's stdin)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, msg: dict) -> None:
        self.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def receive(self) -> dict | None:
        """The client's next line; None once it has closed its side."""
        line = await self.reader.readline()
        if not line:
            return None
        try:
            msg = json.loads(line)
        except ValueError:
            raise Invalid("bad request: a line is not JSON") from None
        if not isinstance(msg, dict):
            raise Invalid("bad request: a line is not an object")
        return msg


class Op(NamedTuple):
    handler: Callable[[Handle, dict, Exchange], Awaitable[None]]
    fields: dict  # name -> (check, default); default REQUIRED: the request must give it
    peer: str | None = None  # on the peer port too: to a "member", or to "anyone"


OPS: dict[str, Op] = {name: Op(*spec) for module in (log_ops, cluster, networks, containers,
                                                      services, images, volumes, trust)
                      for name, spec in module.OPS.items()}


def normalise(op: str, request: dict, peer: str | None = None,
              fingerprint: str | None = None) -> dict:
    """The request with each of its operation's fields checked and defaulted.  ``peer``:
    it came to the peer port from a "member" or a "stranger" (its certificate, if any:
    ``fingerprint``); None: the local socket."""
    spec = OPS.get(op) if isinstance(op, str) else None
    if spec is None or (peer is not None and spec.peer is None):
        raise Invalid(f"unknown request {op!r}")
    if peer == "stranger" and spec.peer == "member":
        raise Invalid(f"request {op!r} is for members: this certificate is no live member's")
    out = {"op": op, "peer": peer is not None, "fingerprint": fingerprint}
    for name, (check, default) in spec.fields.items():
        value = request.get(name)
        if value is None and default is not REQUIRED:
            out[name] = default
        else:
            out[name] = check(name, value)  # a missing required field: its check says so
    return out


class ApiServer:
    def __init__(self, handle: Handle, path: str) -> None:
        self.handle = handle
        self.path = path
        self._servers: list[asyncio.Server] = []

    async def start(self, peer_address: tuple[str, int] | None = None,
                    peer_tls=None) -> None:
        _claim_socket(self.path)
        old = os.umask(0o177)
        try:
            self._servers.append(await asyncio.start_unix_server(
                self._serve, self.path, limit=MAX_REQUEST))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        if peer_address is not None:
            try:
                self._servers.append(await asyncio.start_server(
                    lambda r, w: self._serve(r, w, peer=True), *peer_address,
                    limit=MAX_REQUEST, reuse_address=True, ssl=peer_tls,
                    ssl_handshake_timeout=5.0))
            except OSError as exc:
                await self.stop()
                raise Unavailable(f"cannot serve peers on {peer_address[0]}:"
                                  f"{peer_address[1]}: {exc.strerror}") from None

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._servers:
            self._servers = []
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: bool = False) -> None:
        ex = Exchange(reader, writer)
        try:
            try:
                line = await reader.readline()
                if not line:
                    return  # connected and went: nothing to answer
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError as exc:  # includes over-long lines and bad JSON
                raise Invalid(f"bad request: {exc}") from None
            fingerprint = None
            if peer:
                tls = writer.get_extra_info("ssl_object")
                fingerprint = peer_fingerprint(tls) if tls is not None else None
                member = self.handle.gate.admits(fingerprint)
                request = normalise(request.get("op"), request,
                                    "member" if member else "stranger", fingerprint)
                if member:  # cut when it leaves
                    self.handle.gate.track(ex, fingerprint, True, writer.close)
            else:
                request = normalise(request.get("op"), request)
            await OPS[request["op"]].handler(self.handle, request, ex)
        except CantainerError as exc:
            await _quietly(ex.send({"error": str(exc), "kind": exc.kind}))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            log.exception("API request failed")
            error = Internal(f"internal error: {type(exc).__name__}: {exc}")
            await _quietly(ex.send({"error": str(error), "kind": error.kind}))
        finally:
            if peer:
                self.handle.gate.untrack(ex)
            writer.close()


async def _quietly(coro) -> None:
    try:
        await coro
    except (ConnectionError, OSError):
        pass


def _claim_socket(path: str) -> None:
    """Remove a stale socket file; refuse if a daemon still answers there."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise Unavailable(f"another cantainerd is listening on {path}")
    finally:
        probe.close()
