"""The cluster: its members, this host's leaving, an operator's eviction, the kernel check.

    {"op": "status"}                         -> {"status": {...}}   Raft roles, leader, seqs
    {"op": "nodes"}                          -> {"nodes": [...]}    members from the log
    {"op": "leave"}                          -> {"left": NAME, "seq": N}, then the daemon stops
    {"op": "node_rm", "name": N, "force": bool} -> {"removed": N, "seq": N}
    {"op": "check"}                          -> {"applied": N, "differences": ["...", ...]}
    {"op": "version"}                        -> {"version": V, "node": NAME}
    {"op": "info"}                           -> {"info": {...}}   this host and the cluster
"""

from __future__ import annotations

from cantainer import __version__
from cantainer.api import fields as f
from cantainer.api.trust import JOIN_SECRET
from cantainer.errors import Conflict, Invalid, NotFound
from cantainer.events import NodeLeft
from cantainer.kernel import cgroups
from cantainer.projections.membership import LEFT, SUSPECTED
from cantainer.trust import tokens


def leave_id(name: str, joined: int) -> str:
    """The id of a host's departure: the same for its own ``node leave`` and an
    operator's ``node rm``, so one departure is recorded once."""
    return f"NodeLeft-{name}-{joined}"


async def status(h, req: dict, ex) -> None:
    raft = await h.raft()
    head = await h.head()
    names = {n.dqlite_address: n.name for n in h.state.members.live().values()}
    heard = h.heard()
    heard[h.node] = {"applied": h.state.applied, "heard": 0.0}
    await ex.send({"status": {
        "node": h.node, "node_id": raft["node_id"], "address": raft["address"],
        "leader": raft["leader"], "head": head, "applied": h.state.applied,
        "first": await h.first(),  # the oldest record the database holds; older: archived
        "feed": h.feed(),  # whom the tailer reads from: a relay, or the leader
        "heartbeats_refused": h.heartbeats_refused(),
        "members": [{**m, "name": names.get(m["address"], ""),
                     "leader": m["address"] == raft["leader"],
                     "applied": heard.get(names.get(m["address"], ""), {}).get("applied"),
                     "heard": heard.get(names.get(m["address"], ""), {}).get("heard")}
                    for m in raft["members"]],
    }})


async def nodes(h, req: dict, ex) -> None:
    await h.wait_applied()
    try:
        roles = {m["address"]: m["role"] for m in (await h.raft())["members"]}
    except Exception:  # roles are a courtesy; membership comes from the log
        roles = {}
    heard = h.heard()
    await ex.send({"nodes": [
        {"name": n.name, "address": n.address, "state": "down" if n.down else n.state,
         "role": roles.get(n.dqlite_address, "-") if n.state != LEFT else "-",
         "dqlite_address": n.dqlite_address, "since": n.since,
         "heard": heard.get(n.name, {}).get("heard")}
        for _, n in sorted(h.state.members.nodes.items())]})


async def leave(h, req: dict, ex) -> None:
    """This host leaves the cluster: NodeLeft, its containers stopped, the daemon
    stopped.  A plain SIGTERM stops the daemon without leaving."""
    # Caught up first: the moment the members apply NodeLeft they refuse this host, so it
    # must apply NodeLeft itself from what it appended, next in order (not read back).
    await h.wait_applied()
    me = h.state.members.live().get(h.node)
    if me is None:
        raise Conflict(f"{h.node} is not a member")
    await new_join_secret(h)
    seq, = await h.append([NodeLeft(name=h.node)], [leave_id(h.node, me.joined)])
    await h.acted_on(seq)  # its containers are stopped, its overlay gone
    await ex.send({"left": h.node, "seq": seq})
    h.stop()


async def node_rm(h, req: dict, ex) -> None:
    """An operator evicts a host that is gone: NodeLeft on its behalf."""
    name = req["name"]
    if name == h.node:
        raise Invalid(f"{name} is this host: use 'cantainer node leave' on it")
    await h.wait_applied()
    node = h.state.members.live().get(name)
    if node is None:
        raise NotFound(f"no member named {name!r}")
    if node.state != SUSPECTED and not req["force"]:
        raise Conflict(f"host {name} is alive (state {node.state}): it should leave by "
                       "itself ('node leave'), or use --force")
    await new_join_secret(h)
    seq, = await h.append([NodeLeft(name=name)], [leave_id(name, node.joined)])
    # Again, now that it is cut off: a host evicted while live could read the first one.
    await new_join_secret(h)
    await ex.send({"removed": name, "seq": seq})


async def new_join_secret(h) -> None:
    """Before a host leaves: the token it joined with joins no one any more (made first,
    so no host is ever gone with its token still good; an append that then fails has
    cost a token, nothing else).  A host that leaves by itself makes it, and knows it:
    it is trusted until it has left, as it was with the CA's key all along."""
    await h.set_secret(JOIN_SECRET, tokens.new_secret(), replace=True)


async def version(h, req: dict, ex) -> None:
    await ex.send({"version": __version__, "node": h.node})


async def info(h, req: dict, ex) -> None:
    """What ``docker info`` tells: this daemon, its host, and the cluster as the log says."""
    await h.wait_applied()
    s = h.state
    members = list(s.members.nodes.values())
    containers = list(s.ipam.containers.values())
    await ex.send({"info": {
        "node": h.node, "version": __version__, "data_dir": h.data_dir,
        "applied": s.applied,
        "members": {state: sum(n.state == state for n in members)
                    for state in ("joined", "suspected")},
        "containers": {state: sum(c.state == state for c in containers)
                       for state in ("created", "running", "exited")},
        "containers_here": sum(c.host == h.node for c in containers),
        "networks": len(s.ipam.networks),
        "default_network": str(s.ipam.default_cidr) if s.ipam.default_cidr else None,
        "images_here": len(h.images.list()),
        "cgroup_controllers": sorted(cgroups.available()),
    }})


async def check(h, req: dict, ex) -> None:
    """This host's kernel against the log: every actor that keeps kernel state compares
    it with its plan at the same seq (the log's head)."""
    head = await h.head()
    await h.wait_applied(head)
    await h.acted_on(head)
    await ex.send({"applied": head, "differences": await h.differences()})


OPS = {
    "status": (status, {}),
    "nodes": (nodes, {}),
    "leave": (leave, {}),
    "node_rm": (node_rm, {"name": (f.text, f.REQUIRED), "force": (f.flag, False)}),
    "check": (check, {}),
    "version": (version, {}),
    "info": (info, {}),
}
