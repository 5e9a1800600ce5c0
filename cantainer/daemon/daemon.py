"""``cantainerd``: one host's daemon, put together.

Start order (``Daemon.run``), each step undone in reverse on the way out:

    1. the kernel's neighbour table limits raised, IPv4 forwarding on (containers' egress);
       a warning if no cgroups are visible
    2. the embedded dqlite node started; joined through the seeds if new  -> stopped
    3. the containers' name server (its sockets follow the state)         -> closed
    4. the runner: the state, the tailer, the kernel actors               -> stopped
    5. this host announced (NodeJoined unless a member)    -> leadership and seat handed over
    6. heartbeats sent and heard                                          -> closed
    7. the API served (unix socket, peer port)                            -> closed
    8. the log followed through a relay, unless this host is one          -> stopped
    9. the metrics served                                                 -> closed
   10. the loops: Raft roles, the leader's suspicion of silent hosts      -> cancelled

Stopping is not leaving: after SIGTERM the host stays a member, its
containers keep running under their shims, and the restarted daemon adopts
them (Docker's live-restore; kubelet and Nomad behave alike).  The peers
record ``NodeSuspected`` if it stays away.  Leaving is ``cantainer node
leave`` (``api/cluster.py``): ``NodeLeft``, which stops this host's containers
and frees their addresses, then the stop above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from cantainer.actors.runtime import Fenced
from cantainer.api.server import ApiServer
from cantainer.api.trust import CA_KEY, JOIN_SECRET
from cantainer.config import DEFAULT_NETWORK_CIDR, Config, heartbeat_port
from cantainer.daemon import credentials
from cantainer.daemon.dns import NameServer
from cantainer.daemon.handle import DaemonHandle
from cantainer.daemon import peers
from cantainer.daemon.archive import Archive
from cantainer.daemon.checkpoints import Checkpoints
from cantainer.daemon.images import ImageFollower
from cantainer.daemon.lease import LEASE_FILE, Lease
from cantainer.daemon.metrics import Metrics
from cantainer.daemon.heartbeat import INTERVAL as HEARTBEAT_INTERVAL
from cantainer.daemon.heartbeat import Heartbeats, Suspicion
from cantainer.daemon.fanout import Feed, Recent
from cantainer.daemon.runner import Runner
from cantainer.errors import ConfigError
from cantainer.events import (CheckpointTaken, ClusterCreated, Event, LeaderElected, NodeJoined,
                              SegmentArchived)
from cantainer.events.log import EventLog
from cantainer.events.raft import RaftMember
from cantainer.kernel.cgroups import CGROUP_ROOT, CONTROLLERS
from cantainer.kernel.cgroups import available as cgroups_available
from cantainer.kernel.images import ImageStore
from cantainer.kernel.net import ensure_neighbour_table, forward_ipv4, mtu_of
from cantainer.projections.membership import LEFT
from cantainer.projections.state import ClusterState
from cantainer.trust.dqlite import DqliteTls
from cantainer.trust.files import Credentials, load_gate, save_gate
from cantainer.trust.kx import kx_public, pair_key
from cantainer.trust.tokens import new_secret
from cantainer.trust.tls import Gate, client_context, server_context

log = logging.getLogger("cantainerd")

ROLES_INTERVAL = 5.0  # seconds between checks of Raft voters and stand-bys
ONLINE_WITHIN = 3.0   # a member heard from this recently counts as online for Raft roles
HAND_OVER_TIMEOUT = 3.0  # seconds a stop waits to hand over leadership
CATCH_UP_TIMEOUT = 300.0  # seconds a starting daemon may take to apply the log
FETCH_MOST = 1 << 30  # bytes: the most a segment or checkpoint fetched from a peer may be


class Daemon:
    def __init__(self, config: Config, creds: Credentials, ca_key: str | None = None) -> None:
        self.config = config
        self.creds = creds
        self._ca_key = ca_key  # this host made the cluster's CA: it goes into the secrets
        self.gate = Gate(creds.fingerprint)
        self.gate.update(*load_gate(creds))  # caught up with the log: not yet
        transport = DqliteTls(config.dqlite_address, config.data_dir, self.gate,
                              client_context(creds, creds.ca))
        self.raft = RaftMember(config.data_dir, config.dqlite_address, config.seeds,
                               voters=config.voters, standbys=config.standbys,
                               network_latency_ms=config.network_latency_ms,
                               transport=transport)
        # Three sessions, so a reader never waits behind a writer: appends, reads for
        # the API, and the runner's tailer.
        self.log, self.reader, tail = (EventLog(self.raft.store, node=config.name,
                                                dial=transport.dial) for _ in range(3))
        # The tailer reads through a relay, or the leader (daemon/fanout.py).
        # A relay that has not reached a quorum for this long is dropped: before the
        # lease's fence (half of --suspect-after) would count this host cut off.
        self.feed = Feed(tail, node=config.name, count=config.relays,
                         stale_after=config.suspect_after * 0.4)
        self.runner = Runner(self.feed, ClusterState(), node=config.name, address=config.host,
                             data_dir=config.data_dir, report=self._append_soon,
                             underlay_mtu=mtu_of(config.host), idle_poll=config.idle_poll,
                             reconcile_every=config.reconcile_every,
                             fixed_poll=config.fixed_poll, on_state=self._state_moved,
                             quiet_most=config.suspect_after / 4,
                             checkpoints=Checkpoints(config.data_dir,
                                                     config.checkpoint_every),
                             archive=Archive(config.data_dir, config.checkpoint_every),
                             recent=Recent(),
                             lease=(os.path.join(config.data_dir, LEASE_FILE),
                                    config.suspect_after / 2))
        self.heartbeats = Heartbeats(config.name, self._heartbeat_peers,
                                     lambda: self.runner.state.applied,
                                     on_poke=self.runner.wake, keys=self._pair_key,
                                     leader=self._leader_name)
        self.suspicion = Suspicion(config.name, config.suspect_after,
                                   config.reschedule_after)
        self.names = NameServer(config.name, lambda: self.runner.state, config.dns)
        self._pair_keys: dict[str, tuple[str, bytes]] = {}
        self.lease = Lease(config.data_dir, lambda: self.runner.last_read_ok,
                           config.suspect_after)
        self._fenced = self._fenced_told = False  # cut off from the log: no service
        # replica runs here (daemon/lease.py)
        handle = DaemonHandle(config, self.log, self.reader, self.runner, self.raft,
                              self.heartbeats, ImageStore(config.data_dir), creds, self.gate,
                              self.appended, self.stop)
        self.api = ApiServer(handle, config.socket_path)
        self.images = handle.follower = ImageFollower(handle, self.runner)
        self.runner.archive.fetch = self.runner.checkpoints.fetch = (
            lambda kind, seq, digest: peers.fetch(
                handle, {"op": "log_fetch", "kind": kind, "seq": seq}, digest, FETCH_MOST))
        self._compacting: asyncio.Task | None = None
        self._claimed: int | None = None  # the seq this leadership's claim is named by
        self.metrics = handle.metrics = Metrics()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loops: list[asyncio.Task] = []

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stopping.set)
        steps = [  # (start, stop): started in this order, stopped in the reverse
            (self._raise_neighbour_table, None),
            (self._look_at_cgroups, None),
            (self._forward_ipv4, None),
            (self.raft.start, self._stop_raft),
            (self.names.start, self.names.close),
            (self._start_runner, self.runner.stop),
            (self.lease.start, self.lease.close),
            (self._announce, self._hand_over),
            (self._start_heartbeats, self.heartbeats.close),
            (self._start_api, self.api.stop),
            (self._start_feed, self.feed.stop),
            (self._start_metrics, self.metrics.close),
            (self._start_loops, self._stop_loops),
        ]
        undo = []
        try:
            for start, stop in steps:
                await _call(start)
                undo.append(stop)
            log.info("cantainerd %s ready: dqlite %s, node id %x, API %s", self.config.name,
                     self.config.dqlite_address, self.raft.node_id, self.config.socket_path)
            await self._stopping.wait()
            log.info("stopping")
        finally:
            for stop in reversed(undo):
                if stop is not None:
                    await _call(stop)
        me = self.runner.state.members.nodes.get(self.config.name)
        if me is not None and me.state == LEFT and me.fingerprint == self.creds.fingerprint:
            self.creds.remove()  # revoked everywhere: coming back takes a new token
            log.info("left the cluster: this host's credentials are removed")
        log.info("stopped")

    def stop(self) -> None:
        self._stopping.set()

    # -- the steps ---------------------------------------------------------------------------

    def _raise_neighbour_table(self) -> None:
        try:
            for change in ensure_neighbour_table():
                log.info("raised the kernel's neighbour table: %s", change)
        except OSError as exc:  # containers still work; many of them may not reach each other
            log.warning("cannot raise the kernel's neighbour table limits: %s", exc)

    def _forward_ipv4(self) -> None:
        """Containers reach the outside through this host (NAT: the firewall actor)."""
        try:
            if forward_ipv4():
                log.info("IPv4 forwarding turned on (net.ipv4.ip_forward=1): containers' egress")
        except OSError as exc:
            log.warning("cannot turn on IPv4 forwarding: containers reach no further than "
                        "this host: %s", exc)

    def _look_at_cgroups(self) -> None:
        missing = set(CONTROLLERS) - cgroups_available()
        if missing:  # runs asking for these limits are refused, never run without them
            log.warning("no cgroup controller for %s under %s: containers cannot be given "
                        "those limits (started under 'ip netns exec'?)",
                        ", ".join(sorted(missing)), CGROUP_ROOT)

    async def _stop_raft(self) -> None:
        for session in (self.log, self.reader, self.runner.log):
            await session.close()
        await self.raft.stop()

    async def _start_runner(self) -> None:
        """From the newest checkpoint the log vouches for (daemon/checkpoints.py), else
        from seq 1."""
        await self.runner.checkpoints.restore(self.runner.state, self.reader)
        self.runner.start()

    async def _announce(self) -> None:
        """Append ``NodeJoined`` unless the log already has this host as a member.

        The id names the node and the seq of its last ``NodeLeft`` (0 if none), so
        a restart appends nothing and a rejoin after leaving appends once.
        """
        if self._ca_key is not None:  # this host made the cluster's CA: it creates it
            await self.log.set_secret(CA_KEY, self._ca_key, replace=False)
            await self.log.set_secret(JOIN_SECRET, new_secret(), replace=False)
            created = ClusterCreated(default_network=self.config.default_network
                                     or DEFAULT_NETWORK_CIDR,
                                     checkpoint_every=self.config.checkpoint_every)
            await self.log.append([created], ["ClusterCreated"])  # once per cluster
            # Only now: a start cut short before here finds ca.key and does all of it again.
            credentials.stored(self.creds)
            self._ca_key = None
        elif self.config.default_network is not None:
            log.warning("--default-network is ignored: the cluster has its own, in its log")
        await self.runner.wait_applied(await self.reader.head(), timeout=CATCH_UP_TIMEOUT)
        refusal = self.runner.state.checkpoint_refusal(self.config.checkpoint_every)
        if refusal is not None:
            raise ConfigError(refusal)
        # From now on this host dials only the members its state names (trust/tls.py).
        self.gate.update(self.gate.trusted, self.gate.revoked, caught_up=True)
        me = self.runner.state.members.nodes.get(self.config.name)
        if me is not None and me.state != LEFT:
            log.info("already a member since seq %d", me.joined)
            return
        event = NodeJoined(name=self.config.name, address=self.config.host,
                           dqlite_address=self.config.dqlite_address,
                           certificate=self.creds.cert, kx=kx_public(self.creds.kx))
        seq, = await self.log.append([event], [f"NodeJoined-{self.creds.fingerprint[:32]}"])
        self.appended()
        await self.runner.wait_applied(seq)
        if (reason := self.runner.state.verdict(seq)) is not None:
            raise ConfigError(f"this node cannot join: {reason}")
        log.info("NodeJoined is at seq %d", seq)

    async def _hand_over(self) -> None:
        try:
            async with asyncio.timeout(HAND_OVER_TIMEOUT):
                await self.raft.hand_over()
        except Exception as exc:
            log.warning("hand-over incomplete: %s", exc)

    async def _start_heartbeats(self) -> None:
        try:  # whom to tell at once; looked after every ROLES_INTERVAL from then on
            self.raft.leader_address = await self.raft.leader()
        except Exception as exc:  # noqa: BLE001 -- the roles loop asks again
            log.info("the Raft leader is not known yet: %s", exc)
        self.raft.is_leader = self.suspicion.led_at_start = \
            self.raft.leader_address == self.config.dqlite_address
        self._claim_leadership()
        await self.heartbeats.start(*self.config.heartbeat_address)

    async def _start_api(self) -> None:
        await self.api.start(self.config.peer_address,
                             server_context(self.creds, require_client_cert=False))

    def _start_feed(self) -> None:
        """Follow a relay, if this host is not one (daemon/fanout.py)."""
        self.feed.start(self.api.handle, leader=self._leader_name,
                        applied=lambda: self.runner.state.applied, wake=self.runner.wake)

    def _start_metrics(self) -> None:
        if self.config.metrics is not None:
            try:
                self.metrics.serve(*self.config.metrics)
            except OSError as exc:
                raise ConfigError(f"--metrics {self.config.metrics[0]}:"
                                  f"{self.config.metrics[1]}: {exc.strerror}") from None

    def _start_loops(self) -> None:
        self._loops = [asyncio.create_task(self._look_after_roles()),
                       asyncio.create_task(self.heartbeats.run()),
                       asyncio.create_task(self._judge_liveness())]

    async def _stop_loops(self) -> None:
        if self._compacting is not None:
            self._loops.append(self._compacting)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.images.close()

    # -- appending from the actors and the loops --------------------------------------------

    def _append_soon(self, event: Event, event_id: str) -> None:
        """Append without waiting, from any thread (ids make repeats harmless)."""
        async def append() -> None:
            try:
                _, records = await self.log.append_recorded([event], [event_id])
            except Exception as exc:  # an actor reports again at its next look
                log.warning("append of %s failed: %s", type(event).__name__, exc)
                return
            self.appended(read_here=not self.runner.offer(records))

        asyncio.run_coroutine_threadsafe(append(), self._loop)

    def appended(self, read_here: bool = True) -> None:
        """Something reached the log from here: tell the peers to read it, and read it
        here too unless it was applied here already (``Runner.offer``)."""
        if read_here:
            self.runner.wake()
        self.heartbeats.poke()

    # -- liveness and roles ------------------------------------------------------------------

    def _heartbeat_peers(self) -> list[tuple[str, tuple[str, int]]]:
        """Every live member the log names, but this host: (name, heartbeat address)."""
        peers = []
        for node in self.runner.state.members.live().values():
            host, _, port = node.dqlite_address.rpartition(":")
            if node.name != self.config.name:
                peers.append((node.name, (host, heartbeat_port(int(port)))))
        return peers

    def _leader_name(self) -> str | None:
        """The member the Raft leader is: as this host's own node last saw it, else (a
        spare's node takes no part in Raft and knows no leader) as the log last
        recorded it (``LeaderElected``)."""
        address = self.raft.leader_address
        members = self.runner.state.members
        return next((n.name for n in members.live().values()
                     if n.dqlite_address == address), None) or members.leader

    def _claim_leadership(self) -> None:
        """The leader records that it leads, once per leadership (the id names the seq
        it began at, as this host had applied it)."""
        state = self.runner.state
        if not self.raft.is_leader or state.members.leader == self.config.name:
            self._claimed = None  # recorded (or not leading): the next leadership anew
            return
        if state.members.is_live(self.config.name):
            if self._claimed is None:
                self._claimed = state.applied
            self._append_soon(LeaderElected(name=self.config.name),
                              f"LeaderElected-{self.config.name}-{self._claimed}")

    def _pair_key(self, name: str) -> bytes | None:
        """The key this host shares with live member ``name`` (heartbeats, pokes)."""
        node = self.runner.state.members.live().get(name)
        if node is None or node.kx is None:
            return None
        cached = self._pair_keys.get(name)
        if cached is None or cached[0] != node.kx:
            try:
                key = pair_key(self.creds.kx, node.kx)
            except ValueError as exc:  # a key no member can share one with: none
                log.warning("no key shared with member %s: %s", name, exc)
                key = None
            cached = self._pair_keys[name] = (node.kx, key)
        return cached[1]

    def _state_moved(self, state: ClusterState) -> None:
        """After every batch the runner applied: who may connect now, and what images
        this host must fetch."""
        self.names.update(state)
        self.images.update(state)
        trusted, revoked = state.members.trusted(), state.members.revoked()
        if trusted | {self.gate.own} != self.gate.trusted or \
                revoked - {self.gate.own} != self.gate.revoked:
            self.gate.update(trusted, revoked)
            save_gate(self.creds, self.gate.trusted, self.gate.revoked)

    async def _judge_liveness(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            members = self.runner.state.members
            # Members the log names are worth asking for the leader, too.
            await self.raft.store.learn(n.dqlite_address for n in members.live().values())
            for event, event_id in self.suspicion.events(members, self.heartbeats.last_heard,
                                                         self.raft.is_leader):
                log.info("appending %s for %s", type(event).__name__, event.name)
                self._append_soon(event, event_id)
            self.images.update(self.runner.state)  # what failed is asked for again
            self._vouch()
            fenced = self.lease.cut_off()
            if fenced != self._fenced:
                self._fenced = fenced
                log.warning("%s: this host's service replicas %s", "the log has not "
                            f"answered for {self.lease.hold:g} s" if fenced else
                            "the log answers again", "stop" if fenced else "may run")
            if time.monotonic() - self.runner.last_read_ok > self.lease.hold / 2:
                self.runner.wake()  # a read now: the fence needs to know
            if fenced or fenced != self._fenced_told:  # again: an actor may restart
                self._fenced_told = fenced
                self.runner.tell("runtime", Fenced(fenced))
            self.metrics.sample(state=self.runner.state, lag=self.runner.lag,
                                last_read_ok=self.runner.last_read_ok, node=self.config.name,
                                refs=self.runner.refs, stats=self.runner.context.stats,
                                heard=dict(self.heartbeats.last_heard),
                                refused=self.heartbeats.refused, fenced=fenced,
                                sent=self.heartbeats.sent, taken=self.heartbeats.taken,
                                feed=self.feed.source, dropped=self.feed.switches)

    def _vouch(self) -> None:
        """The leader records the digests of its checkpoints and archive segments (once
        each: the id names the seq), then compacts the log; every host checks its own
        against what the log recorded."""
        state, checkpoints, archive = self.runner.state, self.runner.checkpoints, \
            self.runner.archive
        recorded = state.checkpoints
        checkpoints.check(recorded)
        archive.check(state.segments)
        if not self.raft.is_leader:
            return
        for seq, digest in sorted(checkpoints.mine.items()):
            if seq not in recorded and seq > min(recorded, default=0):
                self._append_soon(CheckpointTaken(seq=seq, digest=digest),
                                  f"CheckpointTaken-{seq}")
        for last, (first, digest) in sorted(archive.mine.items()):
            if last not in state.segments:
                self._append_soon(SegmentArchived(first=first, last=last, digest=digest),
                                  f"SegmentArchived-{last}")
        if self.config.retain and (self._compacting is None or self._compacting.done()):
            self._compacting = asyncio.create_task(self._compact())

    async def _compact(self) -> None:
        """Remove from the database the records up to the newest checkpoint at least
        ``--retain`` records behind the head whose digest the log holds, once this host
        holds an archive segment the log vouches for of every one of them
        (daemon/archive.py: those it lacks it makes from the database first, and has
        the log vouch for them)."""
        state, every = self.runner.state, self.config.checkpoint_every
        upto = max((seq for seq in state.checkpoints
                    if seq <= state.applied - self.config.retain), default=0)
        if not upto:
            return
        try:
            first = await self.log.first()
            if not first or first > upto:
                return
            unvouched = await self.runner.archive.ensure(
                self._rows_of, state.segments, cover(state.segments, first, upto, every))
            if unvouched:  # compacted at a later look, once the log vouches for them
                for f, last, digest in unvouched:
                    self._append_soon(SegmentArchived(first=f, last=last, digest=digest),
                                      f"SegmentArchived-{last}")
                return
            started = time.monotonic()
            removed = await self.log.compact(upto)
            log.info("log compacted: %d records up to seq %d moved to the archive "
                     "(%.2f s)", removed, upto, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # compacted at the next look
            log.warning("log compaction up to seq %d: %s", upto, exc)

    async def _rows_of(self, first: int, last: int) -> list:
        """The database's rows ``first``..``last``."""
        rows: list = []
        while True:
            batch = await self.log.read_rows(after=rows[-1][0] if rows else first - 1,
                                             limit=1000)
            rows += [row for row in batch if row[0] <= last]
            if len(batch) < 1000 or batch[-1][0] >= last:
                return rows

    async def _look_after_roles(self) -> None:
        while True:
            await asyncio.sleep(ROLES_INTERVAL)
            try:
                await self.raft.look_after(heard=self._heard_recently())
            except Exception as exc:  # keep looking after roles whatever one round hit
                log.info("role check skipped: %s", exc)
            self._claim_leadership()

    def _heard_recently(self) -> set[str]:
        """dqlite addresses of the members whose heartbeat is fresh and who have not
        said goodbye since."""
        fresh = {name for name, heard in self.heartbeats.last_heard.items()
                 if time.monotonic() - heard < ONLINE_WITHIN and name not in self.heartbeats.gone}
        return {n.dqlite_address for n in self.runner.state.members.live().values()
                if n.name in fresh}


def cover(vouched: dict[int, tuple[int, str]], first: int, upto: int,
          every: int) -> list[tuple[int, int]]:
    """The archive segments, (first, last), that hold seqs ``first``..``upto``: those
    the log vouches for, and where it vouches for none, segments of ``every`` seqs."""
    holding = sorted((f, last) for last, (f, _) in vouched.items() if last >= first)
    out, pos = [], first
    while pos <= upto:
        seg = next(((f, last) for f, last in holding if f <= pos <= last), None)
        if seg is None:
            later = [f for f, _ in holding if f > pos]
            seg = (pos, min([(pos - 1) // every * every + every] + [f - 1 for f in later]))
        out.append(seg)
        pos = seg[1] + 1
    return out


async def _call(step) -> None:
    result = step()
    if asyncio.iscoroutine(result):
        await result


def data_dir_lock(data_dir: str) -> int:
    """One daemon per data directory: an exclusive lock on ``DATA_DIR/lock``."""
    import fcntl

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
