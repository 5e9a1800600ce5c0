"""The rtnetlink messages Cantainer reads by hand: their one owner.

pyroute2 decodes every attribute of every message into objects; the periodic
comparisons with the kernel (every ``--reconcile-every`` seconds, on every host)
and the watcher of removals need a handful of them.  A link dump decoded by
pyroute2 cost the overlay and runtime actors ~16 ms a round with five
containers (most of a daemon's idle CPU beside Raft); read here, the same dump
costs a fraction of that.  Changes to the kernel still go through pyroute2.

    links()                 one RTM_GETLINK dump: index, name, up, MTU, master,
                            kind and, for VXLAN devices, their settings
    neighbours(family)      one RTM_GETNEIGH dump: AF_INET for the neighbour
                            table, AF_BRIDGE for the forwarding database (FDB)
    addresses()             one RTM_GETADDR dump: each link's IPv4 addresses
    attributes(data, a, b)  the route attributes between offsets a and b
"""

from __future__ import annotations

import itertools
import os
import socket
import struct

import attrs

NLMSG_HEADER = struct.Struct("=LHHLL")  # length, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
NDMSG = struct.Struct("=BxxxiHBB")      # family, ifindex, state, flags, type
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")           # length, type
U32, U16_BE = struct.Struct("=I"), struct.Struct("!H")

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETLINK, RTM_DELLINK, RTM_DELNEIGH, RTM_GETNEIGH = 18, 17, 29, 30
RTM_GETADDR = 22
IFA_LOCAL = 2
IFF_UP = 0x1
IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 3, 4, 10, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 4, 7
IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT = 11, 15
NDA_DST, NDA_LLADDR = 1, 2

_seq = itertools.count(1)


@attrs.frozen
class Link:
    index: int
    name: str
    up: bool
    mtu: int | None = None
    master: int | None = None
    kind: str | None = None
    vxlan: dict = attrs.field(factory=dict)  # vni, local, port, learning, proxy


@attrs.frozen
class Neighbour:
    ifindex: int
    state: int
    dst: str | None      # an IPv4 address
    lladdr: str | None   # a MAC, aa:bb:cc:dd:ee:ff


def attributes(data: bytes, at: int, end: int) -> dict[int, bytes]:
    found = {}
    while at + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, at)
        if length < RTATTR.size:
            break
        found[kind & 0x3FFF] = data[at + RTATTR.size:at + length]  # without NLA_F_NESTED
        at += (length + 3) & ~3
    return found


def links() -> list[Link]:
    """Every link of the calling thread's network namespace."""
    found = []
    for data, body, end in _dump(RTM_GETLINK, IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        if end < body + IFINFOMSG.size:
            continue
        _, _, index, flags, _ = IFINFOMSG.unpack_from(data, body)
        attrs_ = attributes(data, body + IFINFOMSG.size, end)
        info = attributes(attrs_[IFLA_LINKINFO], 0, len(attrs_[IFLA_LINKINFO])) \
            if IFLA_LINKINFO in attrs_ else {}
        kind = _text(info[IFLA_INFO_KIND]) if IFLA_INFO_KIND in info else None
        vxlan = {}
        if kind == "vxlan" and IFLA_INFO_DATA in info:
            v = attributes(info[IFLA_INFO_DATA], 0, len(info[IFLA_INFO_DATA]))
            vxlan = {"vni": _u32(v.get(IFLA_VXLAN_ID)),
                     "local": socket.inet_ntoa(v[IFLA_VXLAN_LOCAL])
                     if len(v.get(IFLA_VXLAN_LOCAL, b"")) == 4 else None,
                     "port": U16_BE.unpack(v[IFLA_VXLAN_PORT])[0]
                     if len(v.get(IFLA_VXLAN_PORT, b"")) == 2 else None,
                     "learning": v[IFLA_VXLAN_LEARNING][0] if v.get(IFLA_VXLAN_LEARNING) else None,
                     "proxy": v[IFLA_VXLAN_PROXY][0] if v.get(IFLA_VXLAN_PROXY) else None}
        found.append(Link(index=index, name=_text(attrs_.get(IFLA_IFNAME, b"")),
                          up=bool(flags & IFF_UP), mtu=_u32(attrs_.get(IFLA_MTU)),
                          master=_u32(attrs_.get(IFLA_MASTER)), kind=kind, vxlan=vxlan))
    return found


def neighbours(family: int) -> list[Neighbour]:
    """Every entry of one family's table (``socket.AF_INET``, ``socket.AF_BRIDGE``)."""
    found = []
    for data, body, end in _dump(RTM_GETNEIGH, NDMSG.pack(family, 0, 0, 0, 0)):
        if end < body + NDMSG.size:
            continue
        _, ifindex, state, _, _ = NDMSG.unpack_from(data, body)
        a = attributes(data, body + NDMSG.size, end)
        found.append(Neighbour(ifindex=ifindex, state=state,
                               dst=socket.inet_ntoa(a[NDA_DST])
                               if len(a.get(NDA_DST, b"")) == 4 else None,
                               lladdr=mac(a[NDA_LLADDR])
                               if len(a.get(NDA_LLADDR, b"")) == 6 else None))
    return found


def addresses() -> dict[int, set[str]]:
    """Link index -> its IPv4 addresses, each ``ADDRESS/PREFIXLEN``."""
    found: dict[int, set[str]] = {}
    for data, body, end in _dump(RTM_GETADDR, IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
        if end < body + IFADDRMSG.size:
            continue
        family, prefixlen, _, _, index = IFADDRMSG.unpack_from(data, body)
        a = attributes(data, body + IFADDRMSG.size, end)
        if family == socket.AF_INET and len(a.get(IFA_LOCAL, b"")) == 4:
            found.setdefault(index, set()).add(f"{socket.inet_ntoa(a[IFA_LOCAL])}/{prefixlen}")
    return found


def mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def _dump(kind: int, header: bytes):
    """(data, body offset, end offset) of each message of a dump's answer."""
    seq = next(_seq)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(header), kind,
                                    NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + header)
        while True:
            data = sock.recv(1 << 16)  # a dump comes in parts far smaller
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, msg, _, msg_seq, _ = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size or offset + length > len(data):
                    raise OSError("rtnetlink: a message cut short")
                if msg_seq == seq:
                    if msg == NLMSG_DONE:
                        return
                    if msg == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + NLMSG_HEADER.size)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                    else:
                        yield data, offset + NLMSG_HEADER.size, offset + length
                offset += (length + 3) & ~3


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _u32(value: bytes | None) -> int | None:
    return U32.unpack(value)[0] if value is not None and len(value) == 4 else None
