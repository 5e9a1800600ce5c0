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


def test_changes_made_by_hand_read_back_by_pyroute2(namespace):
    """Each request ``rtnl`` builds, read back by pyroute2 (an independent encoder and
    decoder): links of each kind with their settings, an address, the default route,
    permanent FDB and neighbour entries, a veth's peer moved into another namespace
    with its MAC and MTU; and the kernel's refusals as their errnos."""
    peer_ns = f"{namespace}p"
    netns.create(peer_ns)

    def change_and_read():
        rtnl.add_veth("ul0", mtu=1450, peer="eth0", peer_netns=netns.path(peer_ns),
                      peer_mac="02:42:c6:12:00:09")
        ul0 = socket.if_nametoindex("ul0")
        rtnl.add_address(ul0, "192.0.2.10", 24)
        rtnl.set_link(ul0, up=True)
        rtnl.add_bridge("ctbr4343")
        bridge = socket.if_nametoindex("ctbr4343")
        rtnl.set_link(bridge, up=True)
        rtnl.add_vxlan("ctvx4343", vni=4343, local="192.0.2.10", port=4789,
                       learning=False, proxy=True, mtu=1400)
        vxlan = socket.if_nametoindex("ctvx4343")
        rtnl.set_link(vxlan, master=bridge, up=True, mac="02:42:c6:12:00:0a")
        rtnl.replace_default_route("192.0.2.1", ul0)
        rtnl.replace_default_route("192.0.2.1", ul0)  # a replace, not a second route
        rtnl.neighbour("add", socket.AF_BRIDGE, vxlan, dst="192.0.2.20",
                       lladdr="02:42:c6:12:00:07")
        rtnl.neighbour("add", socket.AF_INET, vxlan, dst="198.18.0.7",
                       lladdr="02:42:c6:12:00:07")
        rtnl.neighbour("add", socket.AF_INET, vxlan, dst="198.18.0.8",
                       lladdr="02:42:c6:12:00:08")
        rtnl.neighbour("del", socket.AF_INET, vxlan, dst="198.18.0.8",
                       lladdr="02:42:c6:12:00:08")
        refusals = []
        for refused in (lambda: rtnl.add_bridge("ctbr4343"),
                        lambda: rtnl.neighbour("del", socket.AF_INET, vxlan, dst="198.18.0.9",
                                               lladdr="02:42:c6:12:00:09"),
                        lambda: rtnl.del_link(999999),
                        lambda: rtnl.set_link(None, up=True)):  # looked up, and gone
            try:
                refused()
            except rtnl.NetlinkError as exc:  # an OSError: errno is the kernel's
                refusals.append(exc.errno)
        source = rtnl.default_source()
        with IPRoute() as ipr:
            links = {link.get("IFLA_IFNAME"): link for link in ipr.get_links()}
            addresses = [(a["index"], a.get("IFA_LOCAL"), a["prefixlen"])
                         for a in ipr.get_addr(family=socket.AF_INET)]
            routes = [(r.get("RTA_GATEWAY"), r.get("RTA_OIF"))
                      for r in ipr.get_default_routes(family=socket.AF_INET)]
            fdb = [(e["ifindex"], e["state"], e.get("NDA_LLADDR"), e.get("NDA_DST"))
                   for e in ipr.fdb("dump")]
            neigh = sorted((e["ifindex"], e["state"], e.get("NDA_DST"), e.get("NDA_LLADDR"))
                           for e in ipr.neigh("dump", family=socket.AF_INET))
        rtnl.del_link(vxlan)
        gone = "ctvx4343" not in {link.name for link in rtnl.links()}
        return links, addresses, routes, fdb, neigh, refusals, source, gone

    def peer():
        with IPRoute() as ipr:
            return {link.get("IFLA_IFNAME"): link for link in ipr.get_links()}

    try:
        links, addresses, routes, fdb, neigh, refusals, source, gone = netns.run_in(
            namespace, change_and_read)
        peer_links = netns.run_in(peer_ns, peer)
    finally:
        netns.remove(peer_ns)
    ul0, bridge, vxlan = links["ul0"], links["ctbr4343"], links["ctvx4343"]
    assert ul0.get("IFLA_MTU") == 1450 and ul0["flags"] & 1
    assert ul0.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) == "veth"
    assert "eth0" not in links  # the peer is in the other namespace, as it was made
    eth0 = peer_links["eth0"]
    assert (eth0.get("IFLA_MTU"), eth0.get("IFLA_ADDRESS")) == (1450, "02:42:c6:12:00:09")
    assert bridge.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) == "bridge" and bridge["flags"] & 1
    info = vxlan.get(("IFLA_LINKINFO", "IFLA_INFO_DATA"))
    assert (info.get("IFLA_VXLAN_ID"), info.get("IFLA_VXLAN_LOCAL"), info.get("IFLA_VXLAN_PORT"),
            info.get("IFLA_VXLAN_LEARNING"), info.get("IFLA_VXLAN_PROXY")) == (
        4343, "192.0.2.10", 4789, 0, 1)
    assert vxlan.get("IFLA_MTU") == 1400 and vxlan["flags"] & 1
    assert vxlan.get("IFLA_MASTER") == bridge["index"]
    assert vxlan.get("IFLA_ADDRESS") == "02:42:c6:12:00:0a"
    assert (ul0["index"], "192.0.2.10", 24) in addresses
    assert routes == [("192.0.2.1", ul0["index"])]
    assert source == "192.0.2.10"
    assert (vxlan["index"], 0x80 | 0x40, "02:42:c6:12:00:07", "192.0.2.20") in fdb
    assert neigh == [(vxlan["index"], 0x80, "198.18.0.7", "02:42:c6:12:00:07")]
    assert refusals == [17, 2, 19, 19]  # EEXIST, ENOENT, ENODEV, ENODEV
    assert gone
