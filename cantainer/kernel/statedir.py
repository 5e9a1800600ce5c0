"""A container's state directory, ``DATA_DIR/containers/<id>/``: the one owner of its files.

    spec.json     what to start (the runtime actor writes it; the shim reads it)
    run           which run of the container the files below are of (0 when absent):
                  a start after an exit (ContainerStartRequested) begins the next
    pid           the container's first process, as the host sees it (the shim)
    exit_code     how it ended: its code, 128 + signal when killed (the shim, or the
                  runtime actor when it never started: 125)
    output.log    its stdout and stderr (``logs``), unless a CLI attached a terminal
    output.times  when each piece of output.log came: (offset, Unix time in ns) records,
                  16 bytes each (``logs -t``)
    shim.log      the shim's own output (why a shim failed)
    attach.sock   where the shim waits for ``run -i``/``-t``'s stdio
    resolv.conf   bound onto the container's /etc/resolv.conf: its name server is this
                  host's, on the network's .1 (daemon/dns.py)
    hosts         bound onto its /etc/hosts: localhost and its own name
    upper/ work/ rootfs/   its overlayfs

and, outside it (the directory goes with the container, the mark must come first),
``DATA_DIR/attach/<id>``: the API's mark that the CLI will attach (run -i/-t).

Files are written whole (a temporary file renamed into place), so a reader sees
either nothing or all of one.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import struct
import time

TIME_RECORD = struct.Struct("=QQ")  # output.times: offset in output.log, Unix time in ns


class StateDir:
    SPEC, PID, EXIT_CODE, OUTPUT, SHIM_LOG, ATTACH, RESOLV_CONF, HOSTS, RUN = (
        "spec.json", "pid", "exit_code", "output.log", "shim.log", "attach.sock",
        "resolv.conf", "hosts", "run")
    OUTPUT_TIMES = "output.times"

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
        data = (text if text.endswith("\n") else text + "\n").encode()
        out, times = self._open_output()
        try:
            self._append_output(out, times, data)
        finally:
            os.close(out)
            os.close(times)

    def copy_output(self, source: int) -> None:
        """The shim's: the container's output from pipe ``source`` into output.log, and
        when each piece came into output.times, until every writer has closed it."""
        out, times = self._open_output()
        try:
            while data := os.read(source, 1 << 16):
                self._append_output(out, times, data)
        finally:
            for fd in (out, times, source):
                os.close(fd)

    def _open_output(self) -> tuple[int, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return (os.open(self.output, flags, 0o600),
                os.open(self.file(self.OUTPUT_TIMES), flags, 0o600))

    @staticmethod
    def _append_output(out: int, times: int, data: bytes) -> None:
        os.write(times, TIME_RECORD.pack(os.fstat(out).st_size, time.time_ns()))
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]

    def output_times(self) -> OutputTimes:
        return OutputTimes(self.file(self.OUTPUT_TIMES))

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

    def run(self) -> int:
        return _read_int(self.file(self.RUN)) or 0

    def next_run(self, run: int) -> None:
        """Begin run ``run``: the last one's pid, exit code and spec go; its output and
        its root's changes stay (Docker's restart)."""
        _write(self.file(self.RUN), str(run))
        for name in (self.PID, self.EXIT_CODE, self.SPEC):
            try:
                os.unlink(self.file(name))
            except FileNotFoundError:
                pass

    def times(self) -> tuple[float, float] | None:
        """When the last run started and ended (its pid and exit code files), if both."""
        try:
            return (os.stat(self.file(self.PID)).st_mtime,
                    os.stat(self.file(self.EXIT_CODE)).st_mtime)
        except OSError:
            return None

    def write_resolv_conf(self, nameserver: str) -> str:
        """Docker's embedded resolver's form: one name server, names tried as given."""
        path = self.file(self.RESOLV_CONF)
        _write(path, f"nameserver {nameserver}\noptions ndots:0\n")
        return path

    def write_hosts(self, hostname: str, ip: str) -> str:
        path = self.file(self.HOSTS)
        _write(path, f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                     f"{ip}\t{hostname}\n")
        return path

    def unmark_attach(self) -> None:
        try:
            os.unlink(self._mark)
        except FileNotFoundError:
            pass

    def remove(self) -> None:
        self.unmark_attach()
        shutil.rmtree(self.path, ignore_errors=True)


class OutputTimes:
    """When the output at an offset came: the time of the piece that holds it, read
    from output.times as far as it has grown."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._offsets: list[int] = []
        self._times: list[int] = []
        self._read = 0  # bytes of the file taken in

    def at(self, offset: int) -> int | None:
        """Unix time in ns, or None if nothing was recorded (output from before there
        were times)."""
        if not self._offsets or offset >= self._offsets[-1]:
            self._take_in()
        i = bisect.bisect_right(self._offsets, offset) - 1
        return self._times[max(i, 0)] if self._times else None

    def _take_in(self) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return
        whole = len(data) - len(data) % TIME_RECORD.size
        for offset, when in TIME_RECORD.iter_unpack(data[:whole]):
            self._offsets.append(offset)
            self._times.append(when)
        self._read += whole


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
