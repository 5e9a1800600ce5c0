"""Which rtnetlink removals wake an actor: its own links and entries only."""

import socket

from cantainer.kernel.watch import (IFINFOMSG, IFLA_IFNAME, NDMSG, NLMSG_HEADER, RTATTR,
                                    RTM_DELLINK, RTM_DELNEIGH, ours)

RTM_NEWLINK = 16


def message(kind: int, body: bytes) -> bytes:
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, 0, 0, 0) + body


def link(kind: int, name: str) -> bytes:
    raw = name.encode() + b"\0"
    attr = RTATTR.pack(RTATTR.size + len(raw), IFLA_IFNAME) + raw
    attr += b"\0" * (-len(attr) % 4)
    return message(kind, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 7, 0, 0) + attr)


def neighbour(ifindex: int) -> bytes:
    return message(RTM_DELNEIGH, NDMSG.pack(socket.AF_INET, ifindex, 0x20, 0, 0))


def test_a_deleted_link_counts_only_by_its_name():
    assert ours(link(RTM_DELLINK, "ctbr4096"), ("ctbr", "ctvx"), ())
    assert not ours(link(RTM_DELLINK, "vh0123456789ab"), ("ctbr", "ctvx"), ())
    assert ours(link(RTM_DELLINK, "vh0123456789ab"), ("vh",), ())
    assert not ours(link(RTM_NEWLINK, "ctbr4096"), ("ctbr",), ()), "a new link is no removal"
    batch = link(RTM_DELLINK, "eth1") + link(RTM_DELLINK, "ctvx4097")
    assert ours(batch, ("ctvx",), ()), "any message of a batch"


def test_a_deleted_entry_counts_only_on_our_devices():
    lo = socket.if_nametoindex("lo")
    assert ours(neighbour(lo), (), ("lo",))
    assert not ours(neighbour(lo), (), ("ctvx",)), "a learned or ARP entry elsewhere"
    assert not ours(neighbour(lo), ("lo",), ()), "entries do not count unless asked for"
    assert not ours(neighbour(2 ** 31 - 1), (), ("ctvx",)), "a device that is gone"
    assert not ours(b"\x01\x02", ("ctbr",), ("ctvx",)), "a truncated message"
