"""Asking a member for bytes over its peer port: image archives, archive segments,
checkpoints; and the connection a follower's log stream rides on (``daemon/fanout.py``).

The peer port speaks TLS; the member must answer with the certificate the log
records for it (``trust/tls.py: peer_fingerprint``).  The request is one JSON line;
the answer is lines of ``{"data": BASE64}``, then ``{"end": true}``, or
``{"error": ...}`` (``api/server.py``).  ``stream`` hands each chunk to ``sink``
and stops at ``most`` bytes; the caller checks what it got against the log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

from cantainer.config import peer_port
from cantainer.errors import CantainerError, Unavailable
from cantainer.trust.tls import peer_fingerprint

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0  # seconds without a line from the member
MAX_LINE = 1 << 20


async def connect(h, host: str, *, address: tuple[str, int] | None = None):
    """A TLS connection to live member ``host``'s peer port (or, with ``address``, to
    whoever answers there with a certificate of the cluster's CA): reader, writer."""
    fingerprint = None
    if address is None:
        address = h.peer(host)
        owner = h.state.members.live().get(host)
        if address is None or owner is None:
            raise Unavailable(f"{host} is no member")
        fingerprint = owner.fingerprint
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        *address, limit=MAX_LINE, ssl=h.peer_tls, server_hostname=None), CONNECT_TIMEOUT)
    if fingerprint is not None and \
            peer_fingerprint(writer.get_extra_info("ssl_object")) != fingerprint:
        writer.close()
        raise Unavailable("it answers with a certificate that is not its member's")
    return reader, writer


async def message(reader, timeout: float, ended: str) -> dict:
    """The member's next line: a JSON object; ``Unavailable`` with ``ended`` if the
    connection ended, with the member's own words if it answered an error."""
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line:
        raise Unavailable(ended)
    msg = json.loads(line)
    if not isinstance(msg, dict):
        raise Unavailable("it sent a line that is no JSON object")
    if "error" in msg:
        raise Unavailable(msg["error"])
    return msg


async def stream(h, host: str, request: dict, most: int, sink, *,
                 address: tuple[str, int] | None = None) -> int:
    """Ask ``host`` (``connect``) for ``request``; each chunk to ``sink``; the size."""
    reader, writer = await connect(h, host, address=address)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        size = 0
        while True:
            msg = await message(reader, READ_TIMEOUT, "it ended the transfer early")
            if msg.get("end"):
                return size
            chunk = base64.b64decode(msg["data"])
            size += len(chunk)
            if size > most:
                raise Unavailable(f"it sent more than the {most} bytes asked for")
            sink(chunk)
    finally:
        writer.close()


async def fetch(h, request: dict, digest: str, most: int) -> bytes:
    """``request``'s bytes from the first member (but this host) whose answer has
    SHA-256 ``digest``; ``Unavailable`` when none gives them.  The members are the
    live ones this host's state names; a state that names none yet (a host starting
    from a member's checkpoint) asks the Raft members, whose answers the digest, which
    the log gave, checks all the same."""
    asked = [(host, None) for host in sorted(h.state.members.live()) if host != h.node]
    if not asked:
        try:
            raft = await h.raft()
        except Exception as exc:  # noqa: BLE001 -- dqlite's client raises its own
            raise Unavailable(f"no member to ask: the Raft members are unknown ({exc})") \
                from None
        for member in raft["members"]:
            if member["address"] != raft["address"]:
                host, _, port = member["address"].rpartition(":")
                asked.append((member["address"], (host, peer_port(int(port)))))
    reasons = []
    for host, address in asked:
        parts: list[bytes] = []
        try:
            await stream(h, host, request, most, parts.append, address=address)
        except (OSError, TimeoutError, ValueError, KeyError, TypeError,
                CantainerError) as exc:
            reasons.append(f"{host}: {exc}")
            continue
        blob = b"".join(parts)
        if hashlib.sha256(blob).hexdigest() != digest:
            reasons.append(f"{host}: what it sent is not of the log's sha256 {digest[:12]}")
            continue
        return blob
    raise Unavailable("; ".join(reasons) or "no other member")
