"""The daemon, ``cantainerd``.

    main.py       the command line: flags into a Config, then the daemon runs
    daemon.py     Daemon: start order, and its reverse to stop; the loops
    runner.py     the tailer, the one ClusterState, plans for the actors
    heartbeat.py  UDP heartbeats and pokes; the leader's suspicion of silent hosts
    handle.py     the narrow handle the API gets (``api/handle.py``)
"""


def main(argv: list[str] | None = None) -> int:
    from cantainer.daemon.main import main as run

    return run(argv)
