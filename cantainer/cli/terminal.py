"""The CLI's end of ``run -i``/``-t`` and of ``exec``.

``run``: hand the container a terminal, relay it.

``attach(path)`` connects to the container's shim (``STATE_DIR/attach.sock``)
and sends it three file descriptors for the container's stdin, stdout and
stderr.  With ``-t`` they are the slave of a new pseudo-terminal, whose
master this process relays to and from its own terminal (in raw mode, with
window-size changes passed on), as ``script`` does; without ``-t`` they are
this process's own stdio (stdin only with ``-i``).  Returns the container's
exit code, which the shim sends back when the container ends.

``exec_relay(sock, ...)``: the container may be on another host, so no file
descriptor can pass; stdin, stdout, stderr and window sizes travel as JSON
lines (see ``cantainer/api/exec_session.py``) over the request's connection.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import signal
import socket
import sys
import struct
import termios
import threading
import tty as ttymod

from cantainer.cli.client import lines
from cantainer.errors import ApiError


def _copy_size(source: int, target: int) -> None:
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # not a terminal: keep the default size


def attach(path: str, interactive: bool, tty: bool) -> int | None:
    """The container's stdio, relayed; its exit code, or None when it never waited for
    us (it could not start: the reason is in its logs)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    try:
        os.chdir(os.path.dirname(path))  # a relative name: the full path may pass 108 bytes
        sock.connect(os.path.basename(path))
    except OSError:
        sock.close()
        return None
    finally:
        os.chdir(here)
    stdin = sys.stdin.fileno() if interactive else os.open(os.devnull, os.O_RDONLY)
    # Our stdio either way: with -t, what the container says before it has its
    # terminal (it cannot start, say) still reaches this one.
    socket.send_fds(sock, [json.dumps({"tty": tty, "size": size()}).encode()], [stdin, 1, 2])
    if not tty:
        return _exit_code(sock)
    # The container's terminal, of its own devpts (so 'tty' names it inside): its master.
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        return _exit_code(sock)  # it ended before it had one
    master = fds[0]
    saved = termios.tcgetattr(0) if interactive and os.isatty(0) else None
    if saved is not None:
        ttymod.setraw(0, termios.TCSANOW)  # TCSAFLUSH would drop type-ahead
        signal.signal(signal.SIGWINCH, lambda *_: _copy_size(0, master))
    try:
        _relay(master, interactive)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
    return _exit_code(sock)


def _relay(master: int, interactive: bool) -> None:
    watched = [master, 0] if interactive else [master]
    while True:
        try:
            ready, _, _ = select.select(watched, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the container's side of the terminal is closed
                return
            if not data:
                return
            os.write(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
            else:
                watched.remove(0)  # end of input: the container keeps its terminal


def _exit_code(sock: socket.socket) -> int | None:
    with sock, sock.makefile("rb") as stream:
        line = stream.readline()
    try:
        return json.loads(line)["exit_code"]
    except (ValueError, KeyError, TypeError):
        return None


def size() -> list[int] | None:
    """This terminal's [rows, cols], if stdout is one."""
    for fd in (1, 0):
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ,
                                                                 b"\0" * 8))
            return [rows, cols]
        except OSError:
            continue
    return None


def exec_relay(sock, interactive: bool, tty: bool) -> int:
    """``sock``: the connection ``client.connect`` made."""
    lock = threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            try:
                sock.sendall(json.dumps(msg).encode() + b"\n")
            except OSError:
                pass  # the daemon ended the session; its last line says how

    def feed() -> None:
        while data := os.read(0, 65536):
            send({"stdin": base64.b64encode(data).decode()})
        send({"stdin_eof": True})

    saved = termios.tcgetattr(0) if tty and interactive and os.isatty(0) else None
    if saved is not None:
        ttymod.setraw(0, termios.TCSANOW)
        signal.signal(signal.SIGWINCH, lambda *_: send({"resize": size()}))
    if interactive:
        threading.Thread(target=feed, daemon=True).start()
    try:
        for line in lines(sock):
            reply = json.loads(line)
            if "stdout" in reply:
                _write_all(1, base64.b64decode(reply["stdout"]))
            elif "stderr" in reply:
                _write_all(2, base64.b64decode(reply["stderr"]))
            elif "exit_code" in reply:
                return reply["exit_code"]
            elif "error" in reply:
                raise ApiError(reply["error"])
    finally:
        sock.close()
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    raise ApiError("the daemon ended the exec session without an exit code")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
