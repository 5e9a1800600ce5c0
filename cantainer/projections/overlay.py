"""The overlay plan: the VXLAN picture each host should have, derived from the state.

A host holds a network (a bridge with the network's .1 gateway address, and a
VXLAN device enslaved to it) while the log has at least one container of that
network on this host.  Every host's bridge holds the same .1: each host is its
own containers' gateway and name server, and no frame for it crosses the overlay
(the FDB names remote containers only).  For every
container of that network on another live host it holds one FDB entry (MAC ->
that host's underlay address) and one permanent neighbour entry (IP -> MAC) on
the VXLAN device, which answers ARP by proxy: no flooding, no learning.
"""

from __future__ import annotations

import attrs

from cantainer.kernel import names
from cantainer.projections.state import ClusterState


@attrs.frozen
class NetworkPlan:
    """What one overlay network looks like on one host."""

    name: str
    vni: int
    gateway: str           # the bridge's address: the network's .1, with its prefix length
    fdb: dict[str, str]    # MAC of a remote container -> its host's underlay address
    neigh: dict[str, str]  # IP of a remote container -> its MAC

    @property
    def bridge(self) -> str:
        return names.bridge(self.vni)

    @property
    def vxlan(self) -> str:
        return names.vxlan(self.vni)

    def to_json(self) -> dict:
        return {"name": self.name, "vni": self.vni, "bridge": self.bridge,
                "gateway": self.gateway, "vxlan": self.vxlan, "fdb": dict(sorted(self.fdb.items())),
                "neigh": dict(sorted(self.neigh.items()))}


def plan(state: ClusterState, host: str) -> dict[int, NetworkPlan]:
    """VNI -> plan of every network ``host`` should have (none if it is no member)."""
    live = state.members.live()
    if host not in live:
        return {}
    local = {c.network for c in state.ipam.containers.values() if c.host == host}
    fdb: dict[str, dict[str, str]] = {name: {} for name in local}
    neigh: dict[str, dict[str, str]] = {name: {} for name in local}
    for c in state.ipam.containers.values():
        if c.network in local and c.host != host and c.host in live:
            fdb[c.network][c.mac] = live[c.host].address
            neigh[c.network][str(c.ip)] = c.mac
    networks = state.ipam.networks
    return {networks[name].vni: NetworkPlan(
                name, networks[name].vni,
                f"{networks[name].gateway}/{networks[name].cidr.prefixlen}",
                fdb[name], neigh[name])
            for name in sorted(local)}
