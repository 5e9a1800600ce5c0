"""``cantainerd``: one host's daemon.

Start order: lock the data directory, start the embedded dqlite node (join
through the seeds if new), start the actor pipeline, announce ``NodeJoined``,
send heartbeats, serve the local API, look after Raft roles.  Stop order is
the reverse: stop serving, stop the actors, hand over leadership and this
node's Raft seat, stop the node.

Stopping is not leaving: after SIGTERM the host stays a member, its
containers keep running under their shims, and the restarted daemon adopts
them (Docker's live-restore; kubelet and Nomad behave alike).  The peers
record ``NodeSuspected`` if it stays away.  Leaving is ``cantainer node
leave``: ``NodeLeft``, which stops this host's containers and frees their
addresses, then the stop above.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import sys
import time

import attrs

from cantainer.actors import ActorContext, Pipeline
from cantainer.api import ApiServer, peer_port
from cantainer.errors import CantainerError, ConfigError
from cantainer.events import EventLog, NodeJoined, NodeLeft, RaftMember
from cantainer.heartbeat import INTERVAL as HEARTBEAT_INTERVAL
from cantainer.heartbeat import Heartbeats, heartbeat_port
from cantainer.kernel.images import ImageStore
from cantainer.kernel.net import ensure_neighbour_table, mtu_of

log = logging.getLogger("cantainerd")

DEFAULT_PORT = 9000
ROLES_INTERVAL = 5.0  # seconds between checks of Raft voters and stand-bys
ONLINE_WITHIN = 3.0   # a member heard from this recently counts as online for Raft roles
HAND_OVER_TIMEOUT = 3.0  # seconds a stop waits to hand over leadership
# Raft's one-way latency estimate: heartbeats every 1.5x, elections after 15x.  60 ms
# is etcd's LAN default (90 ms heartbeats, 900 ms elections); the leader's Raft thread
# costs ~0.4 % of a core at 30 ms (bench.idle), half that here.
NETWORK_LATENCY_MS = 60


@attrs.frozen
class Config:
    name: str
    host: str  # underlay address of this host
    port: int
    seeds: tuple[str, ...]
    data_dir: str
    run_dir: str
    voters: int = 3
    standbys: int = 3
    network_latency_ms: int = NETWORK_LATENCY_MS
    suspect_after: float = 10.0
    idle_poll: float = 2.0        # seconds between reads of a quiet log (pokes wake it)
    reconcile_every: float = 10.0  # seconds between full kernel comparisons; 0: never
    fixed_poll: float | None = None  # benchmarks only: see bench/convergence.py

    @property
    def dqlite_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "cantainerd.sock")


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.raft = RaftMember(os.path.join(config.data_dir), config.dqlite_address,
                               config.seeds, voters=config.voters, standbys=config.standbys,
                               network_latency_ms=config.network_latency_ms)
        # Three sessions, so a reader never waits behind a writer: API appends,
        # API reads, and the pipeline's tailer.
        self.log = EventLog(self.raft.store, node=config.name)
        self.reader = EventLog(self.raft.store, node=config.name)
        self.context = ActorContext(node=config.name, address=config.host,
                                    data_dir=config.data_dir, underlay_mtu=mtu_of(config.host),
                                    append=self._append_soon,
                                    suspect_after=config.suspect_after)
        self.pipeline = Pipeline(EventLog(self.raft.store, node=config.name), self.context,
                                 fixed_poll=config.fixed_poll, idle_poll=config.idle_poll,
                                 reconcile_every=config.reconcile_every)
        self.heartbeats = Heartbeats(config.name, self._heartbeat_peers, self.pipeline.applied,
                                     on_poke=self.pipeline.wake)
        self.images = ImageStore(config.data_dir)
        self.api = ApiServer(self, config.socket_path)
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._joined_seq = 0

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stopping.set)
        try:
            for change in ensure_neighbour_table():
                log.info("raised the kernel's neighbour table: %s", change)
        except OSError as exc:  # containers still work; many of them may not reach each other
            log.warning("cannot raise the kernel's neighbour table limits: %s", exc)
        await self.raft.start()
        tasks: list[asyncio.Task] = []
        try:
            self.pipeline.start()
            await self._announce()
            await self.heartbeats.start(self.config.host, heartbeat_port(self.config.port))
            await self.api.start((self.config.host, peer_port(self.config.port)))
            tasks = [asyncio.create_task(self._look_after_roles()),
                     asyncio.create_task(self.heartbeats.run()),
                     asyncio.create_task(self._report_liveness())]
            log.info("cantainerd %s ready: dqlite %s, node id %x, API %s", self.config.name,
                     self.config.dqlite_address, self.raft.node_id, self.config.socket_path)
            await self._stopping.wait()
            log.info("stopping")
            await self.api.stop()
        finally:
            for task in tasks:
                task.cancel()
            self.heartbeats.close()
            await self.pipeline.stop()
            await self._hand_over()
            await self.log.close()
            await self.reader.close()
            await self.pipeline.log.close()
            await self.raft.stop()
        log.info("stopped")

    # -- membership in the log ----------------------------------------------------------

    async def _announce(self) -> None:
        """Append ``NodeJoined`` unless the log already has this node as a member.

        The id names the node and the seq of its last ``NodeLeft`` (0 if none), so
        a restart appends nothing and a rejoin after leaving appends once.
        """
        state, left_seq = None, 0
        for rec in await self.reader.read(types=["NodeJoined", "NodeLeft"], limit=1_000_000):
            if getattr(rec.event, "name", None) == self.config.name:
                state = rec.type
                if rec.type == "NodeLeft":
                    left_seq = rec.seq
                else:
                    self._joined_seq = rec.seq
        if state == "NodeJoined":
            log.info("already a member since seq %d", self._joined_seq)
        else:
            event = NodeJoined(name=self.config.name, address=self.config.host,
                               dqlite_address=self.config.dqlite_address)
            self._joined_seq, = await self.log.append(
                [event], [f"NodeJoined-{self.raft.node_id:x}-{left_seq}"])
            log.info("NodeJoined is at seq %d", self._joined_seq)
        rejected = await self.pipeline.rejection("membership", [self._joined_seq])
        if rejected:
            raise ConfigError(f"this node cannot join: {rejected[1]}")

    async def leave(self) -> int:
        """Append ``NodeLeft`` for this host; its seq.  The same id as an operator's
        ``node rm`` of this host, so the two record one departure."""
        event = NodeLeft(name=self.config.name)
        seq, = await self.log.append([event], [f"NodeLeft-{self.config.name}-{self._joined_seq}"])
        self.appended()
        return seq

    def stop(self) -> None:
        self._stopping.set()

    def _append_soon(self, event, event_id: str) -> None:
        """Append from an actor's thread without waiting (ids make repeats harmless)."""
        future = asyncio.run_coroutine_threadsafe(self.log.append([event], [event_id]),
                                                  self._loop)

        def done(f) -> None:
            if f.exception() is not None:
                log.warning("append of %s failed: %s", type(event).__name__, f.exception())
            else:
                self._loop.call_soon_threadsafe(self.appended)

        future.add_done_callback(done)

    def appended(self) -> None:
        """Something reached the log from here: read it now, and tell the peers to."""
        self.pipeline.wake()
        self.heartbeats.poke()

    # -- liveness and roles -------------------------------------------------------------

    def _heartbeat_peers(self) -> list[tuple[str, int]]:
        """Every live member the log names, but this host."""
        peers = []
        for name, address in self.context.peers.items():
            host, _, port = address.rpartition(":")
            if name != self.config.name:
                peers.append((host, heartbeat_port(int(port))))
        return peers

    async def _report_liveness(self) -> None:
        proxy = None
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            # Members the log names are worth asking for the leader, too.
            await self.raft.store.learn(self.context.peers.values())
            ref = self.pipeline.refs.get("membership")
            if ref is not None and ref.is_alive():
                if proxy is None or proxy.actor_ref is not ref:  # one proxy per actor
                    proxy = ref.proxy()
                proxy.on_liveness(dict(self.heartbeats.last_heard), self.raft.is_leader)

    async def _look_after_roles(self) -> None:
        while True:
            await asyncio.sleep(ROLES_INTERVAL)
            try:
                await self.raft.look_after(heard=self._heard_recently())
            except Exception as exc:  # keep looking after roles whatever one round hit
                log.info("role check skipped: %s", exc)

    def _heard_recently(self) -> set[str]:
        """dqlite addresses of the members whose heartbeat is fresh."""
        fresh = {name for name, heard in self.heartbeats.last_heard.items()
                 if time.monotonic() - heard < ONLINE_WITHIN}
        return {address for name, address in self.context.peers.items() if name in fresh}

    async def _hand_over(self) -> None:
        try:
            async with asyncio.timeout(HAND_OVER_TIMEOUT):
                await self.raft.hand_over()
        except Exception as exc:
            log.warning("hand-over incomplete: %s", exc)

    # -- for the API ------------------------------------------------------------------

    async def status(self) -> dict:
        members = await self.raft.members()
        leader = await self.raft.leader()
        nodes = await self.pipeline.ask("membership", "snapshot")
        names = {n["dqlite_address"]: name for name, n in nodes.items() if n["state"] != "left"}
        seen = self.heartbeats.seen()
        seen[self.config.name] = {"applied": self.pipeline.applied(), "heard": 0.0}
        return {
            "node": self.config.name,
            "node_id": f"{self.raft.node_id:x}",
            "address": self.config.dqlite_address,
            "leader": leader,
            "head": await self.reader.head(),
            "applied": self.pipeline.applied(),
            "members": [{"id": f"{m.node_id:x}", "address": m.address,
                         "role": m.role.name.lower(), "name": names.get(m.address, ""),
                         "leader": m.address == leader,
                         "applied": seen.get(names.get(m.address, ""), {}).get("applied"),
                         "heard": seen.get(names.get(m.address, ""), {}).get("heard")}
                        for m in members],
        }

    async def nodes(self) -> list[dict]:
        nodes = await self.pipeline.ask("membership", "snapshot")
        try:
            roles = {m.address: m.role.name.lower() for m in await self.raft.members()}
        except Exception:  # roles are a courtesy; membership comes from the log
            roles = {}
        seen = self.heartbeats.seen()
        return [{"name": name, "address": n["address"], "state": n["state"],
                 "role": roles.get(n["dqlite_address"], "-") if n["state"] != "left" else "-",
                 "dqlite_address": n["dqlite_address"], "since": n["since"],
                 "heard": seen.get(name, {}).get("heard")}
                for name, n in sorted(nodes.items())]


