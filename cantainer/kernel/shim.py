"""The small process that supervises one container: ``python -m cantainer.kernel.shim STATE_DIR``.

(``STATE_DIR`` may be ``-``: the shim starts ahead of its container, its imports
done, and reads the directory from stdin — see ``kernel/supervise.py``.  Python's
start-up is then off the container's start path.  The daemon hands it the directory
before the container's network is made, and writes ``go`` once it is: the cgroup, and
the first move of a process into one, which waits for an RCU grace period of the
kernel (about 12 ms here), happen meanwhile.  End of input without ``go``: the
container is not started, and its exit code is 125.)

It reads the spec of its state directory (``kernel/statedir.py``), puts the
container's limits in a cgroup, starts the container's first process
(``kernel/process.py``) with its output going through a pipe to ``output.log``
(each piece's time to ``output.times``), and records
its ``pid`` and, when it ends, its ``exit_code`` (128 + signal when killed).

When the spec asks for ``attach``, the shim first listens on
``attach.sock`` for the CLI of ``run -i``/``-t``, which sends the
container's stdin, stdout and stderr as file descriptors (SCM_RIGHTS) and
``{"tty": bool, "size": [rows, cols]}``.  With ``tty`` the container makes a
terminal of its own devpts (``process.py``) and the shim hands its master to
the CLI (one byte, ``T``, with the descriptor; ``N`` without one if the
container ended before); the exit code goes back on that connection.

It forwards SIGTERM and SIGINT to the container and outlives the daemon that
started it (its own session), so a restarted daemon finds the container
running, or finds how it ended, in these files.  A service's replica is the
exception: its shim kills it once the daemon's lease is older than the spec says
(``daemon/lease.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

from cantainer.kernel import process
from cantainer.kernel.cgroups import Cgroup
from cantainer.kernel.statedir import StateDir

COPY_WAIT = 5.0  # seconds for the last output once the container has ended
LEASE_LOOK = 0.25  # seconds between looks at a replica's lease


class NotStarted(Exception):
    """The daemon did not say ``go``: the container's network could not be made."""


def run(path: str, ready=lambda: True) -> int:
    """Start and supervise the container of state directory ``path``; ``ready()``, asked
    once its process waits in its cgroup, says whether it may start."""
    state = StateDir.at(path)
    raw = state.spec()
    spec = process.ProcessSpec(lower=raw["lower"], state_dir=state.path,
                               hostname=raw["hostname"], command=tuple(raw["command"]),
                               env=tuple(raw.get("env", ())), netns=raw.get("netns"),
                               workdir=raw.get("workdir"), uid=raw.get("uid"),
                               gid=raw.get("gid"),
                               caps=raw.get("caps", process.DEFAULT_CAP_MASK),
                               mounts=tuple(tuple(m) for m in raw.get("mounts", ())),
                               tmpfs=tuple(raw.get("tmpfs", ())),
                               read_only=bool(raw.get("read_only")))
    cgroup = Cgroup(raw["id"])
    try:
        cgroup.create(raw.get("memory"), raw.get("pids_limit"), raw.get("cpus"))
    except OSError as exc:  # never a container without the limits it was given
        state.say(f"cantainer: cannot start the container: {exc}")
        state.write_exit_code(125)
        cgroup.remove()
        return 125

    def place(pid: int) -> None:
        cgroup.add(pid)
        if not ready():
            raise NotStarted

    try:
        code, client = _run_container(spec, state, raw, cgroup, place)
    finally:
        cgroup.remove()
    if client is not None:
        try:
            client.sendall(json.dumps({"exit_code": code}).encode() + b"\n")
        except OSError:
            pass  # the CLI went away; the exit code is in the state directory
        client.close()
    return 0


