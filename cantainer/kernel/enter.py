"""``cantainer exec``: a new process inside a running container, as nsenter does it.

Run as ``python -m cantainer.kernel.enter SPEC_JSON [--tty]`` by the daemon
(``cantainer/api/exec_session.py``), which relays its stdio.  It joins the
container's cgroup, then its IPC, UTS, network, PID and
mount namespaces (the mount namespace puts it at the container's root),
forks once more so the new process is inside the PID namespace, drops to
the container's capability set and user with ``no_new_privs``, and execs in
its working directory.  With
``--tty`` its stdin is a terminal, which becomes the controlling terminal of
the new session the daemon started it in.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import termios

from cantainer.kernel.cgroups import Cgroup
from cantainer.kernel.process import DEFAULT_CAP_MASK, DEFAULT_PATH, drop_privileges, exit_code

NAMESPACES = ("ipc", "uts", "net", "pid", "mnt")


def run_in(container_id: str, pid: int, command: list[str], env: list[str],
           caps: int = DEFAULT_CAP_MASK, uid: int | None = None,
           gid: int | None = None, workdir: str | None = None) -> int:
    """Run ``command`` in the container whose first process is ``pid``; its exit code."""
    fds = {ns: os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY) for ns in NAMESPACES}
    child = os.fork()
    if child == 0:
        try:
            Cgroup(container_id).add(os.getpid())
            for ns in NAMESPACES:
                os.setns(fds[ns], 0)
            os.chdir(workdir or "/")
            inner = os.fork()  # only children enter the joined PID namespace
            if inner:
                os._exit(exit_code(os.waitpid(inner, 0)[1]))
            drop_privileges(caps, uid, gid)
            variables = dict(e.split("=", 1) for e in env)
            variables.setdefault("PATH", DEFAULT_PATH)
            os.execvpe(command[0], command, variables)
        except FileNotFoundError:
            sys.stderr.write(f"cantainer: {command[0]}: no such file or directory\n")
            os._exit(127)
        except PermissionError as exc:
            sys.stderr.write(f"cantainer: {command[0]}: {exc.strerror}\n")
            os._exit(126)
        except BaseException as exc:
            sys.stderr.write(f"cantainer: cannot enter the container: {exc}\n")
            os._exit(125)
    for fd in fds.values():
        os.close(fd)
    return exit_code(os.waitpid(child, 0)[1])


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(argv[0])
        spec["id"], spec["pid"], spec["command"], spec["env"]
    except (IndexError, ValueError, TypeError, KeyError):
        print("usage: python -m cantainer.kernel.enter SPEC_JSON [--tty] "
              "(SPEC_JSON: id, pid, command, env)", file=sys.stderr)
        return 2
    if "--tty" in argv[1:]:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    return run_in(spec["id"], spec["pid"], spec["command"], spec["env"],
                  spec.get("caps", DEFAULT_CAP_MASK), spec.get("uid"), spec.get("gid"),
                  spec.get("workdir"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
