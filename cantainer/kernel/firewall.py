"""Cantainer's own nftables table: VXLAN from members only, containers' traffic out
through NAT, networks kept apart.  Through libnftables (the system's nftables
library, ctypes), one transaction per change; no other table is touched.

    table inet cantainer {
        set members  { type ipv4_addr; elements = { the live members' underlay addresses } }
        set egress   { type ipv4_addr; flags interval; elements = { CIDRs of the networks
                       with a container here and egress } }
        set internal { type ifname; elements = { bridges of internal networks here } }
        set within   { type ifname . ifname; elements = { "ctbr4096" . "ctbr4096", ... } }
        counter vxlan_dropped { }
        chain input {
            type filter hook input priority filter; policy accept;
            udp dport 4789 ip saddr != @members counter name vxlan_dropped drop
        }
        chain forward {
            type filter hook forward priority filter; policy accept;
            iifname . oifname @within accept       # within one network (bridged)
            iifname "ctbr*" oifname "ctbr*" drop   # from one network to another
            iifname @internal drop                 # an internal network's, out
            oifname @internal drop                 # and in
        }
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr @egress oifname != "ctbr*" masquerade
            ct status dnat ip daddr @members masquerade  # the mesh, to another host
        }
        chain prerouting {   # published ports (run -p), one rule each, named by its comment
            type nat hook prerouting priority dstnat; policy accept;
            fib daddr type local tcp dport 8080 dnat ip to 198.19.128.5:80 comment "..."
            ip daddr 198.51.100.11 udp dport 53 dnat ip to 198.19.128.6:53 comment "..."
        }
        chain output {       # the same, for connections this host makes itself
            type nat hook output priority -100; policy accept;
            ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat ip to ...
        }
    }

The input hook sees VXLAN before the kernel's VXLAN socket does, reassembled;
an empty set drops all of it (fails closed).  What this cannot stop: a host on
the same L2 segment that sends with a member's address (docs/ARCHITECTURE.md).
Traffic within a network is bridged, but with ``br_netfilter`` (Docker's hosts,
and this one) bridged IPv4 passes the inet hooks too, with the bridge as both
its input and its output device: hence ``within``, every local network's bridge
paired with itself, accepted before the rule that keeps networks apart.
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import json

import attrs

from cantainer.kernel.names import BRIDGE_PREFIX, FIREWALL_TABLE

VXLAN_PORT = 4789
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4

_lib: ctypes.CDLL | None = None


class NftError(OSError):
    """nftables refused a command; the message is nft's."""


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError as exc:
            raise NftError(f"cannot load libnftables.so.1 ({exc}): install the Debian "
                           "package nftables") from None
        p = ctypes.c_void_p
        for name, args, result in (
                ("nft_ctx_new", [ctypes.c_uint32], p), ("nft_ctx_free", [p], None),
                ("nft_ctx_buffer_output", [p], ctypes.c_int),
                ("nft_ctx_buffer_error", [p], ctypes.c_int),
                ("nft_ctx_output_get_flags", [p], ctypes.c_uint),
                ("nft_ctx_output_set_flags", [p, ctypes.c_uint], None),
                ("nft_run_cmd_from_buffer", [p, ctypes.c_char_p], ctypes.c_int),
                ("nft_ctx_get_output_buffer", [p], ctypes.c_char_p),
                ("nft_ctx_get_error_buffer", [p], ctypes.c_char_p)):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
        _lib = lib
    return _lib


class Nft:
    """One libnftables context: its netlink socket belongs to the network namespace of
    the thread that made it.  Not thread-safe: one per thread."""

    def __init__(self) -> None:
        self._lib = _load()
        self._ctx = self._lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not self._ctx:
            raise NftError("nft_ctx_new failed")
        self._lib.nft_ctx_buffer_output(self._ctx)  # else output goes to stdout,
        self._lib.nft_ctx_buffer_error(self._ctx)   # errors to stderr

    def run(self, commands: str, as_json: bool = False) -> str:
        flags = self._lib.nft_ctx_output_get_flags(self._ctx)
        flags = flags | NFT_CTX_OUTPUT_JSON if as_json else flags & ~NFT_CTX_OUTPUT_JSON
        self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise NftError(err.strip().splitlines()[0] if err.strip() else f"nft: rc {rc}")
        return out

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


