"""The daemon's API: what the CLI and the other daemons may ask.

    server.py        framing (JSON Lines), the dispatch table, the one filter every
                     request passes (its fields checked and defaulted), the peer port
    handle.py        Handle: the narrow view of the daemon the handlers get
    fields.py        checkers of request fields
    log.py           submit, events
    cluster.py       status, nodes, leave, node_rm, check
    networks.py      network_create, network_ls, network_rm
    containers.py    run, ps, inspect, logs, exec, stop, rm
    images.py        image_ls, image_import, image_load, image_pull, image_rm
    forward.py       relaying a request to the host that runs the container
    exec_session.py  the daemon's end of exec: a process in a container, relayed

The client side is ``cantainer/cli/``, which imports nothing of this.
"""
