"""Cantainer's own nftables table: VXLAN from members only.  Through libnftables (the
system's nftables library, ctypes), one transaction per change; no other table is
touched.

    table inet cantainer {
        set members { type ipv4_addr; elements = { the live members' underlay addresses } }
        counter vxlan_dropped { }
        chain input {
            type filter hook input priority filter; policy accept;
            udp dport 4789 ip saddr != @members counter name vxlan_dropped drop
        }
    }

The input hook sees VXLAN before the kernel's VXLAN socket does, reassembled;
an empty set drops all of it (fails closed).  What this cannot stop: a host on
the same L2 segment that sends with a member's address (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json

from cantainer.kernel.names import FIREWALL_TABLE

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


class Firewall:
    """The table, made to hold a set of member addresses (or to be gone)."""

    def __init__(self, table: str = FIREWALL_TABLE) -> None:
        self.table = table
        self._nft = Nft()

    def close(self) -> None:
        self._nft.close()

    def members(self) -> frozenset[str] | None:
        """The addresses the table lets VXLAN from; None if there is no table."""
        try:
            out = self._nft.run(f"list set inet {self.table} members", as_json=True)
        except NftError:
            return None
        for item in json.loads(out).get("nftables", []):
            if "set" in item:
                return frozenset(e for e in item["set"].get("elem", []) if isinstance(e, str))
        return None

    def rule_in_place(self) -> bool:
        try:
            out = self._nft.run(f"list chain inet {self.table} input")
        except NftError:
            return False
        return f"udp dport {VXLAN_PORT} ip saddr != @members" in out and "drop" in out

    def differences(self, want: frozenset[str] | None) -> list[str]:
        have = self.members()
        if want is None:
            return [] if have is None else [f"remove nftables table inet {self.table}"]
        if have is None or not self.rule_in_place():
            return [f"add nftables table inet {self.table} (VXLAN from {len(want)} members)"]
        return ([f"allow VXLAN from {a}" for a in sorted(want - have)]
                + [f"refuse VXLAN from {a}" for a in sorted(have - want)])

    def ensure(self, want: frozenset[str] | None) -> list[str]:
        """Make the table hold ``want`` (None: no table); what changed."""
        changes = self.differences(want)
        if not changes:
            return []
        if want is None:
            self._nft.run(f"add table inet {self.table}\ndelete table inet {self.table}")
        elif changes[0].startswith("add "):
            self._nft.run(_ruleset(self.table, want))  # table, set and rule at once
        else:
            commands = f"flush set inet {self.table} members\n"  # one transaction
            if want:
                commands += f"add element inet {self.table} members {{ {_elements(want)} }}\n"
            self._nft.run(commands)
        return changes

    def dropped(self) -> int:
        """Packets the rule has dropped (from outsiders)."""
        out = self._nft.run(f"list counter inet {self.table} vxlan_dropped", as_json=True)
        for item in json.loads(out).get("nftables", []):
            if "counter" in item:
                return item["counter"]["packets"]
        return 0


def _elements(addresses) -> str:
    # nft would look up anything that is not an address as a host name: check first
    return ", ".join(sorted(str(ipaddress.IPv4Address(a)) for a in addresses))


def _ruleset(table: str, members: frozenset[str]) -> str:
    elements = f"elements = {{ {_elements(members)} }}" if members else ""
    return f"""add table inet {table}
delete table inet {table}
table inet {table} {{
    set members {{
        type ipv4_addr
        {elements}
    }}
    counter vxlan_dropped {{ }}
    chain input {{
        type filter hook input priority filter; policy accept;
        udp dport {VXLAN_PORT} ip saddr != @members counter name vxlan_dropped drop
    }}
}}
"""
