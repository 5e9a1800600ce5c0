"""Containers, from any host.

    {"op": "run", "image": I, "command": [...]?, "network": N?, "name": N?, "env": [...],
     "hostname": H?, "memory": B?, "pids_limit": N?, "cpus": X?, "workdir": W?,
     "user": "UID[:GID]"?, "entrypoint": [...]?, "cap_add": [...], "cap_drop": [...],
     "volumes": ["SOURCE:TARGET[:ro]", ...], "tmpfs": [PATH, ...], "read_only": bool,
     "ports": ["[IP:]HOSTPORT:PORT[/tcp|/udp]", ...], "restart": POLICY?, "init": bool,
     "attach": bool, "follow": bool, "remove": bool, "id": ID?}
        -> {"container": {...}} (with "attach": SOCKET for run -i/-t); with "follow":
           then {"data": "..."} per chunk of output and {"exit_code": N}, after
           removing it too with "remove" (a foreground run --rm, in one exchange)
    {"op": "ps", "all": bool}                -> {"containers": [...]}
    {"op": "inspect", "ref": R}              -> {"container": {...}}
    {"op": "logs", "ref": R, "follow": bool, "tail": N?, "timestamps": bool}
                                             -> {"data": "..."} per chunk, then {"end": true}
    {"op": "exec", "ref": R, "command": [...], "interactive": bool, "tty": bool,
     "size": [ROWS, COLS]?}                  -> a session: see exec_session.py
    {"op": "stop", "ref": R, "timeout": S}   -> {"stopped": NAME}   (ContainerStopRequested)
    {"op": "start", "ref": R}                -> {"started": NAME}   (ContainerStartRequested)
    {"op": "restart", "ref": R, "timeout": S} -> {"restarted": NAME} (a stop, then a start)
    {"op": "rm", "ref": R, "force": bool}    -> {"removed": NAME}   (ContainerRemoved)
    {"op": "wait", "ref": R}                 -> {"exit_code": N}, once it has exited
    {"op": "kill", "ref": R, "signal": S}    -> {"killed": NAME}    (on its host, at once)

A container runs on the host where ``run`` was typed.  ``stop`` and ``rm`` go
through the log (the owner acts on them); ``logs``, ``exec`` and ``kill`` of a
container of another host are forwarded to its owner's peer port
(``forward.py``); ``wait`` reads the log, on any host.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from cantainer.api import exec_session, fields as f, forward
from cantainer.api.images import known
from cantainer.errors import Conflict, Invalid, InvalidEvent, NotFound, Unavailable
from cantainer.events import from_data, new_event_id
from cantainer.events.validate import parse_port, parse_restart, parse_user, parse_volume
from cantainer.kernel import cgroups, process, rtnl
from cantainer.kernel.statedir import StateDir
from cantainer.projections.ipam import DEFAULT_NETWORK, Container
from cantainer.projections.runtime import report_id
from cantainer.projections.view import container_detail, container_json

STOP_GRACE = 15.0  # seconds after a stop's timeout for SIGKILL to be reported
START_TIMEOUT = 60.0  # seconds for a container's process to start
OUTPUT_POLL = 0.01  # seconds between looks at a followed container's output


# -- finding a container ---------------------------------------------------------------

async def container(h, ref: str) -> Container:
    """A container by full id, name, or unique id prefix, as the log's head knows it."""
    await h.wait_applied()
    found = h.state.ipam.matching(ref)
    if not found:
        raise NotFound(f"no container {ref!r}")
    if len(found) > 1:
        raise Invalid(f"{ref!r} matches {len(found)} containers; give more of the id")
    return found[0]


async def owned(h, req: dict, ex, action: str) -> Container | None:
    """The container, if this host runs it; else the request is forwarded to the
    daemon that does, its answer relayed, and None returned."""
    c = await container(h, req["ref"])
    if c.host == h.node:
        return c
    if req["peer"]:  # forwarded here by a daemon with an older view of the log
        raise Conflict(f"container {c.name} is not on host {h.node}")
    address = h.peer(c.host)
    if address is None:
        raise Unavailable(f"cannot {action} container {c.name}: its host {c.host} has "
                          "left the cluster")
    forwarded = {k: v for k, v in req.items() if k not in ("peer", "fingerprint")} | \
        {"ref": c.id}
    owner = h.state.members.live()[c.host]
    await forward.relay(address, owner.fingerprint, forwarded, ex,
                        f"cannot {action} container {c.name}: its host {c.host}", h.peer_tls,
                        h.gate)
    return None


def _live(h, cid: str) -> Container | None:
    return h.state.ipam.containers.get(cid)


