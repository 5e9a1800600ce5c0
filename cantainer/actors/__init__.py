"""Actors that replay the log, one per concern.

    _projection.py  Projection: apply records in seq order, keep verdicts (pure)
    _base.py        ProjectionActor: the Pykka actor that feeds a projection and reconciles
    membership.py   who is in the cluster; suspicion from heartbeat silence
    ipam.py         networks, VNIs, container addresses and MACs (pure, log-ordered)
    overlay.py      the VXLAN picture of a host, and the actor that makes the kernel match
    runtime.py      this host's containers as processes: namespaces, veths, shims
    pipeline.py     the tailer that feeds every actor, supervision, start/stop order
    replay.py       ``cantainer replay``: every projection over a log, no kernel

Projections never touch the kernel; actors do, through ``cantainer/kernel/``.
"""

from cantainer.actors._base import ActorContext, Deliver, ProjectionActor, Reconcile
from cantainer.actors.pipeline import ACTORS, Pipeline

__all__ = ["ACTORS", "ActorContext", "Deliver", "Pipeline", "ProjectionActor", "Reconcile"]
