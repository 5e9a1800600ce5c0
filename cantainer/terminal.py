"""The CLI's end of ``run -i``/``-t``: hand the container a terminal, relay it.

``attach(path)`` connects to the container's shim (``STATE_DIR/attach.sock``)
and sends it three file descriptors for the container's stdin, stdout and
stderr.  With ``-t`` they are the slave of a new pseudo-terminal, whose
master this process relays to and from its own terminal (in raw mode, with
window-size changes passed on), as ``script`` does; without ``-t`` they are
this process's own stdio (stdin only with ``-i``).  Returns the container's
exit code, which the shim sends back when the container ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import sys
import termios
import tty as ttymod


def _copy_size(source: int, target: int) -> None:
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # not a terminal: keep the default size


def attach(path: str, interactive: bool, tty: bool) -> int | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    os.chdir(os.path.dirname(path))  # a relative name: the full path may pass 108 bytes
    try:
        sock.connect(os.path.basename(path))
    finally:
        os.chdir(here)
    stdin = sys.stdin.fileno() if interactive else os.open(os.devnull, os.O_RDONLY)
    if not tty:
        socket.send_fds(sock, [b'{"tty": false}'], [stdin, 1, 2])
        return _exit_code(sock)
    master, slave = os.openpty()
    _copy_size(0, slave)
    socket.send_fds(sock, [b'{"tty": true}'], [slave, slave, slave])
    os.close(slave)
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