# -- run ---------------------------------------------------------------------------------

async def run(h, req: dict, ex) -> None:
    await known(h, req["image"])  # built here, or fetched from a host that holds it
    network = req["network"] or DEFAULT_NETWORK
    if "/" not in network and network not in h.state.ipam.networks:
        await h.wait_applied()  # it may be newer than this host's state
        if network == DEFAULT_NETWORK and h.state.ipam.default_cidr is None:
            raise NotFound("this cluster has no default network (it was created before "
                           "there was one): give the container one, -n CIDR|NAME")
        if network not in h.state.ipam.networks and network != DEFAULT_NETWORK:
            raise NotFound(f"no network named {network!r}")
    check_runnable(req)
    cap_add, cap_drop = ([c.upper().removeprefix("CAP_") for c in req[k]]
                         for k in ("cap_add", "cap_drop"))
    try:
        process.cap_mask(cap_add, cap_drop)
    except ValueError as exc:
        raise Invalid(f"{exc} (e.g. NET_ADMIN, SYS_TIME, ALL)") from None
    for spec in req["volumes"]:  # a host path must be there: Docker would make it
        try:
            source = parse_volume(spec)[0]
        except InvalidEvent as exc:
            raise Invalid(f"-v {exc}") from None
        if source.startswith("/") and not os.path.exists(source):
            raise Invalid(f"-v {spec}: {source} does not exist on this host")
    _check_ports(h, req["ports"])
    if req["remove"] and req["restart"] not in (None, "no"):
        raise Invalid("--restart and --rm conflict: a removed container cannot restart")
    cid = os.urandom(32).hex()
    fields = {"container": cid, "name": req["name"] or f"ct-{cid[:8]}", "host": h.node,
              "network": network, "image": req["image"], **await process_of(h, req),
              "hostname": req["hostname"], "memory": req["memory"],
              "pids_limit": req["pids_limit"], "cpus": req["cpus"],
              "cap_add": cap_add, "cap_drop": cap_drop, "volumes": req["volumes"],
              "tmpfs": req["tmpfs"], "read_only": req["read_only"], "ports": req["ports"],
              "restart": req["restart"], "init": req["init"]}
    event = from_data("ContainerCreated", {k: v for k, v in fields.items() if v is not None})
    state = StateDir(h.data_dir, cid)
    if req["attach"]:  # run -i/-t: the runtime actor's shim will wait for the CLI
        state.mark_attach()
    followed = req["follow"] and not req["attach"]  # this call records the run's end
    if followed:
        h.follow(cid, True)
    try:
        await _run(h, req, ex, cid, event, state)
    finally:
        if followed:
            h.follow(cid, False)


def check_runnable(req: dict) -> None:
    """What ``run`` and ``service create`` both refuse: limits no cgroup controller here
    can enforce (Docker would warn and drop them), ``--init`` unbuilt, a restart policy
    that is none."""
    if missing := cgroups.unenforceable(req["memory"], req["pids_limit"], req["cpus"]):
        raise Invalid(cgroups.unenforceable_error(missing))
    if req["init"] and not os.access(process.INIT_BINARY, os.X_OK):
        raise Unavailable(f"--init: {process.INIT_BINARY} is not built: run scripts/setup")
    if req["restart"] is not None:
        try:
            parse_restart(req["restart"])
        except InvalidEvent as exc:
            raise Invalid(f"--restart {exc}") from None


async def process_of(h, req: dict) -> dict:
    """What runs, Docker's way: a request's ``entrypoint``, ``command``, ``env``,
    ``workdir`` and ``user`` over the image's config (a loaded image's; other images
    have none), a named user as the image's numbers.  ``run`` and ``service create``
    record it in their events: every host runs the same."""
    image = await asyncio.to_thread(h.images.config, req["image"])
    entrypoint, command = _process(req, image)
    user = req["user"]
    if user is None and image.get("user"):
        user = await asyncio.to_thread(h.images.numeric_user, req["image"], image["user"])
    return {"entrypoint": entrypoint, "command": command,
            "env": _env(image.get("env") or [], req["env"]),
            "workdir": req["workdir"] or image.get("workdir"), "user": user}


def _process(req: dict, image: dict) -> tuple[list[str] | None, list[str]]:
    """(entrypoint, command), Docker's way: the image's ENTRYPOINT and CMD unless given;
    ``--entrypoint`` drops the image's CMD too; nothing at all runs /bin/sh."""
    if req["entrypoint"] is not None:
        return req["entrypoint"], req["command"] or []
    entrypoint = image.get("entrypoint") or None
    if req["command"] is not None:
        return entrypoint, req["command"]
    return entrypoint, image.get("cmd") or ([] if entrypoint else ["/bin/sh"])


