"""Memory, pids and CPU limits through cgroups, v2 or v1 (hybrid hosts use v1).

A host is v2 ("unified") when ``/sys/fs/cgroup/cgroup.controllers`` exists;
otherwise each controller has its own v1 hierarchy under ``/sys/fs/cgroup``
(on a hybrid layout ``/sys/fs/cgroup/unified`` holds a v2 tree without
controllers, which we leave alone).  Each container gets ``cantainer/<id>``.
"""

from __future__ import annotations

import os
import time

CGROUP_ROOT = "/sys/fs/cgroup"
CPU_PERIOD_US = 100_000
CONTROLLERS = ("memory", "pids", "cpu")


def is_v2(root: str = CGROUP_ROOT) -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def available(root: str = CGROUP_ROOT) -> frozenset[str]:
    """The controllers of ``CONTROLLERS`` this process can see.  None at all where
    ``/sys`` was mounted anew without its cgroup filesystems (``ip netns exec`` does so)."""
    if is_v2(root):
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                return frozenset(f.read().split()) & frozenset(CONTROLLERS)
        except OSError:
            return frozenset()
    return frozenset(c for c in CONTROLLERS if os.path.isdir(os.path.join(root, c)))


LIMITS = (("--memory", "memory"), ("--pids-limit", "pids"), ("--cpus", "cpu"))


def unenforceable(memory: int | None, pids: int | None, cpus: float | None,
                  root: str = CGROUP_ROOT) -> list[str]:
    """The flags of the limits asked for that no visible controller could enforce."""
    have = available(root)
    return [flag for (flag, controller), value in zip(LIMITS, (memory, pids, cpus),
                                                      strict=True)
            if value is not None and controller not in have]


def unenforceable_error(flags: list[str], root: str = CGROUP_ROOT) -> str:
    return (f"{', '.join(flags)} cannot be enforced on this host: no cgroup controller for "
            f"{'it' if len(flags) == 1 else 'them'} under {root} (cantainerd must see the "
            "host's cgroup filesystem; 'ip netns exec' hides it)")


class Cgroup:
    def __init__(self, container_id: str, root: str = CGROUP_ROOT) -> None:
        self.root = root
        self.v2 = is_v2(root)
        name = os.path.join("cantainer", container_id)
        if self.v2:
            self.dirs = {c: os.path.join(root, name) for c in CONTROLLERS}
        else:
            self.dirs = {c: os.path.join(root, c, name) for c in CONTROLLERS
                         if os.path.isdir(os.path.join(root, c))}

    def create(self, memory: int | None, pids: int | None, cpus: float | None) -> None:
        """The container's cgroup with its limits; ``OSError`` if a limit asked for cannot
        be enforced (never a container that runs without it)."""
        if missing := unenforceable(memory, pids, cpus, self.root):
            raise OSError(unenforceable_error(missing, self.root))
        if self.v2:
            parent = os.path.dirname(self.dirs["memory"])
            os.makedirs(parent, exist_ok=True)
            _write(os.path.join(os.path.dirname(parent), "cgroup.subtree_control"),
                   "+memory +pids +cpu", quiet=True)
            _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids +cpu",
                   quiet=True)
        for path in set(self.dirs.values()):
            os.makedirs(path, exist_ok=True)
        if memory is not None:
            if self.v2:
                self._set("memory", "memory.max", memory)
                self._set("memory", "memory.swap.max", 0, quiet=True)
            else:
                self._set("memory", "memory.limit_in_bytes", memory)
                self._set("memory", "memory.memsw.limit_in_bytes", memory, quiet=True)
        if pids is not None:
            self._set("pids", "pids.max", pids)
        if cpus is not None:
            quota = max(1000, int(cpus * CPU_PERIOD_US))
            if self.v2:
                self._set("cpu", "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                self._set("cpu", "cpu.cfs_period_us", CPU_PERIOD_US)
                self._set("cpu", "cpu.cfs_quota_us", quota)

    def _set(self, controller: str, name: str, value, quiet: bool = False) -> None:
        if controller in self.dirs:
            _write(os.path.join(self.dirs[controller], name), str(value), quiet=quiet)

    def add(self, pid: int) -> None:
        for path in set(self.dirs.values()):
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def oom_killed(self) -> bool:
        """Did the kernel kill a process here for want of memory?"""
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            with open(os.path.join(self.dirs["memory"], name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        except (OSError, KeyError, ValueError):
            pass
        return False

    def remove(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for path in set(self.dirs.values()):
            while os.path.isdir(path):
                try:
                    os.rmdir(path)
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)  # the last process is still being reaped
            try:
                os.rmdir(os.path.dirname(path))  # "cantainer/", once no container is left
            except OSError:
                pass


def _write(path: str, value: str, quiet: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        if not quiet:
            raise
