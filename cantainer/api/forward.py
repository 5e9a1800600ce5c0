"""Forwarding: a request about a container of another host goes to that host's peer port.

The local daemon opens a TLS connection (its member certificate; the owner's
verified against the cluster CA, and then required to be the very certificate
the log records for the owner: a certificate the CA signed for someone else is
refused) to the owner's peer API (dqlite port + 2), sends the request naming
the container by id, and relays bytes both ways until the owner ends the
exchange (exec's stdin comes after the request).  The gate tracks the
connection, so the owner leaving the cluster cuts it.
"""

from __future__ import annotations

import asyncio
import json
import ssl

from cantainer.errors import Unavailable
from cantainer.trust.tls import Gate, peer_fingerprint

CONNECT_TIMEOUT = 3.0  # seconds to reach the daemon that runs a container
MAX_LINE = 16 << 20


async def relay(address: tuple[str, int], fingerprint: str, request: dict, ex, what: str,
                tls, gate: Gate) -> None:
    """Send ``request`` to the member at ``address``, whose certificate the log names by
    ``fingerprint``, and relay the exchange; ``what`` names the action and the host for
    the one-line error when it does not answer."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*address, limit=MAX_LINE, ssl=tls, server_hostname=None),
            CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise Unavailable(f"{what} does not answer ({exc or 'timed out'})") from None
    if peer_fingerprint(writer.get_extra_info("ssl_object")) != fingerprint:
        writer.close()
        raise Unavailable(f"{what} answers at {address[0]}:{address[1]} with a certificate "
                          "that is not its member's: refusing to send it the request")
    gate.track(writer, fingerprint, False, writer.close)
    writer.write(json.dumps(request).encode() + b"\n")
    upstream = asyncio.create_task(_pipe(ex.reader, writer))
    try:
        await _pipe(reader, ex.writer)
    finally:
        gate.untrack(writer)
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