def _env(image: list[str], given: list[str]) -> list[str]:
    """The image's environment with ``-e`` over it, key by key."""
    keys = {e.split("=", 1)[0] for e in given}
    return [e for e in image if e.split("=", 1)[0] not in keys] + list(given)


async def _run(h, req: dict, ex, cid: str, event, state: StateDir) -> None:
    try:
        await h.append([event], [req["id"] or new_event_id()])
    except BaseException:
        state.unmark_attach()
        raise
    name = event.name
    if req["attach"]:
        await _poll(lambda: os.path.exists(state.attach_socket) or _state(h, cid) != "created",
                    START_TIMEOUT, f"container {name} to start")
        c = _live(h, cid)
        await ex.send({"container": container_json(c), "attach": state.attach_socket})
        return
    def started() -> bool:
        """run -d: running in the log, as ps and inspect on every host will show it; a
        foreground run: as its shim says (the pid on disk), the log follows."""
        if _state(h, cid) != "created":
            return True
        return req["follow"] and (state.pid() is not None or state.ended())

    await h.until(started, START_TIMEOUT, f"container {name} to start")
    c = _live(h, cid)
    await ex.send({"container": container_json(c)})
    if req["follow"]:  # a foreground run: its output, its end, in one exchange
        await stream_output(c, state, ex, follow=True, pause=h.changed)
        await ex.send({"exit_code": await _record_end(h, cid, state, req["remove"])})


async def _record_end(h, cid: str, state: StateDir, remove_it: bool) -> int | None:
    """A foreground run's end as its shim recorded it, appended in one batch with the
    runtime's own ids (whichever comes first is the one appended): its start, its exit,
    and with ``--rm`` its removal.  Its exit code."""
    c = _live(h, cid)
    if c is None or c.run != 0 or state.run() != 0 or (code := state.exit_code()) is None:
        # removed meanwhile, or started again (its restart policy): as the log says
        # (the runtime records it: FOLLOWED_END)
        await h.until(lambda: _state(h, cid) in ("exited", None), float("inf"),
                      f"container {cid[:12]} to end")
        c = _live(h, cid)
        if remove_it and c is not None:
            await remove(h, c)
        return c.exit_code if c else None
    events, ids = [], []
    if c.state == "created" and (pid := state.pid()) is not None:
        events.append(from_data("ContainerStarted", {"container": cid, "pid": pid}))
        ids.append(report_id("ContainerStarted", cid, 0))
    if c.state != "exited":
        events.append(from_data("ContainerExited", {"container": cid, "exit_code": code}))
        ids.append(report_id("ContainerExited", cid, 0))
    if remove_it:
        events.append(_removal(cid))
        ids.append(_removal_id(cid))
    if events:
        await h.append(events, ids)
    return code


def _check_ports(h, specs: list[str]) -> None:
    """Well formed, at an address of this host, and free here as far as this host's
    state knows (log order has the last word)."""
    mine = None
    for spec in specs:
        try:
            ip, port, _, proto = parse_port(spec)
        except InvalidEvent as exc:
            raise Invalid(f"-p {exc}") from None
        if ip is not None:
            if mine is None:
                mine = {a.split("/")[0] for found in rtnl.addresses().values() for a in found}
            if ip not in mine:
                raise Invalid(f"-p {spec}: {ip} is not an address of this host ({h.node})")
        holder = h.state.ipam.published.get((h.node, port, proto))
        if holder is not None:
            raise Conflict(f"-p {spec}: port {port}/{proto} is already published on "
                           f"{h.node} by container "
                           f"{h.state.ipam.containers[holder].name!r}")


def _state(h, cid: str) -> str | None:
    c = _live(h, cid)
    return None if c is None else c.state