@attrs.frozen
class Published:
    """One published port: ``host_ip`` None is every address of this host."""

    proto: str
    host_ip: str | None
    host_port: int
    ip: str
    port: int

    @property
    def comment(self) -> str:
        return f"{self.proto} {self.host_ip or ''}:{self.host_port} {self.ip}:{self.port}"

    def rule(self, locally: bool = False) -> str:
        ipaddress.IPv4Address(self.ip)  # nft would look a name up: check first
        where = (f"ip daddr {ipaddress.IPv4Address(self.host_ip)}" if self.host_ip
                 else "fib daddr type local")
        if locally and not self.host_ip:
            where = "ip daddr != 127.0.0.0/8 " + where
        return (f"{where} {self.proto} dport {int(self.host_port)} dnat ip to "
                f"{self.ip}:{int(self.port)} comment \"{self.comment}\"")


@attrs.frozen
class Mesh:
    """A service's port on every host (the routing mesh): to one of this host's running
    replicas (``remote`` false: the client's address kept), else to the underlay
    address of a host that has one, at the same port, masqueraded (its answer comes back
    through here).  A connection from a member is not sent on again: its host has no
    replica by the other's view, and it is refused rather than looped."""

    proto: str
    host_port: int
    service: str
    targets: tuple[str, ...]  # addresses, in order: replicas', or hosts'
    port: int                 # at the targets: the replicas' PORT, or ``host_port``
    remote: bool

    @property
    def comment(self) -> str:
        digest = hashlib.blake2b(" ".join(self.targets).encode(), digest_size=4).hexdigest()
        return (f"mesh {self.service} {self.proto} :{self.host_port} "
                f"{'hosts' if self.remote else 'replicas'} {len(self.targets)} {digest}")

    def rule(self, locally: bool = False) -> str:
        targets = [str(ipaddress.IPv4Address(t)) for t in self.targets]  # no names
        where = "fib daddr type local"
        if locally:
            where = "ip daddr != 127.0.0.0/8 " + where
        elif self.remote:
            where += " ip saddr != @members"
        if len(targets) == 1:
            to = f"{targets[0]}:{int(self.port)}"
        else:
            pairs = ", ".join(f"{i} : {t}" for i, t in enumerate(targets))
            to = f"numgen inc mod {len(targets)} map {{ {pairs} }}:{int(self.port)}"
        return (f"{where} {self.proto} dport {int(self.host_port)} dnat ip to {to} "
                f"comment \"{self.comment}\"")


@attrs.frozen
class FirewallPlan:
    members: frozenset[str]   # underlay addresses VXLAN is taken from
    egress: frozenset[str]    # CIDRs whose containers' traffic out is masqueraded
    internal: frozenset[str]  # bridges no traffic is routed in or out of
    published: frozenset[Published] = frozenset()  # ports of this host's containers
    within: frozenset[str] = frozenset()  # every local network's bridge
    mesh: frozenset[Mesh] = frozenset()   # services' ports, on every host


SETS = ("members", "egress", "internal", "within")


