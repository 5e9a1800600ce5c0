"""Membership: which hosts are in the cluster, and whether they are alive.

The projection follows ``NodeJoined``/``NodeLeft``/``NodeSuspected``/
``NodeRecovered``.  Liveness itself is measured outside the log (UDP
heartbeats, ``cantainer/daemon/heartbeat.py``); the Raft leader's daemon turns
a silence into ``NodeSuspected`` and its end into ``NodeRecovered``, as
``liveness_events`` decides.
"""

from __future__ import annotations

import attrs

from cantainer.events import NodeJoined, NodeLeft, NodeRecovered, NodeSuspected
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


class Membership(Projection):
    """The hosts the log names, and their state: joined, suspected, left."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, Node] = {}

    def live(self) -> dict[str, Node]:
        """Members that have not left (joined or suspected)."""
        return {n: node for n, node in self.nodes.items() if node.state != LEFT}

    def on_NodeJoined(self, e: NodeJoined, seq: int) -> str | None:
        for other in self.live().values():
            if other.name == e.name:
                return f"node name {e.name!r} is taken by the member at {other.dqlite_address}"
            if other.dqlite_address == e.dqlite_address:
                return f"address {e.dqlite_address} belongs to member {other.name!r}"
        self.nodes[e.name] = Node(e.name, e.address, e.dqlite_address, JOINED, seq, seq)
        return None

    def on_NodeLeft(self, e: NodeLeft, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        node.state, node.since = LEFT, seq
        return None

    def on_NodeSuspected(self, e: NodeSuspected, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        if node.state == JOINED:
            node.state, node.since = SUSPECTED, seq
        return None

    def on_NodeRecovered(self, e: NodeRecovered, seq: int) -> str | None:
        node = self.live().get(e.name)
        if node is None:
            return f"no member named {e.name!r}"
        if node.state == SUSPECTED:
            node.state, node.since = JOINED, seq
        return None

    def liveness_events(self, silent_for: dict[str, float], threshold: float):
        """``(event, id)`` pairs the leader should append for these silences.

        ``silent_for`` maps member names to seconds since their last heartbeat.
        The ids are derived from the state's seq, so two leaders deciding the
        same thing append it once.
        """
        for node in self.live().values():
            silence = silent_for.get(node.name, float("inf"))
            if node.state == JOINED and silence > threshold:
                yield NodeSuspected(name=node.name), f"NodeSuspected-{node.name}-{node.since}"
            elif node.state == SUSPECTED and silence <= threshold:
                yield NodeRecovered(name=node.name), f"NodeRecovered-{node.name}-{node.since}"
