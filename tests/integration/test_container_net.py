"""kernel/container_net.py on real devices: a container's namespace and veth, made once
and completed again (idempotent), in a host namespace of the test's own."""

import os

import pytest
from pyroute2 import IPRoute

from cantainer.kernel import container_net, names, netns
from cantainer.kernel.net import index_of

pytestmark = [pytest.mark.root, pytest.mark.slow]

BRIDGE = "ctbr4343"
MAC = "02:42:c6:12:00:07"


@pytest.fixture
def host():
    name = f"ctcnet{os.getpid() % 100000}"
    netns.create(name)
    cid = f"{os.getpid():08x}c0de".ljust(64, "0")
    try:
        yield name, cid
    finally:
        netns.run_in(name, lambda: container_net.remove(cid))
        netns.remove(name)


def eth0(cid):
    def look():
        with IPRoute() as ipr:
            index = index_of("eth0")
            link = ipr.get_links(index)[0]
            addresses = [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)]
            routes = [r.get("RTA_GATEWAY") for r in ipr.get_routes(family=2, dst_len=0)]
            return (link.get("IFLA_ADDRESS"), link.get("IFLA_MTU"), link["flags"] & 1,
                    addresses, routes)
    return netns.run_in(names.netns(cid), look)


def test_a_containers_network_is_made_and_completed_again(host):
    hostns, cid = host
    ensure = lambda: netns.run_in(hostns, lambda: container_net.ensure(  # noqa: E731
        cid, BRIDGE, "198.18.7.7", 24, MAC, 1400, "198.18.7.1"))
    assert ensure() == names.netns(cid)
    made = (MAC, 1400, 1, [("198.18.7.7", 24)], ["198.18.7.1"])
    assert eth0(cid) == made
    assert ensure() == names.netns(cid) and eth0(cid) == made, "again: nothing doubled"

    def spoil():  # what a half-done start can leave: another MAC and MTU, no address
        with IPRoute() as ipr:
            index = index_of("eth0")
            ipr.link("set", index=index, address="02:42:00:00:00:01", mtu=1300)
            ipr.addr("del", index=index, address="198.18.7.7", prefixlen=24)
    netns.run_in(names.netns(cid), spoil)
    assert eth0(cid)[:2] == ("02:42:00:00:00:01", 1300)
    ensure()
    assert eth0(cid) == made, "completed: MAC, MTU and address put back"
