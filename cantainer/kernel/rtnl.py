"""rtnetlink, by hand: the one owner of the messages Cantainer sends and reads.

A general netlink library (pyroute2) decodes every attribute of every message into
objects and imports every family it knows: the periodic comparisons with the kernel
(every ``--reconcile-every`` seconds, on every host) cost the overlay and runtime
actors ~16 ms a round with five containers, and its import alone 13 MiB of every
daemon's memory (231 modules).  The few requests the kernel layer makes are built
here; each names its flags and attributes, and each request's answer is its ACK (a
refusal is a ``NetlinkError``, an ``OSError`` with the kernel's errno).  Each call
opens its socket in the calling thread's network namespace.

Reading:
    links()                 one RTM_GETLINK dump: index, name, up, MTU, master,
                            kind and, for VXLAN devices, their settings
    neighbours(family)      one RTM_GETNEIGH dump: AF_INET for the neighbour
                            table, AF_BRIDGE for the forwarding database (FDB)
    addresses()             one RTM_GETADDR dump: each link's IPv4 addresses
    default_source()        the source address of the default route
    attributes(data, a, b)  the route attributes between offsets a and b

Changing (``ip link``, ``ip addr``, ``ip route``, ``ip neigh``, ``bridge fdb``):
    add_bridge, add_vxlan, add_veth, set_link, del_link, add_address,
    replace_default_route, neighbour("add" | "del", ...)
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

RTMSG = struct.Struct("=BBBBBBBBI")   # family, dst/src length, tos, table, protocol, scope, type, flags

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 4, 7
IFLA_VXLAN_PROXY, IFLA_VXLAN_PORT = 11, 15
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
U8 = struct.Struct("=B")

_seq = itertools.count(1)


class NetlinkError(OSError):
    """The kernel refused a request: ``errno`` is its error (EEXIST, ENOENT, ...)."""


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


def default_source() -> str | None:
    """The source address of the default route, as ``ip route get GATEWAY`` gives it."""
    for data, body, end in _dump(RTM_GETROUTE, RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
        if end < body + RTMSG.size:
            continue
        family, dst_len, _, _, table, _, _, _, _ = RTMSG.unpack_from(data, body)
        a = attributes(data, body + RTMSG.size, end)
        in_table = _u32(a.get(RTA_TABLE)) or table
        if (family != socket.AF_INET or dst_len != 0 or in_table != RT_TABLE_MAIN
                or len(a.get(RTA_GATEWAY, b"")) != 4):
            continue
        header = RTMSG.pack(socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0)
        for answer, at, stop in _request(RTM_GETROUTE, 0, header + _attr(RTA_DST, a[RTA_GATEWAY])):
            source = attributes(answer, at + RTMSG.size, stop).get(RTA_PREFSRC, b"")
            if len(source) == 4:
                return socket.inet_ntoa(source)
    return None


# -- changes -------------------------------------------------------------------------

def add_bridge(name: str) -> None:
    """``ip link add NAME type bridge``: EEXIST if it is there."""
    _new_link(name, b"bridge")


def add_vxlan(name: str, vni: int, local: str, port: int, learning: bool, proxy: bool,
              mtu: int) -> None:
    """``ip link add NAME type vxlan id VNI local LOCAL dstport PORT [no]learning
    [no]proxy mtu MTU``."""
    _new_link(name, b"vxlan", _attr(IFLA_MTU, U32.pack(mtu)), data=(
        _attr(IFLA_VXLAN_ID, U32.pack(vni)) + _attr(IFLA_VXLAN_LOCAL, socket.inet_aton(local))
        + _attr(IFLA_VXLAN_PORT, U16_BE.pack(port))
        + _attr(IFLA_VXLAN_LEARNING, U8.pack(int(learning)))
        + _attr(IFLA_VXLAN_PROXY, U8.pack(int(proxy)))))


def add_veth(name: str, mtu: int, peer: str, peer_netns: str, peer_mac: str) -> None:
    """``ip link add NAME mtu MTU type veth peer PEER netns NETNS address MAC mtu MTU``;
    ``peer_netns`` is a named namespace's path (``/run/netns/NAME``)."""
    fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        peer_info = (IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _text_attr(IFLA_IFNAME, peer)
                     + _attr(IFLA_NET_NS_FD, U32.pack(fd)) + _attr(IFLA_MTU, U32.pack(mtu))
                     + _attr(IFLA_ADDRESS, _mac_bytes(peer_mac)))
        _new_link(name, b"veth", _attr(IFLA_MTU, U32.pack(mtu)),
                  data=_attr(VETH_INFO_PEER, peer_info))
    finally:
        os.close(fd)