async def _poll(done, timeout: float, what: str) -> None:
    """For conditions on files the shim writes: they change without the log."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable(f"waited {timeout:g}s for {what}")
        await asyncio.sleep(0.005)


# -- looking -----------------------------------------------------------------------------

async def ps(h, req: dict, ex) -> None:
    await h.wait_applied()
    found = [container_json(c) for c in h.state.ipam.containers.values()
             if req["all"] or c.state != "exited"]
    await ex.send({"containers": found})


async def inspect(h, req: dict, ex) -> None:
    await ex.send({"container": container_detail(await container(h, req["ref"]))})


async def logs(h, req: dict, ex) -> None:
    c = await owned(h, req, ex, "read the logs of")
    if c is None:
        return
    state = StateDir(h.data_dir, c.id)
    offset = 0 if req["tail"] is None else await asyncio.to_thread(state.tail_offset,
                                                                   req["tail"])
    await stream_output(c, state, ex, follow=req["follow"], offset=offset,
                        timestamps=req["timestamps"])
    await ex.send({"end": True})


async def stream_output(c: Container, state: StateDir, ex, follow: bool,
                        offset: int = 0, timestamps: bool = False,
                        pause=asyncio.sleep) -> None:
    """Send the container's output from ``offset`` as {"data"} lines; with ``follow``,
    until it ends (looking again after ``pause(OUTPUT_POLL)``: a handle's ``changed``
    ends it early when its end is reported); with ``timestamps``, each line after the
    time it came (logs -t)."""
    stamp = _Stamper(state.output_times(), offset) if timestamps else None
    while True:
        chunk = await asyncio.to_thread(state.read_output, offset)
        if chunk:
            text = stamp(chunk) if stamp else chunk
            offset += len(chunk)
            await ex.send({"data": text.decode(errors="replace")})
            continue
        if not follow:
            return
        if state.ended():
            if not await asyncio.to_thread(state.read_output, offset):
                return
            continue
        await pause(OUTPUT_POLL)


class _Stamper:
    """Output with Docker's ``logs -t`` prefix before each line: the RFC 3339 time, in
    UTC to the nanosecond, at which its first byte came."""

    def __init__(self, times, offset: int) -> None:
        self.times, self.offset, self.line_start = times, offset, True

    def __call__(self, chunk: bytes) -> bytes:
        out = bytearray()
        at = 0
        while at < len(chunk):
            if self.line_start:
                out += self._prefix(self.offset + at)
            end = chunk.find(b"\n", at)
            end = len(chunk) if end == -1 else end + 1
            out += chunk[at:end]
            self.line_start = chunk[end - 1:end] == b"\n"
            at = end
        self.offset += len(chunk)
        return bytes(out)

    def _prefix(self, offset: int) -> bytes:
        ns = self.times.at(offset)
        if ns is None:
            return b"-" + b" "
        seconds, rest = divmod(ns, 1_000_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + \
            b".%09dZ " % rest


async def exec_(h, req: dict, ex) -> None:
    c = await owned(h, req, ex, "exec in")
    if c is None:
        return
    pid = _running_pid(h, c)
    created = c.created
    uid, gid = parse_user(created.user)
    try:  # a submitted event may name a capability this build does not know
        caps = process.cap_mask(created.cap_add, created.cap_drop)
    except ValueError as exc:
        raise Conflict(f"container {c.name}: {exc}") from None
    spec = {"id": c.id, "pid": pid, "command": req["command"], "env": list(created.env),
            "caps": caps, "uid": uid, "gid": gid, "workdir": created.workdir}
    await exec_session.run(ex, spec, interactive=req["interactive"], tty=req["tty"],
                           size=req["size"])


# -- stopping and removing, through the log ---------------------------------------------

async def stop(h, req: dict, ex) -> None:
    c = await container(h, req["ref"])
    event = from_data("ContainerStopRequested", {"container": c.id,
                                                 "timeout": req["timeout"]})
    await _stop(h, c, event, req["id"])
    await ex.send({"stopped": c.name})


async def _stop(h, c: Container, event, event_id: str | None) -> None:
    # An exited one with a restart policy is stopped too: no restart then.
    if c.state != "exited" or (c.created.restart != "no" and c.stop_timeout is None):
        await h.append([event], [event_id or new_event_id()])
        await h.until(lambda: _state(h, c.id) in ("exited", None),
                      event.timeout + STOP_GRACE, f"container {c.name} to stop")


async def start(h, req: dict, ex) -> None:
    """An exited container runs again, on its host, in the same root (docker start); one
    that runs or is starting already is left as it is."""
    c = await container(h, req["ref"])
    await _start(h, c, req["id"])
    await ex.send({"started": c.name})


async def _start(h, c: Container, event_id: str | None) -> None:
    run = c.run
    if c.state == "exited":
        if c.host not in h.state.members.live():
            raise Unavailable(f"cannot start container {c.name}: its host {c.host} has "
                              "left the cluster")
        event = from_data("ContainerStartRequested", {"container": c.id})
        await h.append([event], [event_id or new_event_id()])
        run += 1
    await h.until(lambda: (x := _live(h, c.id)) is None or x.run > run or
                  (x.run == run and x.state != "created"), START_TIMEOUT,
                  f"container {c.name} to start")


async def restart(h, req: dict, ex) -> None:
    c = await container(h, req["ref"])
    if c.state != "exited":
        stop = from_data("ContainerStopRequested", {"container": c.id,
                                                    "timeout": req["timeout"]})
        await _stop(h, c, stop, None)
    await _start(h, _live(h, c.id) or c, req["id"])
    await ex.send({"restarted": c.name})


async def rm(h, req: dict, ex) -> None:
    c = await container(h, req["ref"])
    if c.state == "running" and not req["force"]:
        raise Conflict(f"container {c.name} is running: stop it first, or rm -f")
    await remove(h, c)
    await ex.send({"removed": c.name})


async def remove(h, c: Container) -> None:
    await h.append([_removal(c.id)], [_removal_id(c.id)])


def _removal(cid: str):
    return from_data("ContainerRemoved", {"container": cid})


def _removal_id(cid: str) -> str:
    """One removal of a container, whoever asks for it (rm, a foreground run --rm)."""
    return f"ContainerRemoved-{cid}"


async def wait(h, req: dict, ex) -> None:
    """Until the container has exited (its ContainerExited applied here): its code."""
    c = await container(h, req["ref"])
    await h.until(lambda: _state(h, c.id) in ("exited", None), float("inf"),
                  f"container {c.name} to exit")
    ended = _live(h, c.id)
    if ended is None:
        raise NotFound(f"container {c.name} was removed before it exited")
    await ex.send({"exit_code": ended.exit_code})


async def kill(h, req: dict, ex) -> None:
    """A signal to the container's first process, on its host, at once (Docker's
    ``kill``: not through the log; what follows, an exit, is recorded as ever)."""
    c = await owned(h, req, ex, "kill")
    if c is None:
        return
    try:
        os.kill(_running_pid(h, c), req["signal"])
    except ProcessLookupError:
        raise Conflict(f"container {c.name} is not running") from None
    await ex.send({"killed": c.name})


def _running_pid(h, c: Container) -> int:
    """The host pid of this host's container's first process, if it still runs."""
    state = StateDir(h.data_dir, c.id)
    pid = state.pid()
    if pid is None or state.ended():
        raise Conflict(f"container {c.name} is not running")
    return pid


def _signal(name: str, value) -> int:
    """SIGKILL, KILL, kill or 9."""
    text = str(value).upper() if isinstance(value, (str, int)) else ""
    try:
        return int(signal.Signals(int(text)) if text.isdigit() else
                   signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except (KeyError, ValueError):
        raise Invalid(f"{value!r} is not a signal (e.g. KILL, TERM, HUP, 9)") from None


def _timeout(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"field 'timeout': {value!r} must be an integer")
    return value


OPS = {
    "run": (run, {"image": (f.text, "busybox"), "command": (f.command, None),
                  "network": (f.text, None), "name": (f.text, None), "env": (f.texts, []),
                  "hostname": (f.text, None), "memory": (f.count, None),
                  "pids_limit": (f.count, None), "cpus": (f.number, None),
                  "workdir": (f.text, None), "user": (f.text, None),
                  "entrypoint": (f.command, None), "cap_add": (f.texts, []),
                  "cap_drop": (f.texts, []), "volumes": (f.texts, []),
                  "tmpfs": (f.texts, []), "read_only": (f.flag, False),
                  "ports": (f.texts, []), "restart": (f.text, None), "init": (f.flag, False),
                  "attach": (f.flag, False), "follow": (f.flag, False),
                  "remove": (f.flag, False), "id": (f.text, None)}),
    "ps": (ps, {"all": (f.flag, False)}),
    "inspect": (inspect, {"ref": (f.text, f.REQUIRED)}),
    "logs": (logs, {"ref": (f.text, f.REQUIRED), "follow": (f.flag, False),
                    "tail": (f.count, None), "timestamps": (f.flag, False)}, "member"),
    "exec": (exec_, {"ref": (f.text, f.REQUIRED), "command": (f.command, f.REQUIRED),
                     "interactive": (f.flag, False), "tty": (f.flag, False),
                     "size": (f.size, None)}, "member"),
    "stop": (stop, {"ref": (f.text, f.REQUIRED), "timeout": (_timeout, 10),
                    "id": (f.text, None)}),
    "start": (start, {"ref": (f.text, f.REQUIRED), "id": (f.text, None)}),
    "restart": (restart, {"ref": (f.text, f.REQUIRED), "timeout": (_timeout, 10),
                          "id": (f.text, None)}),
    "rm": (rm, {"ref": (f.text, f.REQUIRED), "force": (f.flag, False)}),
    "wait": (wait, {"ref": (f.text, f.REQUIRED)}),
    "kill": (kill, {"ref": (f.text, f.REQUIRED), "signal": (_signal, int(signal.SIGKILL))}, "member"),
}
