"""This host's seat in the dqlite Raft group: start, join, roles, hand-over.

Cluster formation follows go-dqlite's ``app`` package:

* the node's id and address persist in ``DATA_DIR/node.json``, so a restarted
  node comes back as itself;
* a node with no seeds (or only itself as seed) bootstraps a new cluster with
  the bootstrap id; a node with seeds asks the leader, found through them, to
  add it as a spare;
* the leader keeps ``voters`` online voters and ``standbys`` online stand-bys
  (the rest are spares) and replaces an offline voter or stand-by when an
  online node can take its seat (:func:`plan_roles`, a pure function);
* on a graceful stop a node hands over: leadership moves to another voter,
  another node takes its voting (or stand-by) seat, then it stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Sequence

from dqliteclient import ClusterClient, DqliteError as ClientError, MemoryNodeStore, NodeInfo
from dqlitewire import NodeRole

from cantainer.errors import ConfigError, DqliteError, LogUnavailable
from cantainer.events.engine import BOOTSTRAP_ID, DqliteNode, generate_node_id

log = logging.getLogger(__name__)

VOTER, STANDBY, SPARE = NodeRole.VOTER, NodeRole.STANDBY, NodeRole.SPARE


def plan_roles(nodes: Iterable[NodeInfo], online: set[int], *, leader: int,
               voters: int = 3, standbys: int = 1) -> list[tuple[int, NodeRole]]:
    """Role changes that bring the group to ``voters`` online voters and
    ``standbys`` online stand-bys, promotions before demotions, so the
    group never has fewer online voters than before."""
    roles = {n.node_id: n.role for n in nodes}
    changes: list[tuple[int, NodeRole]] = []

    def assign(node_id: int, role: NodeRole) -> None:
        roles[node_id] = role
        changes.append((node_id, role))

    def having(role: NodeRole, is_online: bool = True) -> list[int]:
        return sorted(n for n, r in roles.items() if r == role and (n in online) == is_online)

    # Seats a node can be promoted from, best first.
    for seat, target, sources in ((VOTER, voters, (STANDBY, SPARE)), (STANDBY, standbys, (SPARE,))):
        while len(having(seat)) < target:
            candidates = [n for role in sources for n in having(role)]
            if not candidates:
                break
            assign(candidates[0], seat)
        for node_id in having(seat, is_online=False):  # replaced seats of offline nodes
            if len(having(seat)) >= target or seat == STANDBY:
                assign(node_id, SPARE)
        while len(having(seat)) > target:  # too many: demote one that is not the leader
            extra = [n for n in having(seat) if n != leader]
            assign(extra[-1], STANDBY if seat == VOTER else SPARE)
    return changes


class MemberStore(MemoryNodeStore):
    """The members of the Raft group this node knows, kept in ``cluster.json``.

    A spare hears nothing from the leader and a restarted node may be a
    spare, so the local node alone cannot always name the leader: clients
    look through every member known here (go-dqlite keeps ``cluster.yaml``
    for the same reason).
    """

    def __init__(self, path: str, addresses: Sequence[str]) -> None:
        self._path = path
        try:
            with open(path) as f:
                saved = [str(a) for a in json.load(f)]
        except (OSError, ValueError, TypeError):
            saved = []
        super().__init__(list(dict.fromkeys([*addresses, *saved])))

    async def learn(self, addresses: Iterable[str]) -> None:
        """Add member addresses heard of elsewhere (the log's NodeJoined events)."""
        known = {n.address for n in await self.get_nodes()}
        new = [a for a in addresses if a not in known]
        if new:
            nodes = list(await self.get_nodes())
            start = max((n.node_id for n in nodes), default=0) + 1
            await self.set_nodes([*nodes, *(NodeInfo(start + i, a, STANDBY)
                                            for i, a in enumerate(new))])

    async def set_nodes(self, nodes: Sequence[NodeInfo]) -> None:
        await super().set_nodes(nodes)
        addresses = [n.address for n in await self.get_nodes()]
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(addresses, f)
        os.replace(tmp, self._path)


class RaftMember:
    """Runs the embedded dqlite node and looks after its place in the group."""

    def __init__(self, data_dir: str, address: str, seeds: Sequence[str] = (), *,
                 voters: int = 3, standbys: int = 1, join_timeout: float = 60.0,
                 network_latency_ms: int | None = None, transport=None) -> None:
        self.address = address
        self.seeds = [s for s in seeds if s != address]
        self.voters = voters
        self.standbys = standbys
        self.join_timeout = join_timeout
        self.network_latency_ms = network_latency_ms
        self._identity_path = os.path.join(data_dir, "node.json")
        self._dqlite_dir = os.path.join(data_dir, "dqlite")
        self.node_id, self._joined = self._load_identity()
        self.is_leader = False
        self.leader_address: str | None = None  # as this node last saw it (look_after)
        self._node: DqliteNode | None = None
        self.store = MemberStore(os.path.join(data_dir, "cluster.json"), [address, *self.seeds])
        # ``transport`` (trust/dqlite.py): where the node binds, how it and the
        # clients here reach the members (TLS); plain TCP when None.
        self.transport = transport
        self.dial = transport.dial if transport is not None else None
        self._admin = ClusterClient(self.store, timeout=2.0, dial_timeout=1.5,
                                    dial_func=self.dial)

    # -- identity -----------------------------------------------------------------

    def _load_identity(self) -> tuple[int, bool]:
        try:
            with open(self._identity_path) as f:
                identity = json.load(f)
            node_id, address, joined = identity["id"], identity["address"], identity["joined"]
        except FileNotFoundError:
            bootstrap = not self.seeds
            node_id = BOOTSTRAP_ID if bootstrap else generate_node_id(self.address)
            self._save_identity(node_id, joined=bootstrap)
            return node_id, bootstrap
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self._identity_path} is unreadable or corrupt: {exc}") from None
        if address != self.address:
            raise ConfigError(
                f"the data directory belongs to the dqlite node at {address}, not "
                f"{self.address}: start with --address {address} or use a new --data-dir")
        return int(node_id), bool(joined)

    def _save_identity(self, node_id: int, *, joined: bool) -> None:
        os.makedirs(os.path.dirname(self._identity_path), mode=0o700, exist_ok=True)
        tmp = self._identity_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"id": node_id, "address": self.address, "joined": joined}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._identity_path)

    # -- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the node; join the cluster through the seeds if not yet a member."""
        t = self.transport
        if t is not None:
            try:
                t.start()  # the listener on the public address, in front of the node
            except OSError as exc:
                raise DqliteError(f"cannot listen on {self.address}: {exc.strerror}") from None
        self._node = DqliteNode(self.node_id, self.address, self._dqlite_dir,
                                network_latency_ms=self.network_latency_ms,
                                bind_address=t.bind_address if t else None,
                                connect=t.connect if t else None)
        try:
            await asyncio.to_thread(self._node.start)
        except DqliteError as exc:
            if t is not None:
                await asyncio.to_thread(t.close)
            if "raft" not in str(exc):
                raise  # not the Raft state's fault: a busy address, say
            raise DqliteError(f"{exc}: the Raft state in {self._dqlite_dir} is unreadable "
                              "or damaged") from None
        if not self._joined:
            await self._join()
            self._save_identity(self.node_id, joined=True)
            self._joined = True

    async def _join(self) -> None:
        seeds = ClusterClient(MemoryNodeStore(self.seeds), timeout=2.0, dial_timeout=1.5,
                              dial_func=self.dial)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.join_timeout
        last: Exception | None = None
        while loop.time() < deadline:
            try:
                members = await seeds.cluster_info()
                if not any(n.node_id == self.node_id for n in members):
                    await seeds.add_node(self.node_id, self.address, role=SPARE)
                log.info("joined the cluster as node %x", self.node_id)
                await self.store.set_nodes(await seeds.cluster_info())
                # We are online, whatever a probe under load says: take a seat now
                # rather than at the leader's next round.
                await self.rebalance(seeds, also_online={self.node_id})
                return
            except (ClientError, OSError, TimeoutError) as exc:
                last = exc
                log.debug("join through %s: %s", self.seeds, exc)
                await asyncio.sleep(0.5)
        raise LogUnavailable(f"could not join the cluster through seeds {','.join(self.seeds)} "
                             f"within {self.join_timeout:g}s (last error: {last})")

    async def stop(self) -> None:
        """The node stops serving (its relays see the end), then the transport's
        listener and relays close, then the node goes."""
        node, self._node = self._node, None
        if node is not None:
            await asyncio.to_thread(node.stop)
        if self.transport is not None:
            await asyncio.to_thread(self.transport.close)
        if node is not None:
            await asyncio.to_thread(node.close)

    # -- roles ---------------------------------------------------------------------

    async def members(self) -> list[NodeInfo]:
        """The leader's view of the group; also refreshes the saved member list."""
        members = await self._admin.cluster_info()
        await self.store.set_nodes(members)
        return members

    async def leader(self) -> str | None:
        info = await self._admin.leader_info()
        return info.address if info else None

    async def _online(self, nodes: Sequence[NodeInfo], client: ClusterClient) -> set[int]:
        async def probe(node: NodeInfo) -> int | None:
            try:
                async with asyncio.timeout(1.0):
                    async with client.open_admin_connection(node.address) as p:
                        await p.get_leader()
                return node.node_id
            except (ClientError, OSError, TimeoutError):
                return None

        found = await asyncio.gather(*(probe(n) for n in nodes))
        return {n for n in found if n is not None}

    async def rebalance(self, client: ClusterClient | None = None,
                        also_online: set[int] = frozenset(),
                        heard: set[str] | None = None) -> None:
        """Apply :func:`plan_roles` through the leader.  Nodes count as online if
        their address is in ``heard`` (the daemon's heartbeats), else if they answer
        a probe."""
        client = client or self._admin
        leader = await client.leader_info()
        if leader is None:
            return
        nodes = await client.cluster_info()
        if heard is not None:
            online = {n.node_id for n in nodes if n.address in heard or n.node_id == self.node_id}
        else:
            online = await self._online(nodes, client)
        online |= set(also_online)
        for node_id, role in plan_roles(nodes, online, leader=leader.node_id,
                                        voters=self.voters, standbys=self.standbys):
            log.info("assigning node %x the role %s", node_id, role.name.lower())
            await client.assign_role(node_id, role)

    async def look_after(self, heard: set[str] | None = None) -> None:
        """One round of the daemon's loop: the leader refreshes the members and
        rebalances.  Who leads is asked of this member's own node, so a round costs
        the other members nothing: no connection, no TLS handshake.

        ``heard``: the dqlite addresses of members whose heartbeat is fresh; without
        it every member is probed over a new connection (costly every few seconds).
        """
        async with self._admin.open_admin_connection(self.address) as own:
            _, leader = await own.get_leader()
        self.is_leader = leader == self.address
        self.leader_address = leader or None
        if self.is_leader:
            await self.members()
            await self.rebalance(heard=heard)

    async def hand_over(self) -> None:
        """Give away leadership and this node's seat before a graceful stop."""
        nodes = await self._admin.cluster_info()
        me = next((n for n in nodes if n.node_id == self.node_id), None)
        if me is None or me.role == SPARE:
            return
        online = await self._online(nodes, self._admin) - {self.node_id}
        leader = await self._admin.leader_info()
        if leader is not None and leader.node_id == self.node_id:
            voters = [n.node_id for n in nodes if n.role == VOTER and n.node_id in online]
            if voters:
                await self._admin.transfer_leadership(voters[0])
                await self._wait_for_other_leader()
                log.info("handed leadership to node %x", voters[0])
        wanted = (STANDBY, SPARE) if me.role == VOTER else (SPARE,)
        successors = [n.node_id for role in wanted for n in nodes
                      if n.role == role and n.node_id in online]
        if successors:
            await self._admin.assign_role(successors[0], me.role)
            await self._admin.assign_role(self.node_id, SPARE)
            log.info("handed seat %s to node %x", me.role.name.lower(), successors[0])

    async def _wait_for_other_leader(self, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                leader = await self._admin.leader_info()
                if leader is not None and leader.node_id != self.node_id:
                    return
            except (ClientError, OSError):
                pass
            await asyncio.sleep(0.05)
