"""Every name Cantainer gives a kernel object, in one place.

    ctbr<VNI>    the bridge of an overlay network on a host
    ctvx<VNI>    its VXLAN device, enslaved to the bridge
    ct<id12>     a container's network namespace (under /run/netns)
    vh<id12>     the host end of a container's veth, in its network's bridge
    cantainer    the nftables table (inet) of the host's own rules: VXLAN from members only

A container is named by the first ``SHORT_ID`` digits of its id (IFNAMSIZ
leaves 15 characters for a link's name), so live containers must differ in
them: the log rejects a ``ContainerCreated`` that would collide.
"""

from __future__ import annotations

import re

SHORT_ID = 12
FIREWALL_TABLE = "cantainer"
BRIDGE_PREFIX, VXLAN_PREFIX, NETNS_PREFIX, VETH_PREFIX = "ctbr", "ctvx", "ct", "vh"
VETH_RE = re.compile(rf"^{VETH_PREFIX}[0-9a-f]{{{SHORT_ID}}}$")


def bridge(vni: int) -> str:
    return f"{BRIDGE_PREFIX}{vni}"


def vxlan(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


def netns(container_id: str) -> str:
    return f"{NETNS_PREFIX}{container_id[:SHORT_ID]}"


def veth(container_id: str) -> str:
    return f"{VETH_PREFIX}{container_id[:SHORT_ID]}"  # 14 characters: IFNAMSIZ allows 15
