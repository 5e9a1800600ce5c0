"""The CLI's end of the API socket: one request line, then reply lines until the
daemon closes.  An error line becomes an ``ApiError`` with the kind it came with."""

from __future__ import annotations

import json
import socket

from cantainer.errors import ApiError, DaemonUnreachable


def connect(path: str, message: dict) -> socket.socket:
    """A connection to the daemon with ``message`` sent on it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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


def replies(sock: socket.socket):
    """The response objects on a connection ``connect`` made; ApiError on an error line."""
    with sock, sock.makefile("rb") as stream:
        for line in stream:
            reply = json.loads(line)
            if "error" in reply:
                raise ApiError(reply["error"], reply.get("kind", "error"))
            yield reply


def call(path: str, message: dict) -> dict:
    for reply in request(path, message):
        return reply
    raise ApiError("the daemon closed the connection without answering", "unavailable")
