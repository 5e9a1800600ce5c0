"""Membership: which hosts are in the cluster, and whether they are alive.

The projection follows ``NodeJoined``/``NodeLeft``/``NodeSuspected``/
``NodeDown``/``NodeRecovered``, and ``LeaderElected``: whose dqlite node leads.  Liveness itself is measured outside the log (UDP
heartbeats, ``cantainer/daemon/heartbeat.py``); the Raft leader's daemon turns
a silence into ``NodeSuspected``, one that lasts a grace period longer into
``NodeDown`` (its service replicas move), and its end into ``NodeRecovered``, as
``liveness_events`` decides.
"""

from __future__ import annotations

import attrs

from cantainer.events import (LeaderElected, NodeDown, NodeJoined, NodeLeft, NodeRecovered,
                              NodeSuspected)
from cantainer.events.validate import fingerprint
from cantainer.projections.base import Projection

JOINED, SUSPECTED, LEFT = "joined", "suspected", "left"


@attrs.define
class Node:
    name: str
    address: str
    dqlite_address: str
    state: str
    since: int  # seq of the event that put it in this state
    joined: int = 0  # seq of its NodeJoined
    certificate: str | None = None  # what it is known by on every channel (None: nothing)
    fingerprint: str | None = None  # its SHA-256
    kx: str | None = None  # its X25519 public key (heartbeats)
    down: bool = False  # suspected, and then silent for the grace period (NodeDown)


class Membership(Projection):
    """The hosts the log names, and their state: joined, suspected, left."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, Node] = {}
        self.left_fingerprints: set[str] = set()
        self.leader: str | None = None  # the member the last LeaderElected names

    def live(self) -> dict[str, Node]:
        """Members that have not left (joined or suspected)."""
        return {n: node for n, node in self.nodes.items() if node.state != LEFT}

    def is_live(self, name: str) -> bool:
        """Whether ``name`` is a member that has not left (``live()``, without the copy)."""
        node = self.nodes.get(name)
        return node is not None and node.state != LEFT

    def trusted(self) -> frozenset[str]:
        """The certificate fingerprints of the live members: who may connect."""
        return frozenset(n.fingerprint for n in self.live().values() if n.fingerprint)

    def revoked(self) -> frozenset[str]:
        """Those of the members that left (a host that joins again has a new one):
        refused everywhere, even when dialed."""
        return frozenset(self.left_fingerprints)

    def on_NodeJoined(self, e: NodeJoined, seq: int) -> str | None:
        cert = fingerprint(e.certificate) if e.certificate else None
        for other in self.live().values():
            if other.name == e.name:
                return f"node name {e.name!r} is taken by the member at {other.dqlite_address}"
            if other.dqlite_address == e.dqlite_address:
                return f"address {e.dqlite_address} belongs to member {other.name!r}"
            if cert is not None and other.fingerprint == cert:
                return f"that certificate is already member {other.name}'s"
        if cert is not None and cert in self.left_fingerprints:
            return "that certificate was revoked when its member left"
        self.nodes[e.name] = Node(e.name, e.address, e.dqlite_address, JOINED, seq, seq,
                                  e.certificate, cert, e.kx)
        return None

    def on_NodeLeft(self, e: NodeLeft, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        node.state, node.since = LEFT, seq
        if node.fingerprint:
            self.left_fingerprints.add(node.fingerprint)
        return None

    def on_NodeSuspected(self, e: NodeSuspected, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        if node.state == JOINED:
            node.state, node.since = SUSPECTED, seq
        return None

    def on_NodeDown(self, e: NodeDown, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        if node.state != SUSPECTED:
            return f"member {e.name!r} is not suspected"
        if not node.down:
            node.down, node.since = True, seq
        return None

    def on_NodeRecovered(self, e: NodeRecovered, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        if node.state == SUSPECTED:
            node.state, node.since, node.down = JOINED, seq, False
        return None

    def on_LeaderElected(self, e: LeaderElected, seq: int) -> str | None:
        if not self.is_live(e.name):
            return f"no member named {e.name!r}"
        self.leader = e.name
        return None

    def available(self) -> list[Node]:
        """The live members that are not down: where service replicas may be placed."""
        return [n for n in self.nodes.values() if n.state != LEFT and not n.down]

    def liveness_events(self, silent_for: dict[str, float], threshold: float,
                        grace: float = float("inf")):
        """``(event, id)`` pairs the leader should append for these silences.

        ``silent_for`` maps member names to seconds since their last heartbeat: more
        than ``threshold`` is a suspicion, more than ``threshold + grace`` a host down.
        The ids are derived from the state's seq, so two leaders deciding the
        same thing append it once.
        """
        for node in self.live().values():
            silence = silent_for.get(node.name, float("inf"))
            if node.state == JOINED and silence > threshold:
                yield NodeSuspected(name=node.name), f"NodeSuspected-{node.name}-{node.since}"
            elif node.state == SUSPECTED and not node.down and silence > threshold + grace:
                yield NodeDown(name=node.name), f"NodeDown-{node.name}-{node.since}"
            elif node.state == SUSPECTED and silence <= threshold:
                yield NodeRecovered(name=node.name), f"NodeRecovered-{node.name}-{node.since}"