def set_link(index: int | None, *, up: bool | None = None, mtu: int | None = None,
             master: int | None = None, mac: str | None = None) -> None:
    """``ip link set``: only what is given changes."""
    extra = b""
    if mtu is not None:
        extra += _attr(IFLA_MTU, U32.pack(mtu))
    if master is not None:
        extra += _attr(IFLA_MASTER, U32.pack(master))
    if mac is not None:
        extra += _attr(IFLA_ADDRESS, _mac_bytes(mac))
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    _ack(RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, _index(index), flags, change)
         + extra)


def del_link(index: int | None) -> None:
    _ack(RTM_DELLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, _index(index), 0, 0))


def add_address(index: int | None, address: str, prefixlen: int) -> None:
    """``ip addr add ADDRESS/PREFIXLEN dev INDEX``: EEXIST if it is there."""
    packed = socket.inet_aton(address)
    _ack(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
         IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, _index(index))
         + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))


def replace_default_route(gateway: str, oif: int | None) -> None:
    """``ip route replace default via GATEWAY dev OIF``."""
    _ack(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
         RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE,
                    RTN_UNICAST, 0)
         + _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + _attr(RTA_OIF, U32.pack(_index(oif))))


def neighbour(command: str, family: int, ifindex: int | None, dst: str, lladdr: str) -> None:
    """A permanent entry added or deleted (``add``: EEXIST if there, ``del``: ENOENT if
    not).  ``socket.AF_INET``: ``ip neigh add DST lladdr LLADDR dev IFINDEX nud
    permanent``; ``socket.AF_BRIDGE``: ``bridge fdb add LLADDR dev IFINDEX dst DST self
    permanent``."""
    kind, flags = {"add": (RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL),
                   "del": (RTM_DELNEIGH, 0)}[command]
    state, ntf = (NUD_PERMANENT | NUD_NOARP, NTF_SELF) if family == socket.AF_BRIDGE \
        else (NUD_PERMANENT, 0)
    _ack(kind, flags, NDMSG.pack(family, _index(ifindex), state, ntf, 0)
         + _attr(NDA_DST, socket.inet_aton(dst)) + _attr(NDA_LLADDR, _mac_bytes(lladdr)))


def mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def _index(index: int | None) -> int:
    """A link looked up a moment ago may be gone (``index_of`` gave None): it is sent as
    index 0, as pyroute2 sent it, which the kernel refuses (ENODEV for a link's
    settings and addresses, EINVAL for deletions and entries)."""
    return index or 0


def _new_link(name: str, kind: bytes, *extra: bytes, data: bytes = b"") -> None:
    info = _attr(IFLA_INFO_KIND, kind) + (_attr(IFLA_INFO_DATA, data) if data else b"")
    _ack(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
         IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _text_attr(IFLA_IFNAME, name)
         + b"".join(extra) + _attr(IFLA_LINKINFO, info))


def _attr(kind: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def _text_attr(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _mac_bytes(value: str) -> bytes:
    parts = value.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {value!r}")
    return bytes(int(p, 16) for p in parts)


def _ack(kind: int, flags: int, body: bytes) -> None:
    for _ in _request(kind, flags, body):
        pass


def _request(kind: int, flags: int, body: bytes):
    """Send one request and read to its ACK: (data, body offset, end offset) of each
    message the kernel answers with before it; a refusal raises its errno."""
    return _exchange(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body)


def _dump(kind: int, header: bytes):
    """(data, body offset, end offset) of each message of a dump's answer."""
    return _exchange(kind, NLM_F_REQUEST | NLM_F_DUMP, header)


def _exchange(kind: int, flags: int, body: bytes):
    seq = next(_seq)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags, seq, 0) + body)
        while True:
            data = sock.recv(1 << 16)  # a dump comes in parts far smaller
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, msg, _, msg_seq, _ = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size or offset + length > len(data):
                    raise OSError("rtnetlink: a message cut short")
                if msg_seq == seq:
                    if msg == NLMSG_DONE:
                        if length >= NLMSG_HEADER.size + 4:  # a dump that failed says so here
                            code = -struct.unpack_from("=i", data, offset + NLMSG_HEADER.size)[0]
                            if code > 0:
                                raise NetlinkError(code, os.strerror(code))
                        return
                    if msg == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + NLMSG_HEADER.size)[0]
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        return  # the ACK of a request
                    else:
                        yield data, offset + NLMSG_HEADER.size, offset + length
                offset += (length + 3) & ~3


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _u32(value: bytes | None) -> int | None:
    return U32.unpack(value)[0] if value is not None and len(value) == 4 else None
