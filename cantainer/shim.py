"""The small process that supervises one container: ``python -m cantainer.shim STATE_DIR``.

It reads ``STATE_DIR/spec.json``, puts the container's limits in a cgroup,
starts the container's first process (``cantainer/kernel/process.py``) with
its output going to ``STATE_DIR/output.log``, and writes

    STATE_DIR/pid         the container's first process, as the host sees it
    STATE_DIR/exit_code   when it ends: its code, 128 + signal when killed

It forwards SIGTERM and SIGINT to the container and outlives the daemon that
started it (its own session), so a restarted daemon finds the container
running, or finds how it ended, in these files.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from cantainer.kernel import process
from cantainer.kernel.cgroups import Cgroup


def _write_atomically(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run(state_dir: str) -> int:
    with open(os.path.join(state_dir, "spec.json")) as f:
        raw = json.load(f)
    spec = process.ProcessSpec(lower=raw["lower"], state_dir=state_dir,
                               hostname=raw["hostname"], command=tuple(raw["command"]),
                               env=tuple(raw.get("env", ())), netns=raw.get("netns"))
    cgroup = Cgroup(raw["id"])
    cgroup.create(raw.get("memory"), raw.get("pids_limit"), raw.get("cpus"))
    log = os.open(os.path.join(state_dir, "output.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = process.start(spec, (devnull, log, log), before_exec=cgroup.add)
    finally:
        os.close(log)
        os.close(devnull)
    _write_atomically(os.path.join(state_dir, "pid"), str(pid))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
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
    _write_atomically(os.path.join(state_dir, "exit_code"), str(code))
    cgroup.remove()
    return 0


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m cantainer.shim STATE_DIR", file=sys.stderr)
        return 2
    return run(sys.argv[1])


if __name__ == "__main__":
    sys.exit(main())