class Firewall:
    """The table, made to hold a plan (or to be gone)."""

    def __init__(self, table: str = FIREWALL_TABLE) -> None:
        self.table = table
        self._nft = Nft()

    def close(self) -> None:
        self._nft.close()

    def sets(self) -> dict[str, frozenset[str]] | None:
        """What each of the table's sets holds; None if there is no table (or not all)."""
        try:
            out = self._nft.run(f"list table inet {self.table}", as_json=True)
        except NftError:
            return None
        found = {}
        for item in json.loads(out).get("nftables", []):
            if "set" in item and item["set"]["name"] in SETS:
                found[item["set"]["name"]] = frozenset(_element(e)
                                                       for e in item["set"].get("elem", []))
        return found if len(found) == len(SETS) else None

    def published(self) -> dict[str, set[str]]:
        """The comments of the rules of the chains of published ports."""
        out = self._nft.run(f"list table inet {self.table}", as_json=True)
        found: dict[str, set[str]] = {"prerouting": set(), "output": set()}
        for item in json.loads(out).get("nftables", []):
            rule = item.get("rule")
            if rule and rule.get("chain") in found:
                found[rule["chain"]].add(rule.get("comment", ""))
        return found

    def rules_in_place(self) -> bool:
        try:
            out = self._nft.run(f"list table inet {self.table}")
        except NftError:
            return False
        out = out.replace('"vxlan_dropped"', "vxlan_dropped")  # quoted by newer nft
        return all(rule in out for rule in (
            f"udp dport {VXLAN_PORT} ip saddr != @members counter name vxlan_dropped drop",
            "iifname . oifname @within accept",
            f'iifname "{BRIDGE_PREFIX}*" oifname "{BRIDGE_PREFIX}*" drop',
            "iifname @internal drop", "oifname @internal drop",
            f'ip saddr @egress oifname != "{BRIDGE_PREFIX}*" masquerade',
            "ct status dnat ip daddr @members masquerade"))

    def differences(self, want: FirewallPlan | None) -> list[str]:
        have = self.sets()
        if want is None:
            return [] if have is None else [f"remove nftables table inet {self.table}"]
        if have is None or not self.rules_in_place():
            return [f"add nftables table inet {self.table} (VXLAN from "
                    f"{len(want.members)} members)"]
        wanted = {p.comment for p in (*want.published, *want.mesh)}
        published = self.published()
        ports = ([f"publish {c}" for c in sorted(wanted - published["prerouting"])]
                 + [f"unpublish {c}" for c in sorted(published["prerouting"] - wanted)]
                 + (["rewrite the published ports for this host's own connections"]
                    if published["output"] != wanted else []))
        return ports + ([f"allow VXLAN from {a}" for a in sorted(want.members - have["members"])]
                + [f"refuse VXLAN from {a}" for a in sorted(have["members"] - want.members)]
                + [f"masquerade {c}" for c in sorted(want.egress - have["egress"])]
                + [f"stop masquerading {c}" for c in sorted(have["egress"] - want.egress)]
                + [f"keep {b} internal" for b in sorted(want.internal - have["internal"])]
                + [f"stop keeping {b} internal"
                   for b in sorted(have["internal"] - want.internal)]
                + [f"let {b} bridge within itself" for b in sorted(want.within - have["within"])]
                + [f"forget bridge {b}" for b in sorted(have["within"] - want.within)])

    def ensure(self, want: FirewallPlan | None) -> list[str]:
        """Make the table hold ``want`` (None: no table); what changed."""
        changes = self.differences(want)
        if not changes:
            return []
        if want is None:
            self._nft.run(f"add table inet {self.table}\ndelete table inet {self.table}")
        elif changes[0].startswith("add "):
            self._nft.run(_ruleset(self.table, want))  # table, sets and rules at once
        else:
            commands = ""  # one transaction
            if any(c.startswith(("publish ", "unpublish ", "rewrite the published"))
                   for c in changes):
                commands += _published(self.table, want)
            for name in SETS:
                commands += f"flush set inet {self.table} {name}\n"
                if getattr(want, name):
                    commands += (f"add element inet {self.table} {name} "
                                 f"{{ {_elements(name, getattr(want, name))} }}\n")
            self._nft.run(commands)
        return changes

    def update(self, old: FirewallPlan, new: FirewallPlan) -> list[str]:
        """From ``old`` (what the table was last made to hold) to ``new``, reading
        nothing back: only the sets and chains that differ, in one transaction.  A
        container's start and removal change these plans; each read of the table
        through libnftables costs milliseconds of CPU, beside the start."""
        changes, commands = [], ""
        for name in SETS:
            before, after = getattr(old, name), getattr(new, name)
            if before != after:
                changes.append(f"set {name}: {len(before)} -> {len(after)}")
                commands += f"flush set inet {self.table} {name}\n"
                if after:
                    commands += (f"add element inet {self.table} {name} "
                                 f"{{ {_elements(name, after)} }}\n")
        if old.published != new.published or old.mesh != new.mesh:
            changes.append(f"published ports: {len(old.published)} -> {len(new.published)}"
                           f", services' {len(old.mesh)} -> {len(new.mesh)}")
            commands += _published(self.table, new)
        if commands:
            self._nft.run(commands)
        return changes

    def dropped(self) -> int:
        """Packets the rule has dropped (from outsiders)."""
        out = self._nft.run(f"list counter inet {self.table} vxlan_dropped", as_json=True)
        for item in json.loads(out).get("nftables", []):
            if "counter" in item:
                return item["counter"]["packets"]
        return 0