def _run_container(spec, state: StateDir, raw: dict, cgroup: Cgroup, place):
    """Start the container, wait for it, record its exit; (code, attached client)."""
    attached = _attach(state) if raw.get("attach") else None
    console = None
    if attached is not None:
        client, stdio, message = attached
        if message.get("tty"):
            console, theirs = socket.socketpair()
            spec = spec._replace(console=theirs.detach(), size=_size(message.get("size")))
    else:
        client = None
        # Through a pipe, so each piece of output gets its time (logs -t).
        source, sink = os.pipe2(os.O_CLOEXEC)
        stdio = (os.open(os.devnull, os.O_RDONLY), sink, sink)
        copier = threading.Thread(target=state.copy_output, args=(source,), daemon=True)
        copier.start()
    # A service's replica ends with its host's hold on the log.  Its watcher starts
    # now: once start() has unshared a PID namespace, this process makes no thread.
    started: list[int] = []  # the container's pid, once it runs
    if raw.get("lease"):
        threading.Thread(target=_keep_lease, args=(started, state, *raw["lease"]),
                         daemon=True).start()
    try:
        pid = process.start(spec, stdio, before_exec=place)
    except NotStarted:
        pid = None
    finally:
        for fd in {*stdio, *([spec.console] if console is not None else [])}:
            os.close(fd)
    if pid is None:  # the daemon said why, in output.log
        if attached is None:
            copier.join(COPY_WAIT)
        state.write_exit_code(125)
        return 125, client
    if console is not None:
        _hand_over_terminal(console, client)
    state.write_pid(pid)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    started.append(pid)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 255 << 8
            break
        except InterruptedError:
            continue
    code = process.exit_code(status)
    if code != 137 and cgroup.oom_killed():
        code = 137
    if attached is None:  # its namespace's other processes are gone with it: their end
        copier.join(COPY_WAIT)  # of the pipe too; the output is all in before the code
    state.write_exit_code(code)
    return code, client


def _keep_lease(started: list[int], state: StateDir, path: str, hold: float) -> None:
    """Kill the container (its pid in ``started``, once it runs) when its daemon's lease
    (daemon/lease.py) is older than ``hold`` seconds: the daemon is gone, frozen, or cut
    off from the log, and the log may soon run this replica elsewhere."""
    while True:
        time.sleep(LEASE_LOOK)
        if not started:
            continue
        pid = started[0]
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            age = float("inf")
        if age > hold:
            state.say(f"cantainer: killed: its host's lease on the log is {age:.1f} s old "
                      f"(more than {hold:g} s): it may run elsewhere now")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def _size(value) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(n, int) and 0 < n < 65536 for n in value):
        return value[0], value[1]
    return None


def _hand_over_terminal(console: socket.socket, client: socket.socket) -> None:
    """The container's terminal master, from the container to the CLI."""
    with console:
        try:
            _, fds, _, _ = socket.recv_fds(console, 1, 1)
        except OSError:
            fds = []  # the container ended before it had a terminal: it said why
    try:
        socket.send_fds(client, [b"T" if fds else b"N"], fds)
    except OSError:
        pass  # the CLI went away; the container runs on
    for fd in fds:
        os.close(fd)


def _attach(state: StateDir, timeout: float = 30.0):
    """Wait for the CLI's stdio; ``None`` if it never comes (then: no terminal, a log)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        os.chdir(state.path)  # a relative name: the full path may pass AF_UNIX's 108 bytes
        server.bind(StateDir.ATTACH)
    finally:
        os.umask(old)
    server.listen(1)
    server.settimeout(timeout)
    try:
        client, _ = server.accept()
        client.settimeout(timeout)
        message, fds, _, _ = socket.recv_fds(client, 4096, 3)
        client.settimeout(None)
        if len(fds) != 3:
            raise OSError("expected three file descriptors")
        wanted = json.loads(message or b"{}")
        return client, tuple(fds), wanted if isinstance(wanted, dict) else {}
    except (OSError, ValueError):
        return None
    finally:
        server.close()
        os.unlink(state.attach_socket)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m cantainer.kernel.shim STATE_DIR|-", file=sys.stderr)
        return 2
    if sys.argv[1] != "-":
        return run(sys.argv[1])
    # A warm shim: started ahead of its container, it reads the state directory
    # from stdin (nothing: the daemon no longer needs it), logs to
    # STATE_DIR/shim.log, and waits for the daemon's go (_told_go).
    state_dir = sys.stdin.readline().strip()
    if not state_dir:
        return 0
    log = os.open(os.path.join(state_dir, StateDir.SHIM_LOG),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return run(state_dir, ready=_told_go)


def _told_go() -> bool:
    """The daemon's word that the container's network is made: ``go`` on stdin (end of
    input without it: not to start).  Then the shim lets go of the daemon's pipe."""
    word = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return word == "go"


if __name__ == "__main__":
    sys.exit(main())
