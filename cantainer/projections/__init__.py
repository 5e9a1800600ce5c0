"""Pure projections: what the log decides, derived by applying its records in order.

    base.py        Projection: apply records in seq order, dispatch, keep verdicts
    membership.py  who is in the cluster: joined, suspected, left
    ipam.py        networks, VNIs, containers, addresses and MACs
    state.py       ClusterState: membership and IPAM, each record applied once
    overlay.py     the overlay plan of a host (bridges, FDB and neighbour entries)
    runtime.py     the runtime plan of a host (its containers, all a start needs)
    view.py        the JSON forms users see; replay

No Pykka, no I/O, no kernel: ``cantainer replay`` runs them anywhere, and
every host derives the same answers from the same log.
"""
