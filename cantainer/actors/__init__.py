"""The Pykka side only: one actor per part of this host's kernel.

    base.py      KernelActor: plans in, the kernel made to match, Listener upward
    overlay.py   bridges, VXLAN devices, FDB and neighbour entries
    runtime.py   containers: namespaces, veths, shims, stops, removals
    firewall.py  the nftables table: VXLAN from the live members only

Actors hold frozen plans derived from the state (``cantainer/projections/``)
and touch the OS only through ``cantainer/kernel/``.  The daemon's runner
starts them in ``ACTORS`` order, stops them in reverse, and restarts a
crashed one with the current plan.
"""

from cantainer.actors.base import ActorContext, Desired, KernelActor, Listener, Reconcile
from cantainer.actors.firewall import FirewallActor
from cantainer.actors.overlay import OverlayActor
from cantainer.actors.runtime import RuntimeActor

ACTORS: tuple[type[KernelActor], ...] = (FirewallActor, OverlayActor, RuntimeActor)

__all__ = ["ACTORS", "ActorContext", "Desired", "FirewallActor", "KernelActor", "Listener",
           "OverlayActor", "Reconcile", "RuntimeActor"]
