"""Forwarding: a request about a container of another host goes to that host's peer port.

The local daemon opens a TLS connection (its member certificate; the owner's
verified against the cluster CA) to the owner's peer API (dqlite port + 2),
sends the request naming the container by id, and relays bytes both ways
until the owner ends the exchange (exec's stdin comes after the request).
"""

from __future__ import annotations

import asyncio
import json
import ssl

from cantainer.errors import Unavailable

CONNECT_TIMEOUT = 3.0  # seconds to reach the daemon that runs a container
MAX_LINE = 16 << 20


async def relay(address: tuple[str, int], request: dict, ex, what: str, tls) -> None:
    """Send ``request`` to the peer at ``address`` and relay the exchange; ``what``
    names the action and the host for the one-line error when it does not answer."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address, limit=MAX_LINE, ssl=tls, server_hostname=None),
            CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise Unavailable(f"{what} does not answer ({exc or 'timed out'})") from None
    writer.write(json.dumps(request).encode() + b"\n")
    upstream = asyncio.create_task(_pipe(ex.reader, writer))
    try:
        await _pipe(reader, ex.writer)
    finally:
        upstream.cancel()
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until the reader ends, then end the writer's side."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