def _lock_data_dir(data_dir: str) -> int:
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(data_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot use data directory {data_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(f"another cantainerd is using the data directory {data_dir}") from None
    return fd


def _parse_address(value: str) -> tuple[str, int]:
    host, _, port = value.partition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port) if port else DEFAULT_PORT
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--address {value!r} is not IPV4[:PORT]") from None
    return host, number


def parse_config(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="cantainerd", description="Cantainer host daemon.")
    parser.add_argument("--address", help="this host's underlay address, HOST[:PORT] "
                        "(default: the default route's source address, port 9000)")
    parser.add_argument("--seeds", default="", help="HOST:PORT[,...] of members to join through")
    parser.add_argument("--name", default=socket.gethostname(), help="node name (default: hostname)")
    parser.add_argument("--data-dir", default="/var/lib/cantainer")
    parser.add_argument("--run-dir", default="/run/cantainer")
    parser.add_argument("--voters", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--standbys", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--network-latency-ms", type=int, default=NETWORK_LATENCY_MS,
                        metavar="MS",
                        help="one-way latency dqlite plans for: Raft heartbeats every 1.5x, "
                             f"elections after 15x (default: {NETWORK_LATENCY_MS}, a "
                             f"{15 * NETWORK_LATENCY_MS} ms election timeout)")
    parser.add_argument("--suspect-after", type=float, default=10.0, metavar="SECONDS",
                        help="heartbeat silence after which the leader records NodeSuspected "
                             "(default: 10)")
    parser.add_argument("--idle-poll", type=float, default=2.0, metavar="SECONDS",
                        help="how often a quiet log is read (default: 2); appending hosts "
                             "poke their peers to read at once")
    parser.add_argument("--reconcile-every", type=float, default=10.0, metavar="SECONDS",
                        help="full comparison of the kernel with the log (default: 10); 0: "
                             "never (removals are still noticed at once through rtnetlink)")
    parser.add_argument("--fixed-poll", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.log_level != "debug":  # our own messages say what its retries were about
        logging.getLogger("dqliteclient").setLevel(logging.ERROR)
    if args.address is None:
        from cantainer.kernel.net import default_address
        found = default_address()
        if found is None:
            raise ConfigError("no default route to take an address from; pass --address")
        args.address = found
    host, port = _parse_address(args.address)
    seeds = []
    for seed in filter(None, (s.strip() for s in args.seeds.split(","))):
        seed_host, seed_port = _parse_address(seed)
        seeds.append(f"{seed_host}:{seed_port}")
    if not 1 <= args.voters <= 7 or not 0 <= args.standbys <= 7:
        raise ConfigError("--voters must be 1..7 and --standbys 0..7")
    if not 1.0 <= args.suspect_after <= 3600:
        raise ConfigError("--suspect-after must be 1..3600 seconds")
    if not 0.01 <= args.idle_poll <= 3600:
        raise ConfigError("--idle-poll must be 0.01..3600 seconds")
    if args.reconcile_every != 0 and not 1 <= args.reconcile_every <= 86400:
        raise ConfigError("--reconcile-every must be 0 (never) or 1..86400 seconds")
    if args.fixed_poll is not None and not 0.001 <= args.fixed_poll <= 60:
        raise ConfigError("--fixed-poll must be 0.001..60 seconds")
    if not 1 <= args.network_latency_ms <= 10_000:
        raise ConfigError("--network-latency-ms must be 1..10000")
    from cantainer.events._validate import NAME_RE
    if not NAME_RE.match(args.name):
        raise ConfigError(f"--name {args.name!r} is not a valid node name")
    return Config(name=args.name, host=host, port=port, seeds=tuple(seeds),
                  data_dir=os.path.abspath(args.data_dir), run_dir=os.path.abspath(args.run_dir),
                  voters=args.voters, standbys=args.standbys,
                  network_latency_ms=args.network_latency_ms, suspect_after=args.suspect_after,
                  idle_poll=args.idle_poll, reconcile_every=args.reconcile_every,
                  fixed_poll=args.fixed_poll)


def main(argv: list[str] | None = None) -> int:
    # Actors, the tailer and the API hand work between threads many times a
    # request; Python's default 5 ms GIL switch interval would add up to 5 ms
    # to each hand-off.
    sys.setswitchinterval(0.001)
    try:
        config = parse_config(argv)
        lock = _lock_data_dir(config.data_dir)
        try:
            asyncio.run(Daemon(config).run())
        finally:
            os.close(lock)
    except CantainerError as exc:
        print(f"cantainerd: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
