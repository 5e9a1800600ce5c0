"""Shims and signals: the mechanics under the runtime actor's decisions.

A container runs under its shim (``kernel/shim.py``), a process of its own
session that outlives the daemon.  Python's start-up and the shim's imports
(~90 ms) are kept off a container's start path: a *warm* shim is started ahead
of time and waits, its imports done, for the path of a state directory on its
stdin (end of input, and it exits), then for ``go`` (``kernel/shim.py``).
"""

from __future__ import annotations

import os
import select
import signal as signals
import subprocess
import time

from cantainer import child
from cantainer.kernel.statedir import StateDir

SHIM = tuple(child.argv("cantainer.kernel.shim"))


class WarmShim:
    """One shim started ahead of its container."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def ensure(self) -> None:
        """Have one waiting (after a container started: not beside its start)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([*SHIM, "-"], stdin=subprocess.PIPE,
                                          env=child.ENV, start_new_session=True)

    def start(self, state: StateDir) -> subprocess.Popen:
        """The shim of ``state``'s container, told its directory: the warm one if it is
        alive, else a new one (the slow way).  It makes the cgroup and waits for
        :func:`tell` to say whether the container may start."""
        for _ in range(2):  # the warm one may have died waiting
            self.ensure()
            shim, self._proc = self._proc, None
            try:
                shim.stdin.write(state.path.encode() + b"\n")
                shim.stdin.flush()
                return shim
            except OSError as exc:
                failure = exc
        raise failure

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()  # end of input: it exits
            self._proc.wait()
            self._proc = None


def tell(shim: subprocess.Popen, go: bool) -> None:
    """Tell a shim from :meth:`WarmShim.start` that its container's network is made
    (``go``), or that the container is not to start (end of input alone)."""
    try:
        if go:
            shim.stdin.write(b"go\n")
        shim.stdin.close()
    except OSError:
        pass  # it died: its watcher finds out


def send(pid: int, sig: int) -> None:
    """Signal a container's process; one that has just ended is no error (its shim
    records the end)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill(pid: int) -> None:
    send(pid, signals.SIGKILL)


def alive(pid: int | None) -> bool:
    return pid is not None and os.path.exists(f"/proc/{pid}")


def wait_for_end(pid: int) -> None:
    """Until process ``pid`` has ended (pidfd: no polling, and not our child)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return  # already gone
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)


def wait_for(condition, timeout: float, interval: float = 0.005) -> bool:
    """Poll ``condition()`` (a file the shim writes) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
