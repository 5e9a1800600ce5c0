"""The CLI's end of the API socket: one request line, then reply lines until the
daemon closes.  An error line becomes an ``ApiError`` with the kind it came with.

It speaks through ``_socket``, the C module under ``socket``: the ``socket`` module
itself (with ``selectors`` and its enums) costs every command's start 3 ms, and a
unix socket, ``sendall`` and ``recv`` are all a command needs.
"""

from __future__ import annotations

import json
from _socket import AF_UNIX, SOCK_STREAM, socket

from cantainer.errors import ApiError, DaemonUnreachable


def connect(path: str, message: dict) -> socket:
    """A connection to the daemon with ``message`` sent on it."""
    sock = socket(AF_UNIX, SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonUnreachable(f"no cantainerd answers at {path} (is it running? "
                                "see --socket / CANTAINER_SOCKET)") from None
    except PermissionError:
        sock.close()
        raise DaemonUnreachable(f"permission denied on {path}: cantainer needs root") from None
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    return sock


def request(path: str, message: dict):
    """Send one request; yield the response objects; raise ApiError on an error line."""
    return replies(connect(path, message))


def replies(sock: socket):
    """The response objects on a connection ``connect`` made (closed at their end);
    ApiError on an error line."""
    try:
        for line in lines(sock):
            reply = json.loads(line)
            if "error" in reply:
                raise ApiError(reply["error"], reply.get("kind", "error"))
            yield reply
    finally:
        sock.close()


def lines(sock: socket):
    """The lines the daemon sends, without their ends, until it closes."""
    pending: list[bytes] = []  # a line's first parts (a replay's lines are megabytes)
    while chunk := sock.recv(1 << 16):
        *whole, rest = chunk.split(b"\n")
        if whole:
            yield b"".join(pending) + whole[0]
            yield from whole[1:]
            pending = []
        if rest:
            pending.append(rest)
    if pending:
        yield b"".join(pending)


def call(path: str, message: dict) -> dict:
    for reply in request(path, message):
        return reply
    raise ApiError("the daemon closed the connection without answering", "unavailable")
