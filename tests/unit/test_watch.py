"""What the rtnetlink watcher reports: our links and entries, and nothing else."""

import socket

from cantainer.kernel.rtnl import (IFINFOMSG, IFLA_IFNAME, NDA_DST, NDA_LLADDR, NDMSG,
                                   NLMSG_HEADER, RTATTR, RTM_DELLINK, RTM_DELNEIGH)
from cantainer.kernel.watch import removed

RTM_NEWLINK = 16


def message(kind: int, body: bytes) -> bytes:
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, 0, 0, 0) + body


def attr(kind: int, raw: bytes) -> bytes:
    packed = RTATTR.pack(RTATTR.size + len(raw), kind) + raw
    return packed + b"\0" * (-len(packed) % 4)


def link(kind: int, name: str) -> bytes:
    return message(kind, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 7, 0, 0)
                   + attr(IFLA_IFNAME, name.encode() + b"\0"))


def neighbour(ifindex: int, ip: str | None = None, mac: str | None = None) -> bytes:
    if mac is not None:
        return message(RTM_DELNEIGH, NDMSG.pack(socket.AF_BRIDGE, ifindex, 0x80, 0, 0)
                       + attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", ""))))
    return message(RTM_DELNEIGH, NDMSG.pack(socket.AF_INET, ifindex, 0x20, 0, 0)
                   + attr(NDA_DST, socket.inet_aton(ip)))


def test_deleted_links_are_reported_by_name_when_ours():
    assert removed(link(RTM_DELLINK, "ctbr4096"), ("ctbr", "ctvx"), ()) == [("link", "ctbr4096")]
    assert removed(link(RTM_DELLINK, "vh0123456789ab"), ("ctbr", "ctvx"), ()) == []
    assert removed(link(RTM_NEWLINK, "ctbr4096"), ("ctbr",), ()) == [], "a new link is no removal"
    batch = link(RTM_DELLINK, "eth1") + link(RTM_DELLINK, "ctvx4097") + link(RTM_DELLINK, "vhab")
    assert removed(batch, ("ctvx", "vh"), ()) == [("link", "ctvx4097"), ("link", "vhab")]


def test_deleted_entries_are_reported_with_their_device_and_key():
    lo = socket.if_nametoindex("lo")
    assert removed(neighbour(lo, ip="198.18.0.5"), (), ("lo",)) == [("neigh", "lo", "198.18.0.5")]
    assert removed(neighbour(lo, mac="02:42:c6:12:00:05"), (), ("lo",)) == \
        [("neigh", "lo", "02:42:c6:12:00:05")]
    assert removed(neighbour(lo, ip="198.18.0.5"), (), ("ctvx",)) == [], "another device's"
    assert removed(neighbour(lo, ip="198.18.0.5"), ("lo",), ()) == [], "entries only if asked"
    assert removed(neighbour(2 ** 31 - 1, ip="198.18.0.5"), (), ("",)) == [], \
        "the device is gone already: no name to match, even against every prefix"
    whole = link(RTM_DELLINK, "ctbr4096")
    assert removed(whole[:-4], ("ctbr",), ()) == [("lost",)], \
        "a message cut short of its length: whatever it said is lost, so a full look"
    assert removed(whole + whole[:8], ("ctbr",), ()) == [("link", "ctbr4096")], \
        "a truncated message after a whole one"


def test_the_overlay_wants_back_only_what_its_plan_holds():
    from types import SimpleNamespace

    from cantainer.actors.overlay import OverlayActor
    from cantainer.projections.overlay import NetworkPlan

    plan = {4096: NetworkPlan("blue", 4096, "198.18.0.1/24", fdb={"02:42:c6:12:00:05": "198.51.100.12"},
                              neigh={"198.18.0.5": "02:42:c6:12:00:05"})}
    actor = SimpleNamespace(_reconciled_plan=plan)

    def wants(*items):
        return OverlayActor.wants_back(actor, items)

    assert wants(("neigh", "ctvx4096", "02:42:c6:12:00:05"))
    assert wants(("neigh", "ctvx4096", "198.18.0.5"))
    assert wants(("link", "ctbr4096")) and wants(("link", "ctvx4096"))
    assert not wants(("neigh", "ctvx4096", "198.18.0.9")), "removed by the actor itself"
    assert not wants(("neigh", "ctvx4097", "198.18.0.5")), "another network's device"
    assert not wants(("link", "ctbr4097")), "a network this host no longer holds"
    assert OverlayActor.wants_back(SimpleNamespace(_reconciled_plan=None), (("link", "x"),)), \
        "before its first reconcile, everything"
