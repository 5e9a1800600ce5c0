"""The daemon's configuration, its defaults, and every port it listens on.

One host's daemon uses three ports, all derived from ``--address HOST:PORT``:

    PORT       dqlite: Raft between the members and SQL from their clients (TLS)
    PORT + 1   heartbeats and pokes between the daemons (UDP, each datagram MACed)
    PORT + 2   the peer API: another daemon's forwarded ``logs`` and ``exec``, and
               what a joiner asks (TLS)

and one unix socket, ``RUN_DIR/cantainerd.sock`` (mode 0600), for the CLI.
The CLI imports this module for its default socket: it stays standard-library only.
"""

from __future__ import annotations

import os

DEFAULT_PORT = 9000
DEFAULT_DATA_DIR = "/var/lib/cantainer"
DEFAULT_RUN_DIR = "/run/cantainer"
SOCKET_NAME = "cantainerd.sock"
DEFAULT_SOCKET = os.path.join(DEFAULT_RUN_DIR, SOCKET_NAME)

# Raft's one-way latency estimate: heartbeats every 1.5x, elections after 15x.  100 ms:
# heartbeats every 150 ms, elections after 1.5 s, fail-overs in ~2 s (bench.failover).
# Every Raft message crosses the TLS relay on both hosts (trust/relay.c), a wakeup
# and a TLS record each, so the leader's idle CPU follows the heartbeat rate: at 60 ms
# (90 ms heartbeats, 1.8 s fail-overs) it was 1.15-1.2 % of a core, at 100 ms
# 0.87-0.98 % (bench.trust, bench.idle; 2 cores, 3 hosts, 5 containers each).
NETWORK_LATENCY_MS = 100
SUSPECT_AFTER = 10.0     # seconds of heartbeat silence before NodeSuspected
CHECKPOINT_EVERY = 10_000  # records between checkpoints of the state (0: none)
RETAIN = 20_000  # records the database keeps behind the head; older ones are archived
# Raft stand-bys: each is sent every entry (as a voter is) by the leader, over TLS: 4.2
# MB per 10 000 events each (bench.leader_load).  One is a warm seat for the first
# voter lost; a spare promoted after it catches up from the database, which the
# archive keeps small (--retain).
STANDBYS = 1
RELAYS = 3  # members that read the log from the leader and relay it to the rest
RESCHEDULE_AFTER = 5.0   # seconds suspected before NodeDown: its service replicas move
IDLE_POLL = 2.0          # seconds between reads of a quiet log (pokes wake it)
RECONCILE_EVERY = 10.0   # seconds between full kernel comparisons; 0: never
# The CIDR of the network 'default' ('run' without -n), set when a cluster is created
# and recorded in its log (ClusterCreated): podman's default network's.
DEFAULT_NETWORK_CIDR = "10.88.0.0/16"


def heartbeat_port(dqlite_port: int) -> int:
    return dqlite_port + 1


def metrics_port(dqlite_port: int) -> int:
    """Where a daemon serves its metrics by default (on 127.0.0.1)."""
    return dqlite_port + 3


def peer_port(dqlite_port: int) -> int:
    """Where a daemon serves its peers' forwarded requests (logs, exec)."""
    return dqlite_port + 2


class Config:
    """What ``cantainerd`` was started with (``cantainer.daemon.main.parse`` builds it
    from the command line)."""

    def __init__(self, *, name: str, host: str, port: int = DEFAULT_PORT,
                 seeds: tuple[str, ...] = (), data_dir: str = DEFAULT_DATA_DIR,
                 run_dir: str = DEFAULT_RUN_DIR, voters: int = 3, standbys: int = STANDBYS,
                 network_latency_ms: int = NETWORK_LATENCY_MS,
                 suspect_after: float = SUSPECT_AFTER,
                 reschedule_after: float = RESCHEDULE_AFTER,
                 checkpoint_every: int = CHECKPOINT_EVERY, retain: int = RETAIN,
                 relays: int = RELAYS, metrics: tuple[str, int] | None | bool = True, idle_poll: float = IDLE_POLL,
                 reconcile_every: float = RECONCILE_EVERY, join_token: str | None = None,
                 default_network: str | None = None, fixed_poll: float | None = None,
                 dns: tuple[str, ...] = ()) -> None:
        self.name = name
        self.host = host  # this host's underlay address
        self.port = port
        self.seeds = seeds
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.voters = voters
        self.standbys = standbys
        self.network_latency_ms = network_latency_ms
        self.suspect_after = suspect_after
        self.reschedule_after = reschedule_after
        self.checkpoint_every = checkpoint_every
        self.retain = retain  # 0: the database keeps every record
        self.relays = relays  # 0: every host reads the log from the leader
        # where the Prometheus metrics are served (True: 127.0.0.1, the port + 3; None: not)
        self.metrics = ("127.0.0.1", metrics_port(port)) if metrics is True else metrics
        self.idle_poll = idle_poll
        self.reconcile_every = reconcile_every
        self.join_token = join_token  # how a new member proves it may join
        self.default_network = default_network  # a new cluster's; None: the default
        self.dns = dns  # resolvers for containers' other names; (): /etc/resolv.conf's
        self.fixed_poll = fixed_poll  # benchmarks only: see bench/convergence.py

    @property
    def dqlite_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def heartbeat_address(self) -> tuple[str, int]:
        return self.host, heartbeat_port(self.port)

    @property
    def peer_address(self) -> tuple[str, int]:
        return self.host, peer_port(self.port)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, SOCKET_NAME)
