"""The daemon's end of ``cantainer exec``: a process in a container, relayed.

The process is ``python -m cantainer.kernel.enter``, which joins the
container's namespaces and cgroup and execs the command (see
``kernel/enter.py``).  Its stdio are pipes, or the slave of a new
pseudo-terminal with ``tty``; this side relays them as JSON lines, so the
same session works over the local socket and forwarded from another host:

    daemon -> client   {"stdout": B64} {"stderr": B64} ... then {"exit_code": N}
    client -> daemon   {"stdin": B64} {"stdin_eof": true} {"resize": [ROWS, COLS]}

A client that goes away closes the process's stdin (with a terminal: hangs
it up, as ssh does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import struct
import subprocess
import termios

from cantainer import child
from cantainer.kernel.syscalls import open_pty

DRAIN_AFTER_EXIT = 0.5  # seconds to read output a background process may still hold open


async def run(ex, spec: dict, *, interactive: bool, tty: bool, size) -> None:
    argv = child.argv("cantainer.kernel.enter", json.dumps(spec))
    if tty:
        master, slave = _container_pty(spec["pid"])
        _set_size(master, size)
        proc = subprocess.Popen(argv + ["--tty"], stdin=slave, stdout=slave, stderr=slave,
                                env=child.ENV, start_new_session=True)
        os.close(slave)
        stdin_fd, outputs = master, {master: "stdout"}
    else:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=child.ENV, start_new_session=True)
        stdin_fd = proc.stdin.fileno() if interactive else None
        outputs = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}

    def close_stdin() -> None:
        nonlocal stdin_fd
        if stdin_fd is not None and not tty:
            proc.stdin.close()
        stdin_fd = None

    async def feed() -> None:
        while (msg := await ex.receive()) is not None:
            if "stdin" in msg and stdin_fd is not None:
                await asyncio.to_thread(_write_all, stdin_fd, base64.b64decode(msg["stdin"]))
            elif msg.get("stdin_eof"):
                if tty and stdin_fd is not None:
                    await asyncio.to_thread(_write_all, stdin_fd, b"\x04")  # ^D, as typed
                close_stdin()
            elif "resize" in msg and tty:
                _set_size(master, msg["resize"])
        if tty:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 1)  # SIGHUP: the terminal's user is gone
        close_stdin()

    async def pump(fd: int, name: str) -> None:
        while data := await _read(fd):
            await ex.send({name: base64.b64encode(data).decode()})

    feeding = asyncio.create_task(feed())
    pumps = [asyncio.create_task(pump(fd, name)) for fd, name in outputs.items()]
    try:
        code = await asyncio.to_thread(proc.wait)
        code = 128 - code if code < 0 else code  # killed by a signal
        _, late = await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT)
        for task in late:
            task.cancel()
        await ex.send({"exit_code": code})
    finally:
        feeding.cancel()
        for task in pumps:
            task.cancel()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await asyncio.to_thread(proc.wait)
        if tty:
            os.close(master)
        else:  # the Popen's own files, so nothing closes their fds twice
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()


async def _read(fd: int) -> bytes:
    """The next output of ``fd``; b"" at its end (EIO: a terminal's other side closed)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return b""


def _container_pty(pid: int) -> tuple[int, int]:
    """A pseudo-terminal of the container's own devpts, so its name (``tty``) resolves
    inside."""
    return open_pty(f"/proc/{pid}/root/dev/pts/ptmx")


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the process closed its stdin


def _set_size(master: int, size) -> None:
    if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and 0 < n < 65536
                                                         for n in size):
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
