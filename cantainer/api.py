"""The daemon's local API: JSON Lines over a unix socket (mode 0600).

A client sends one request line and reads response lines until the daemon
closes the connection.  Every response line is a JSON object; a failure is
``{"error": "one line for the user"}`` and ends the exchange.

    {"op": "submit", "events": [{"type": T, "data": {...}, "id": ID?}, ...]}
        -> {"seqs": [N, ...]}            one atomic batch, in order
    {"op": "events", "since": N, "follow": bool, "types": [T, ...]}
        -> {"event": {...}} per event, then {"end": true} unless following
    {"op": "status"}
        -> {"status": {...}}
    {"op": "nodes"}                          -> {"nodes": [...]}
    {"op": "network_create", "cidr": C, "name": N?} -> {"network": {...}}
    {"op": "network_ls"}                     -> {"networks": [...]}
    {"op": "network_rm", "name": N}          -> {"removed": N}
    {"op": "check"}                          -> {"applied": N, "differences": ["...", ...]}
    {"op": "image_ls"}                       -> {"images": [...]}
    {"op": "image_import", "ref": R, "path": P} -> {"image": {...}}
    {"op": "image_pull", "ref": R, "mirror": URL?} -> {"image": {...}}
    {"op": "image_rm", "ref": R}             -> {"removed": "name:tag"}
    {"op": "run", "image": I, "command": [...], "network": N, ...} -> {"container": {...}}
        with "follow": then {"data": "..."} per chunk of output and {"exit_code": N},
        after removing it too with "remove" (a foreground run --rm, in one exchange)
    {"op": "ps", "all": bool}                -> {"containers": [...]}
    {"op": "inspect", "ref": R}              -> {"container": {...}}
    {"op": "logs", "ref": R, "follow": bool} -> {"data": "..."} per chunk, then {"end": true}
    {"op": "exec", "ref": R, "command": [...], "interactive": bool, "tty": bool,
     "size": [ROWS, COLS]?}                  -> a session: see exec_session.py
    {"op": "stop", "ref": R, "timeout": S}   -> {"stopped": NAME}   (ContainerStopRequested)
    {"op": "rm", "ref": R, "force": bool}    -> {"removed": NAME}   (ContainerRemoved)
    {"op": "leave"}                          -> {"left": NAME, "seq": N}, then the daemon stops
    {"op": "node_rm", "name": N, "force": bool} -> {"removed": N}

``logs`` and ``exec`` of a container of another host are forwarded to that
host's peer API (TCP, dqlite port + 2) and its answer relayed as it comes.

Appends wait until this host's IPAM actor has applied them and report its
verdict: an event that log order rejects (a duplicate name, an overlapping
subnet, a full network) fails with the reason, although it stays in the log
as a no-op.

The client side lives in ``cli.py`` so that the CLI imports nothing heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING

from cantainer.actors.ipam import implicit_name
from cantainer.actors.runtime import attach_marker
from cantainer.errors import CantainerError, InvalidEvent, LogUnavailable, Rejected
from cantainer.events import Recorded, UnknownEvent, from_data, new_event_id, parse_cidr
from cantainer.exec_session import exec_session
from cantainer.kernel.images import pull_alpine

if TYPE_CHECKING:
    from cantainer.daemon import Daemon

log = logging.getLogger(__name__)

MAX_REQUEST = 16 << 20  # bytes in one request line (a batch of events)
MAX_BATCH = 1000  # events per append: one transaction, bounded (events._log.PAGE_CACHE)
FOLLOW_POLL = 0.1  # seconds between reads of the log head while following
FOLLOW_OUTPUT_POLL = 0.01  # seconds between looks at a followed container's output
FORWARD_CONNECT_TIMEOUT = 3.0  # seconds to reach the daemon that runs a container
STOP_GRACE = 15.0  # seconds after a stop's timeout for SIGKILL to be reported


def record_json(rec: Recorded) -> dict:
    out = {"seq": rec.seq, "id": rec.id, "type": rec.type, "version": rec.version,
           "node": rec.node, "time": rec.time, "data": rec.data()}
    if isinstance(rec.event, UnknownEvent):
        out["unknown"] = rec.event.reason
    return out


class Exchange:
    """One connection: the request line is read; more lines may follow (exec's stdin)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, msg: dict) -> None:
        self.writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def receive(self) -> dict | None:
        """The client's next line; None once it has closed its side."""
        line = await self.reader.readline()
        if not line:
            return None
        try:
            msg = json.loads(line)
        except ValueError:
            raise CantainerError("bad request: a line is not JSON") from None
        if not isinstance(msg, dict):
            raise CantainerError("bad request: a line is not an object")
        return msg


def peer_port(dqlite_port: int) -> int:
    """Where a daemon serves its peers' forwarded requests (logs, exec)."""
    return dqlite_port + 2


class ApiServer:
    """The local API on a unix socket, and the peer API on the underlay.

    The peer listener (dqlite port + 2) serves only ``PEER_OPS``, for the
    containers of this host: another daemon forwards them there when its
    user names a container of this host.
    """

    PEER_OPS = frozenset({"logs", "exec"})

    def __init__(self, daemon: Daemon, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self._servers: list[asyncio.Server] = []

    async def start(self, peer_address: tuple[str, int] | None = None) -> None:
        _claim_socket(self.path)
        old = os.umask(0o177)
        try:
            self._servers.append(await asyncio.start_unix_server(
                self._serve, self.path, limit=MAX_REQUEST))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        if peer_address is not None:
            try:
                self._servers.append(await asyncio.start_server(
                    lambda r, w: self._serve(r, w, peer=True), *peer_address,
                    limit=MAX_REQUEST, reuse_address=True))
            except OSError as exc:
                await self.stop()
                raise CantainerError(f"cannot serve peers on {peer_address[0]}:"
                                     f"{peer_address[1]}: {exc.strerror}") from None

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._servers:
            self._servers = []
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: bool = False) -> None:
        ex = Exchange(reader, writer)
        try:
            try:
                line = await reader.readline()
                if not line:
                    return  # connected and went: nothing to answer
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError as exc:  # includes over-long lines and bad JSON
                raise CantainerError(f"bad request: {exc}") from None
            op = request.get("op")
            handler = getattr(self, f"_op_{op}", None)
            if handler is None or (peer and op not in self.PEER_OPS):
                raise CantainerError(f"unknown request {op!r}")
            request["peer"] = peer
            await handler(request, ex)
        except CantainerError as exc:
            await _quietly(ex.send({"error": str(exc)}))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            log.exception("API request failed")
            await _quietly(ex.send({"error": f"internal error: {type(exc).__name__}: {exc}"}))
        finally:
            writer.close()

    async def _op_submit(self, request: dict, ex: Exchange) -> None:
        items = request.get("events")
        if not isinstance(items, list) or not items:
            raise InvalidEvent("submit needs a non-empty list of events")
        if len(items) > MAX_BATCH:
            raise InvalidEvent(f"a batch holds at most {MAX_BATCH} events, got {len(items)}")
        events, ids = [], []
        for n, item in enumerate(items, 1):
            where = f"event {n}: " if len(items) > 1 else ""
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                raise InvalidEvent(f"{where}needs a type")
            try:
                events.append(from_data(item["type"], item.get("data", {})))
            except InvalidEvent as exc:
                raise InvalidEvent(f"{where}{exc}") from None
            ids.append(item.get("id") or new_event_id())
        seqs = await self._append(events, ids)
        await self._verdicts(seqs)
        await ex.send({"seqs": seqs})

    async def _append(self, events: list, ids: list[str]) -> list[int]:
        try:
            seqs = await self.daemon.log.append(events, ids)
        except LogUnavailable as exc:
            # Raft may still commit what the old leader holds: only a retry
            # with the same id is safe, so say which id that is.
            again = f"--id {ids[0]}" if len(ids) == 1 else "the same ids"
            raise LogUnavailable(f"{exc}; the event may still be appended later: retry "
                                 f"with {again} to append it at most once") from None
        self.daemon.appended()
        return seqs

    async def _verdicts(self, seqs: list[int]) -> None:
        rejected = await self.daemon.pipeline.rejection("ipam", seqs)
        if rejected:
            raise Rejected(f"seq {rejected[0]} was appended but rejected: {rejected[1]}")

    async def _op_nodes(self, request: dict, ex: Exchange) -> None:
        await ex.send({"nodes": await self.daemon.nodes()})

    async def _op_network_create(self, request: dict, ex: Exchange) -> None:
        cidr = request.get("cidr")
        net = parse_cidr(cidr)
        name = request.get("name") or implicit_name(net)
        event = from_data("NetworkCreated", {"name": name, "cidr": cidr})
        seq, = await self._append([event], [request.get("id") or new_event_id()])
        await self._verdicts([seq])
        networks = await self.daemon.pipeline.ask("ipam", "networks")
        await ex.send({"network": next(n for n in networks if n["name"] == name)})

    async def _op_network_ls(self, request: dict, ex: Exchange) -> None:
        await self.daemon.pipeline.wait_applied("ipam", await self.daemon.reader.head())
        await ex.send({"networks": await self.daemon.pipeline.ask("ipam", "networks")})

    async def _op_network_rm(self, request: dict, ex: Exchange) -> None:
        event = from_data("NetworkRemoved", {"name": request.get("name")})
        seq, = await self._append([event], [request.get("id") or new_event_id()])
        await self._verdicts([seq])
        await ex.send({"removed": event.name})

    # -- images: this host's store; slow work runs off the event loop ------------------

    async def _op_image_ls(self, request: dict, ex: Exchange) -> None:
        await ex.send({"images": await asyncio.to_thread(self.daemon.images.list)})

    async def _op_image_import(self, request: dict, ex: Exchange) -> None:
        ref, path = _text(request, "ref"), _text(request, "path")
        meta = await asyncio.to_thread(self.daemon.images.import_tarball, ref, path)
        await ex.send({"image": meta})

    async def _op_image_pull(self, request: dict, ex: Exchange) -> None:
        ref, mirror = _text(request, "ref"), _optional_text(request, "mirror")
        meta = await asyncio.to_thread(pull_alpine, self.daemon.images, ref, mirror)
        await ex.send({"image": meta})

    async def _op_image_rm(self, request: dict, ex: Exchange) -> None:
        removed = await asyncio.to_thread(self.daemon.images.remove, _text(request, "ref"))
        await ex.send({"removed": removed})

    # -- containers -------------------------------------------------------------------

    async def _container(self, ref: object) -> dict:
        if not isinstance(ref, str) or not ref:
            raise CantainerError("name a container")
        await self.daemon.pipeline.wait_applied("ipam", await self.daemon.reader.head())
        found = await self.daemon.pipeline.ask("ipam", "resolve", ref)
        if found is None:
            raise CantainerError(f"no container {ref!r}")
        if "ambiguous" in found:
            raise CantainerError(f"{ref!r} matches {found['ambiguous']} containers; "
                                 "give more of the id")
        return found

    async def _owner(self, request: dict, ex: Exchange, action: str) -> dict | None:
        """The container, if this host runs it; else the request is forwarded to the
        daemon that does, its answer relayed, and None returned."""
        c = await self._container(request.get("ref"))
        if c["host"] == self.daemon.config.name:
            return c
        if request["peer"]:  # forwarded here by a daemon with an older view of the log
            raise CantainerError(f"container {c['name']} is not on host "
                                 f"{self.daemon.config.name}")
        address = self.daemon.context.peers.get(c["host"])
        if address is None:
            raise CantainerError(f"cannot {action} container {c['name']}: its host "
                                 f"{c['host']} has left the cluster")
        host, _, port = address.rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, peer_port(int(port)), limit=MAX_REQUEST),
                FORWARD_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise CantainerError(f"cannot {action} container {c['name']}: its host "
                                 f"{c['host']} does not answer ({exc or 'timed out'})") from None
        forwarded = {k: v for k, v in request.items() if k != "peer"} | {"ref": c["id"]}
        writer.write(json.dumps(forwarded).encode() + b"\n")
        upstream = asyncio.create_task(_pipe(ex.reader, writer))
        try:
            await _pipe(reader, ex.writer)
        finally:
            upstream.cancel()
            writer.close()
        return None

    async def _until(self, ref: str, done, timeout: float = 60.0) -> dict:
        """Poll the IPAM projection until ``done(container)`` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            c = await self.daemon.pipeline.ask("ipam", "resolve", ref)
            if c is None or done(c):
                return c
            if asyncio.get_running_loop().time() > deadline:
                raise CantainerError(f"container {ref} still {c['state']} after {timeout:g}s")
            await asyncio.sleep(0.01)

    async def _op_run(self, request: dict, ex: Exchange) -> None:
        image = _optional_text(request, "image") or "busybox"
        await asyncio.to_thread(self.daemon.images.rootfs, image)  # built or refused here
        cid = os.urandom(32).hex()
        fields = {"container": cid, "name": request.get("name") or f"ct-{cid[:8]}",
                  "host": self.daemon.config.name, "network": request.get("network"),
                  "image": image, "command": request.get("command") or ["/bin/sh"],
                  "env": request.get("env") or [], "hostname": request.get("hostname"),
                  "memory": request.get("memory"), "pids_limit": request.get("pids_limit"),
                  "cpus": request.get("cpus")}
        if not fields["network"]:
            raise CantainerError("give the container a network: -n CIDR|NAME")
        event = from_data("ContainerCreated", {k: v for k, v in fields.items() if v is not None})
        marker = attach_marker(self.daemon.config.data_dir, cid)
        if request.get("attach"):  # run -i/-t: the runtime actor's shim waits for the CLI
            os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
            open(marker, "w").close()
        try:
            seq, = await self._append([event], [request.get("id") or new_event_id()])
            await self._verdicts([seq])
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)
            raise
        if request.get("attach"):
            sock = os.path.join(self.daemon.config.data_dir, "containers", cid, "attach.sock")
            c = await self._until(cid, lambda c: os.path.exists(sock) or c["state"] != "created")
            await ex.send({"container": c, "attach": sock})
            return
        c = await self._until(cid, lambda c: c["state"] != "created")
        await ex.send({"container": c})
        if request.get("follow"):  # a foreground run: its output, its end, in one exchange
            await self._stream_output(c, ex, follow=True)
            c = await self._until(cid, lambda c: c["state"] == "exited", timeout=1e9)
            if request.get("remove") and c is not None:
                await self._remove(c)
            await ex.send({"exit_code": c["exit_code"] if c else None})

    async def _op_ps(self, request: dict, ex: Exchange) -> None:
        await self.daemon.pipeline.wait_applied("ipam", await self.daemon.reader.head())
        found = await self.daemon.pipeline.ask("ipam", "containers")
        if not request.get("all"):
            found = [c for c in found if c["state"] != "exited"]
        await ex.send({"containers": found})

    async def _op_inspect(self, request: dict, ex: Exchange) -> None:
        await ex.send({"container": await self._container(request.get("ref"))})

    async def _op_logs(self, request: dict, ex: Exchange) -> None:
        c = await self._owner(request, ex, "read the logs of")
        if c is None:
            return
        await self._stream_output(c, ex, follow=bool(request.get("follow")))
        await ex.send({"end": True})

    async def _stream_output(self, c: dict, ex: Exchange, follow: bool) -> None:
        """Send the container's output as {"data"} lines; with ``follow``, until it ends."""
        path = (await self._local_state(c))["log"]
        offset = 0
        while True:
            chunk = await asyncio.to_thread(_read_from, path, offset)
            if chunk:
                offset += len(chunk)
                await ex.send({"data": chunk.decode(errors="replace")})
                continue
            if not follow:
                return
            if (await self._local_state(c))["exit_code"] is not None:
                if not await asyncio.to_thread(_read_from, path, offset):
                    return
                continue
            await asyncio.sleep(FOLLOW_OUTPUT_POLL)

    async def _local_state(self, c: dict) -> dict:
        return await self.daemon.pipeline.ask("runtime", "local_state", c["id"])

    async def _op_exec(self, request: dict, ex: Exchange) -> None:
        command = request.get("command")
        if not isinstance(command, list) or not command or \
                not all(isinstance(a, str) and a for a in command):
            raise CantainerError("exec needs a command")
        c = await self._owner(request, ex, "exec in")
        if c is None:
            return
        local = await self._local_state(c)
        if local["pid"] is None or local["exit_code"] is not None:
            raise CantainerError(f"container {c['name']} is not running")
        spec = {"id": c["id"], "pid": local["pid"], "command": command, "env": c["env"]}
        await exec_session(ex, spec, interactive=bool(request.get("interactive")),
                           tty=bool(request.get("tty")), size=request.get("size"))

    async def _op_stop(self, request: dict, ex: Exchange) -> None:
        """Through the log, so it works from any host: the owner's runtime acts on it."""
        c = await self._container(request.get("ref"))
        timeout = request.get("timeout", 10)
        event = from_data("ContainerStopRequested", {"container": c["id"], "timeout": timeout})
        if c["state"] != "exited":
            seq, = await self._append([event], [request.get("id") or new_event_id()])
            await self._verdicts([seq])
            await self._until(c["id"], lambda c: c["state"] == "exited",
                              timeout=event.timeout + STOP_GRACE)
        await ex.send({"stopped": c["name"]})

    async def _op_rm(self, request: dict, ex: Exchange) -> None:
        c = await self._container(request.get("ref"))
        if c["state"] == "running" and not request.get("force"):
            raise CantainerError(f"container {c['name']} is running: stop it first, "
                                 "or rm -f")
        await self._remove(c)
        await ex.send({"removed": c["name"]})

    async def _remove(self, c: dict) -> None:
        event = from_data("ContainerRemoved", {"container": c["id"]})
        seq, = await self._append([event], [f"ContainerRemoved-{c['id']}"])
        await self._verdicts([seq])

    # -- membership -------------------------------------------------------------------

    async def _op_leave(self, request: dict, ex: Exchange) -> None:
        """This host leaves the cluster: NodeLeft, its containers stopped, the daemon
        stopped.  A plain SIGTERM stops the daemon without leaving."""
        seq = await self.daemon.leave()
        await self.daemon.pipeline.wait_applied("runtime", seq)
        await ex.send({"left": self.daemon.config.name, "seq": seq})
        self.daemon.stop()

    async def _op_node_rm(self, request: dict, ex: Exchange) -> None:
        """An operator evicts a host that is gone: NodeLeft on its behalf."""
        name = _text(request, "name")
        if name == self.daemon.config.name:
            raise CantainerError(f"{name} is this host: use 'cantainer node leave' on it")
        await self.daemon.pipeline.wait_applied("membership", await self.daemon.reader.head())
        nodes = await self.daemon.pipeline.ask("membership", "snapshot")
        node = nodes.get(name)
        if node is None or node["state"] == "left":
            raise CantainerError(f"no member named {name!r}")
        if node["state"] != "suspected" and not request.get("force"):
            raise CantainerError(f"host {name} is alive (state {node['state']}): it should "
                                 "leave by itself ('node leave'), or use --force")
        event = from_data("NodeLeft", {"name": name})
        seq, = await self._append([event], [f"NodeLeft-{name}-{node['joined']}"])
        await self._verdicts([seq])
        await ex.send({"removed": name, "seq": seq})

    async def _op_check(self, request: dict, ex: Exchange) -> None:
        """This host's kernel against the log: every actor that makes kernel state
        compares it with its projection at the same seq (the log's head)."""
        pipeline = self.daemon.pipeline
        head = await self.daemon.reader.head()
        differences = []
        for name in ("overlay", "runtime"):
            await pipeline.wait_applied(name, head)
            differences += await pipeline.ask(name, "differences")
        await ex.send({"applied": head, "differences": differences})

    async def _op_events(self, request: dict, ex: Exchange) -> None:
        since = request.get("since", 0)
        types = request.get("types") or None
        if types is not None and not (isinstance(types, list)
                                      and all(isinstance(t, str) for t in types)):
            raise CantainerError("--type must name event types")
        if not isinstance(since, int) or since < 0:
            raise CantainerError(f"--since must be a seq >= 0, got {since!r}")
        reader = self.daemon.reader
        while True:
            batch = await reader.read(after=since, limit=1000, types=types)
            for rec in batch:
                await ex.send({"event": record_json(rec)})
            if batch:
                since = batch[-1].seq
                continue
            if not request.get("follow"):
                await ex.send({"end": True})
                return
            await asyncio.sleep(FOLLOW_POLL)

    async def _op_status(self, request: dict, ex: Exchange) -> None:
        await ex.send({"status": await self.daemon.status()})


def _read_from(path: str, offset: int, limit: int = 1 << 16) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


def _text(request: dict, key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise CantainerError(f"request needs {key!r}")
    return value


def _optional_text(request: dict, key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise CantainerError(f"request field {key!r} must be a string")
    return value or None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until the reader ends, then end the writer's side."""
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _quietly(coro) -> None:
    try:
        await coro
    except (ConnectionError, OSError):
        pass


def _claim_socket(path: str) -> None:
    """Remove a stale socket file; refuse if a daemon still answers there."""
    import socket

    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise CantainerError(f"another cantainerd is listening on {path}")
    finally:
        probe.close()

