"""A container's state directory, ``DATA_DIR/containers/<id>/``: the one owner of its files.

    spec.json     what to start (the runtime actor writes it; the shim reads it)
    pid           the container's first process, as the host sees it (the shim)
    exit_code     how it ended: its code, 128 + signal when killed (the shim, or the
                  runtime actor when it never started: 125)
    output.log    its stdout and stderr (``logs``), unless a CLI attached a terminal
    shim.log      the shim's own output (why a shim failed)
    attach.sock   where the shim waits for ``run -i``/``-t``'s stdio
    upper/ work/ rootfs/   its overlayfs

and, outside it (the directory goes with the container, the mark must come first),
``DATA_DIR/attach/<id>``: the API's mark that the CLI will attach (run -i/-t).

Files are written whole (a temporary file renamed into place), so a reader sees
either nothing or all of one.
"""

from __future__ import annotations

import json
import os
import shutil


class StateDir:
    SPEC, PID, EXIT_CODE, OUTPUT, SHIM_LOG, ATTACH = (
        "spec.json", "pid", "exit_code", "output.log", "shim.log", "attach.sock")

    def __init__(self, data_dir: str, container_id: str) -> None:
        self.id = container_id
        self.path = os.path.join(data_dir, "containers", container_id)
        self._mark = os.path.join(data_dir, "attach", container_id)

    @classmethod
    def at(cls, path: str) -> StateDir:
        """The state directory at ``path`` (``DATA_DIR/containers/<id>``, as the shim
        is given it; its attach mark where that layout puts it)."""
        path = os.path.abspath(path)
        state = cls(os.path.dirname(os.path.dirname(path)), os.path.basename(path))
        state.path = path
        return state

    @staticmethod
    def ids(data_dir: str) -> list[str]:
        """Every container with a state directory on this host."""
        try:
            return sorted(os.listdir(os.path.join(data_dir, "containers")))
        except FileNotFoundError:
            return []

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def output(self) -> str:
        return self.file(self.OUTPUT)

    @property
    def shim_log(self) -> str:
        return self.file(self.SHIM_LOG)

    @property
    def attach_socket(self) -> str:
        return self.file(self.ATTACH)

    # -- the spec ------------------------------------------------------------------------

    def create(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def has_spec(self) -> bool:
        """A start was tried (a spec, maybe empty when the start failed early)."""
        return os.path.exists(self.file(self.SPEC))

    def write_spec(self, spec: dict) -> None:
        _write(self.file(self.SPEC), json.dumps(spec))

    def spec(self) -> dict:
        with open(self.file(self.SPEC)) as f:
            return json.load(f)

    # -- what the shim records --------------------------------------------------------------

    def pid(self) -> int | None:
        return _read_int(self.file(self.PID))

    def exit_code(self) -> int | None:
        return _read_int(self.file(self.EXIT_CODE))

    def write_pid(self, pid: int) -> None:
        _write(self.file(self.PID), str(pid))

    def write_exit_code(self, code: int) -> None:
        _write(self.file(self.EXIT_CODE), str(code))

    def ended(self) -> bool:
        return os.path.exists(self.file(self.EXIT_CODE))

    def say(self, text: str) -> None:
        """A line for ``logs``: why the container did not start."""
        with open(self.output, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def tail_offset(self, lines: int, block: int = 1 << 16) -> int:
        """Where the last ``lines`` lines of the output begin (``logs --tail``); read
        from the end, a block at a time."""
        try:
            with open(self.output, "rb") as f:
                end = pos = f.seek(0, os.SEEK_END)
                if lines <= 0:
                    return end
                seen = 0
                while pos > 0:
                    step = min(block, pos)
                    pos -= step
                    f.seek(pos)
                    data = f.read(step)
                    if pos + step == end and data.endswith(b"\n"):
                        data = data[:-1]  # the last line's own end
                        end -= 1
                    at = len(data)
                    while (at := data.rfind(b"\n", 0, at)) != -1:
                        seen += 1
                        if seen == lines:
                            return pos + at + 1
                return 0
        except FileNotFoundError:
            return 0

    def read_output(self, offset: int, limit: int = 1 << 16) -> bytes:
        try:
            with open(self.output, "rb") as f:
                f.seek(offset)
                return f.read(limit)
        except FileNotFoundError:
            return b""

    # -- the attach mark --------------------------------------------------------------------

    def mark_attach(self) -> None:
        os.makedirs(os.path.dirname(self._mark), mode=0o700, exist_ok=True)
        open(self._mark, "w").close()

    def attach_marked(self) -> bool:
        return os.path.exists(self._mark)

    def unmark_attach(self) -> None:
        try:
            os.unlink(self._mark)
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        self.unmark_attach()
        shutil.rmtree(self.path, ignore_errors=True)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