def _element(e) -> str:
    """A set element as nft's JSON shows it: an address, a name, or a prefix."""
    if isinstance(e, dict) and "prefix" in e:
        return f"{e['prefix']['addr']}/{e['prefix']['len']}"
    if isinstance(e, dict) and "concat" in e:  # within: a bridge . itself
        return str(e["concat"][0])
    return str(e)


def _elements(kind: str, values) -> str:
    # nft would look up anything that is not an address as a host name: check first
    if kind == "members":
        return ", ".join(sorted(str(ipaddress.IPv4Address(a)) for a in values))
    if kind == "egress":
        return ", ".join(sorted(ipaddress.IPv4Network(c).with_prefixlen for c in values))
    for name in values:  # our own bridges' names only
        if not (name.startswith(BRIDGE_PREFIX) and name[len(BRIDGE_PREFIX):].isdigit()):
            raise ValueError(f"not a bridge of Cantainer's: {name!r}")
    if kind == "within":
        return ", ".join(f'"{name}" . "{name}"' for name in sorted(values))
    return ", ".join(f'"{name}"' for name in sorted(values))


def _ruleset(table: str, plan: FirewallPlan) -> str:
    def elements(kind: str) -> str:
        values = getattr(plan, kind)
        return f"elements = {{ {_elements(kind, values)} }}" if values else ""

    return f"""add table inet {table}
delete table inet {table}
table inet {table} {{
    set members {{
        type ipv4_addr
        {elements("members")}
    }}
    set egress {{
        type ipv4_addr
        flags interval
        {elements("egress")}
    }}
    set internal {{
        type ifname
        {elements("internal")}
    }}
    set within {{
        type ifname . ifname
        {elements("within")}
    }}
    counter vxlan_dropped {{ }}
    chain input {{
        type filter hook input priority filter; policy accept;
        udp dport {VXLAN_PORT} ip saddr != @members counter name vxlan_dropped drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname . oifname @within accept
        iifname "{BRIDGE_PREFIX}*" oifname "{BRIDGE_PREFIX}*" drop
        iifname @internal drop
        oifname @internal drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr @egress oifname != "{BRIDGE_PREFIX}*" masquerade
        ct status dnat ip daddr @members masquerade
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
    }}
}}
""" + _published(table, plan)


def _published(table: str, plan: FirewallPlan) -> str:
    """The two chains of published ports, emptied and filled again."""
    commands = f"flush chain inet {table} prerouting\nflush chain inet {table} output\n"
    for port in sorted((*plan.published, *plan.mesh), key=lambda p: p.comment):
        commands += f"add rule inet {table} prerouting {port.rule()}\n"
        commands += f"add rule inet {table} output {port.rule(locally=True)}\n"
    return commands
