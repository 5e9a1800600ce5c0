"""Bridges, VXLAN devices, FDB and neighbour entries of the overlay (``kernel/rtnl.py``).

``OverlayKernel.reconcile(plans)`` is level-triggered and idempotent: it reads
what the kernel has, works out the differences from the plans (one per VNI,
see ``cantainer/projections/overlay.py``), and applies only those.
``differences(plans)`` returns the same list without applying it.  Devices
are named ``ctbr<VNI>`` and ``ctvx<VNI>`` (``kernel/names.py``); nothing else
is touched.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from functools import partial

import attrs

from cantainer.kernel import names, rtnl
from cantainer.kernel.names import BRIDGE_PREFIX, VXLAN_PREFIX
from cantainer.kernel.net import index_of, mtu_of

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50


@attrs.define
class ActualNetwork:
    bridge: dict | None = None  # {"index", "up", "addresses"}
    vxlan: dict | None = None   # {"index", "vni", "learning", "proxy", "local", "port", "mtu", "master", "up"}
    fdb: dict[str, str] = attrs.Factory(dict)
    neigh: dict[str, str] = attrs.Factory(dict)


Action = tuple[str, Callable[[], None]]


class OverlayKernel:
    def __init__(self, underlay_address: str) -> None:
        self.local = underlay_address  # it holds nothing else: each request opens its socket

    # -- reading -------------------------------------------------------------------

    def underlay_mtu(self) -> int:
        return mtu_of(self.local)

    def actual(self) -> dict[int, ActualNetwork]:
        nets: dict[int, ActualNetwork] = {}
        addresses = rtnl.addresses()
        for link in rtnl.links():
            for prefix in (BRIDGE_PREFIX, VXLAN_PREFIX):
                if link.name.startswith(prefix) and link.name[len(prefix):].isdigit():
                    net = nets.setdefault(int(link.name[len(prefix):]), ActualNetwork())
                    if prefix == BRIDGE_PREFIX:
                        net.bridge = {"index": link.index, "up": link.up,
                                      "addresses": addresses.get(link.index, set())}
                    else:
                        net.vxlan = {"index": link.index, "up": link.up, "mtu": link.mtu,
                                     "master": link.master, "vni": link.vxlan.get("vni"),
                                     "learning": link.vxlan.get("learning"),
                                     "proxy": link.vxlan.get("proxy"),
                                     "local": link.vxlan.get("local"),
                                     "port": link.vxlan.get("port")}
        devices = {net.vxlan["index"]: net for net in nets.values() if net.vxlan is not None}
        if devices:
            for entry in rtnl.neighbours(socket.AF_BRIDGE):
                if entry.ifindex in devices and entry.dst and entry.lladdr:
                    devices[entry.ifindex].fdb[entry.lladdr] = entry.dst
            for entry in rtnl.neighbours(socket.AF_INET):
                if entry.ifindex in devices and entry.state & rtnl.NUD_PERMANENT and entry.dst:
                    devices[entry.ifindex].neigh[entry.dst] = entry.lladdr
        return nets

    # -- differences -----------------------------------------------------------------

    def _actions(self, plans) -> list[Action]:
        actual = self.actual()
        mtu = self.underlay_mtu() - VXLAN_OVERHEAD
        actions: list[Action] = []
        for vni, plan in sorted(plans.items()):
            have = actual.get(vni, ActualNetwork())
            actions += self._device_actions(plan, have, mtu)
            actions += self._entry_actions(plan, have)
        for vni, have in sorted(actual.items()):
            if vni not in plans:
                actions.append((f"remove network vni {vni} (no local container)",
                                lambda vni=vni: self._remove(vni)))
        return actions

    def _device_actions(self, plan, have: ActualNetwork, mtu: int) -> list[Action]:
        actions: list[Action] = []
        if have.bridge is None:
            actions.append((f"add bridge {plan.bridge}", lambda: self._add_bridge(plan.bridge)))
        elif not have.bridge["up"]:
            actions.append((f"set bridge {plan.bridge} up", lambda: self._up(plan.bridge)))
        # The network's .1: this host is its containers' gateway and name server.
        if have.bridge is None or plan.gateway not in have.bridge["addresses"]:
            actions.append((f"add address {plan.gateway} to bridge {plan.bridge}",
                            lambda: self._add_gateway(plan)))
        want = {"vni": plan.vni, "learning": 0, "proxy": 1, "local": self.local,
                "port": VXLAN_PORT}
        vx = have.vxlan
        if vx is None or any(vx[k] != v for k, v in want.items()):
            what = "add" if vx is None else "replace misconfigured"
            actions.append((f"{what} vxlan {plan.vxlan} (vni {plan.vni}, mtu {mtu})",
                            lambda: self._add_vxlan(plan, mtu)))
            have.fdb, have.neigh = {}, {}  # a new device starts empty
        elif (vx["mtu"] != mtu or not vx["up"] or have.bridge is None
              or vx["master"] != have.bridge["index"]):
            actions.append((f"set vxlan {plan.vxlan} mtu {mtu}, master {plan.bridge}, up",
                            lambda: self._attach_vxlan(plan, mtu)))
        return actions

    def _entry_actions(self, plan, have: ActualNetwork) -> list[Action]:
        """Deletions of wrong entries first, then additions of missing ones."""
        kinds = (("fdb", "{} dst {}", have.fdb, plan.fdb, self._fdb),
                 ("neigh", "{} lladdr {}", have.neigh, plan.neigh, self._neigh))
        actions: list[Action] = []
        for command in ("del", "add"):
            for kind, shape, actual, wanted, change in kinds:
                entries, other = (actual, wanted) if command == "del" else (wanted, actual)
                for key, value in sorted(entries.items()):
                    if other.get(key) != value:
                        actions.append((f"{command} {kind} {shape.format(key, value)} "
                                        f"dev {plan.vxlan}",
                                        partial(change, command, plan.vxlan, key, value)))
        return actions

    def update_entries(self, old_plans, new_plans) -> list[str]:
        """Only the FDB and neighbour entries that differ between two plans of the same
        networks: the kernel is taken to hold ``old_plans`` (what the last reconcile
        made), so nothing is read back.  O(changes), where ``reconcile`` is O(entries)."""
        done = []
        for vni, plan in sorted(new_plans.items()):
            old = old_plans[vni]
            for description, action in self._entry_actions(
                    plan, ActualNetwork(fdb=dict(old.fdb), neigh=dict(old.neigh))):
                action()
                done.append(description)
        return done

    def differences(self, plans) -> list[str]:
        return [description for description, _ in self._actions(plans)]

    def reconcile(self, plans) -> list[str]:
        done = []
        for description, action in self._actions(plans):
            action()
            done.append(description)
        return done

    # -- changes -------------------------------------------------------------------

    def _up(self, ifname: str) -> None:
        rtnl.set_link(index_of(ifname), up=True)

    def _add_bridge(self, ifname: str) -> None:
        # The runtime actor may create it at the same moment (a container's veth).
        self._ignore_gone(lambda: rtnl.add_bridge(ifname))
        self._up(ifname)

    def _add_gateway(self, plan) -> None:
        address, prefixlen = plan.gateway.split("/")
        self._ignore_gone(lambda: rtnl.add_address(index_of(plan.bridge), address,
                                                   int(prefixlen)))

    def _add_vxlan(self, plan, mtu: int) -> None:
        if index_of(plan.vxlan) is not None:
            rtnl.del_link(index_of(plan.vxlan))
        rtnl.add_vxlan(plan.vxlan, vni=plan.vni, local=self.local, port=VXLAN_PORT,
                       learning=False, proxy=True, mtu=mtu)
        self._attach_vxlan(plan, mtu)

    def _attach_vxlan(self, plan, mtu: int) -> None:
        rtnl.set_link(index_of(plan.vxlan), mtu=mtu, master=index_of(plan.bridge), up=True)

    def _remove(self, vni: int) -> None:
        """Remove the network's devices, unless a container's veth is still in the
        bridge: the runtime actor, a few events ahead or behind, may have attached one
        (the next reconcile removes an empty bridge)."""
        bridge = index_of(names.bridge(vni))
        if bridge is not None and any(link.master == bridge and names.VETH_RE.match(link.name)
                                      for link in rtnl.links()):
            return
        for ifname in (names.vxlan(vni), names.bridge(vni)):
            index = index_of(ifname)
            if index is not None:
                rtnl.del_link(index)

    def _fdb(self, command: str, ifname: str, mac: str, dst: str) -> None:
        self._ignore_gone(lambda: rtnl.neighbour(command, socket.AF_BRIDGE, index_of(ifname),
                                                 dst=dst, lladdr=mac))

    def _neigh(self, command: str, ifname: str, ip: str, mac: str) -> None:
        self._ignore_gone(lambda: rtnl.neighbour(command, socket.AF_INET, index_of(ifname),
                                                 dst=ip, lladdr=mac))

    @staticmethod
    def _ignore_gone(call: Callable[[], object]) -> None:
        """Adding what exists or deleting what is gone is not an error: the goal holds."""
        try:
            call()
        except rtnl.NetlinkError as exc:
            if exc.errno not in (errno.ENOENT, errno.EEXIST):
                raise
