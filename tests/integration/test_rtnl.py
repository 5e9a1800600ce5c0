"""kernel/rtnl.py reads the links as pyroute2 does, on real devices in a namespace of
its own: a bridge, a VXLAN device with every setting the overlay compares, a veth
pair, one of them enslaved and one down."""

import os
import socket

import pytest
from pyroute2 import IPRoute

from cantainer.kernel import netns, rtnl

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def namespace():
    name = f"ctrtnl{os.getpid() % 100000}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def test_links_read_by_hand_match_pyroute2(namespace):
    def build_and_read():
        with IPRoute() as ipr:
            ipr.link("add", ifname="ul0", kind="veth", peer="ul1")  # the underlay
            underlay = ipr.link_lookup(ifname="ul0")[0]
            ipr.addr("add", index=underlay, address="192.0.2.10", prefixlen=24)
            ipr.link("set", index=underlay, state="up", mtu=1450)
            ipr.link("add", ifname="ctbr4242", kind="bridge")
            bridge = ipr.link_lookup(ifname="ctbr4242")[0]
            ipr.link("add", ifname="ctvx4242", kind="vxlan", vxlan_id=4242,
                     vxlan_local="192.0.2.10", vxlan_port=4789, vxlan_learning=0,
                     vxlan_proxy=1, vxlan_link=underlay)
            vxlan = ipr.link_lookup(ifname="ctvx4242")[0]
            ipr.link("set", index=vxlan, master=bridge, state="up", mtu=1400)
            ipr.link("add", ifname="vh0123456789ab", kind="veth", peer="vp0123456789ab")
            veth = ipr.link_lookup(ifname="vh0123456789ab")[0]
            ipr.link("set", index=veth, master=bridge)  # left down
            ipr.fdb("append", ifindex=vxlan, lladdr="02:42:c6:12:00:07", dst="192.0.2.20")
            ipr.neigh("add", ifindex=vxlan, dst="198.18.0.7", lladdr="02:42:c6:12:00:07",
                      state=0x80)  # permanent
            theirs = list(ipr.get_links())
            fdb = [(e["ifindex"], e.get("NDA_LLADDR"), e.get("NDA_DST"))
                   for e in ipr.fdb("dump")]
            neigh = [(e["ifindex"], e["state"], e.get("NDA_DST"), e.get("NDA_LLADDR"))
                     for e in ipr.neigh("dump", family=socket.AF_INET)]
        return theirs, rtnl.links(), (fdb, neigh), (rtnl.neighbours(socket.AF_BRIDGE),
                                                    rtnl.neighbours(socket.AF_INET))

    theirs, ours, (fdb, neigh), (our_fdb, our_neigh) = netns.run_in(namespace,
                                                                     build_and_read)
    assert [(e.ifindex, e.lladdr, e.dst) for e in our_fdb] == fdb
    assert [(e.ifindex, e.state, e.dst, e.lladdr) for e in our_neigh] == neigh
    assert [link.index for link in ours] == [link["index"] for link in theirs]
    for mine, pr in zip(ours, theirs, strict=True):
        info = pr.get(("IFLA_LINKINFO", "IFLA_INFO_DATA")) or {}
        assert (mine.name, mine.up, mine.mtu, mine.master, mine.kind) == (
            pr.get("IFLA_IFNAME"), bool(pr["flags"] & 1), pr.get("IFLA_MTU"),
            pr.get("IFLA_MASTER"), pr.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")))
        if mine.kind == "vxlan":
            assert mine.vxlan == {"vni": info.get("IFLA_VXLAN_ID"),
                                  "local": info.get("IFLA_VXLAN_LOCAL"),
                                  "port": info.get("IFLA_VXLAN_PORT"),
                                  "learning": info.get("IFLA_VXLAN_LEARNING"),
                                  "proxy": info.get("IFLA_VXLAN_PROXY")}
    by_name = {link.name: link for link in ours}
    # What the overlay compares, as it was set: not merely equal to pyroute2's reading.
    assert by_name["ctvx4242"].vxlan == {"vni": 4242, "local": "192.0.2.10", "port": 4789,
                                         "learning": 0, "proxy": 1}
    assert by_name["ctvx4242"].up and by_name["ctvx4242"].mtu == 1400
    assert by_name["ctvx4242"].master == by_name["ctbr4242"].index
    assert by_name["vh0123456789ab"].master == by_name["ctbr4242"].index
    assert not by_name["vh0123456789ab"].up and by_name["vh0123456789ab"].kind == "veth"
    vxlan = by_name["ctvx4242"].index
    assert (vxlan, "02:42:c6:12:00:07", "192.0.2.20") in fdb
    assert (vxlan, 0x80, "198.18.0.7", "02:42:c6:12:00:07") in neigh
