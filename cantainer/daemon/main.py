"""``cantainerd``'s command line: flags into a ``Config``, then the daemon runs.

``python -m cantainer.daemon`` and the ``cantainerd`` script both come here.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import socket
import sys

from cantainer import __version__
from cantainer.config import (DEFAULT_DATA_DIR, DEFAULT_NETWORK_CIDR, DEFAULT_PORT,
                              DEFAULT_RUN_DIR, IDLE_POLL, NETWORK_LATENCY_MS, RECONCILE_EVERY,
                              SUSPECT_AFTER, RESCHEDULE_AFTER, CHECKPOINT_EVERY, RETAIN, RELAYS,
                              STANDBYS, Config)
from cantainer.daemon import credentials
from cantainer.daemon.daemon import Daemon, data_dir_lock
from cantainer.daemon.lease import MIN_RESCHEDULE
from cantainer.kernel.syscalls import bound_malloc
from cantainer.errors import CantainerError, ConfigError, InvalidEvent
from cantainer.events.validate import NAME_RE, parse_cidr
from cantainer.kernel.net import default_address
from cantainer.trust.tokens import parse_token


def main(argv: list[str] | None = None) -> int:
    # Actors, the tailer and the API hand work between threads many times a
    # request; Python's default 5 ms GIL switch interval would add up to 5 ms
    # to each hand-off.
    sys.setswitchinterval(0.001)
    bounded = bound_malloc()  # before any thread: kernel/syscalls.py says why
    try:
        config, level = parse(argv)
        logging.basicConfig(level=level.upper(),
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        if not bounded:
            logging.getLogger("cantainerd").warning(
                "the C library did not take mallopt: memory freed may stay in its arenas")
        if level != "debug":  # our own messages say what its retries were about
            logging.getLogger("dqliteclient").setLevel(logging.ERROR)
        lock = data_dir_lock(config.data_dir)
        try:
            creds, ca_key = asyncio.run(credentials.obtain(config))
            daemon = Daemon(config, creds, ca_key)
            asyncio.run(daemon.run())
        finally:
            os.close(lock)
    except CantainerError as exc:
        print(f"cantainerd: error: {exc}", file=sys.stderr)
        return 1
    return 0


def parse(argv: list[str] | None = None) -> tuple[Config, str]:
    """The configuration from ``cantainerd``'s command line, and the log level."""
    parser = argparse.ArgumentParser(prog="cantainerd", description="Cantainer host daemon.")
    parser.add_argument("--version", action="version", version=f"cantainerd {__version__}")
    parser.add_argument("--address", help="this host's underlay address, HOST[:PORT] "
                        "(default: the default route's source address, port 9000)")
    parser.add_argument("--seeds", default="", help="HOST:PORT[,...] of members to join through")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--join-token", metavar="TOKEN",
                       help="what a new member joins with ('cantainer join-token' on a "
                            "member prints it); a member that restarts needs none")
    token.add_argument("--join-token-file", metavar="FILE",
                       help="the join token read from FILE: not in 'ps' for every local "
                            "user to read, as the command line is")
    parser.add_argument("--name", default=socket.gethostname(), help="node name (default: hostname)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR)
    parser.add_argument("--voters", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--standbys", type=int, default=STANDBYS, help=argparse.SUPPRESS)
    parser.add_argument("--network-latency-ms", type=int, default=NETWORK_LATENCY_MS,
                        metavar="MS",
                        help="one-way latency dqlite plans for: Raft heartbeats every 1.5x, "
                             f"elections after 15x (default: {NETWORK_LATENCY_MS}, a "
                             f"{15 * NETWORK_LATENCY_MS} ms election timeout)")
    parser.add_argument("--suspect-after", type=float, default=SUSPECT_AFTER, metavar="SECONDS",
                        help="heartbeat silence after which the leader records NodeSuspected "
                             "(default: 10)")
    parser.add_argument("--reschedule-after", type=float, default=RESCHEDULE_AFTER,
                        metavar="SECONDS",
                        help="how long a member stays suspected before the leader records "
                             "NodeDown and its service replicas move (default: 5)")
    parser.add_argument("--checkpoint-every", type=int, default=CHECKPOINT_EVERY,
                        metavar="RECORDS",
                        help="save the state every so many records, and start from the "
                             "newest the log vouches for (default: 10000; 0: never, "
                             "and no archive); the cluster's, as its log records it")
    parser.add_argument("--retain", type=int, default=None, metavar="RECORDS",
                        help="records the log's database keeps behind its head; older "
                             "ones move to the archive, on every host's disk (default: "
                             "20000, 0 with --checkpoint-every 0; 0: keep every one)")
    parser.add_argument("--relays", type=int, default=RELAYS, metavar="COUNT",
                        help="members that read the log from the Raft leader and relay "
                             "it to the others over the peer port (default: "
                             f"{RELAYS}; 0: every host reads from the leader); the same "
                             "on every host")
    parser.add_argument("--metrics", default=None, metavar="HOST:PORT|none",
                        help="serve Prometheus metrics there (default: 127.0.0.1 at the "
                             "--address port + 3; none: not at all)")
    parser.add_argument("--idle-poll", type=float, default=IDLE_POLL, metavar="SECONDS",
                        help="how often a quiet log is read (default: 2); appending hosts "
                             "poke their peers to read at once")
    parser.add_argument("--reconcile-every", type=float, default=RECONCILE_EVERY,
                        metavar="SECONDS",
                        help="full comparison of the kernel with the log (default: 10); 0: "
                             "never (removals are still noticed at once through rtnetlink)")
    parser.add_argument("--default-network", metavar="CIDR",
                        help="the CIDR of the network 'default' that 'run' without -n "
                             "joins; only when this host creates the cluster (default: "
                             f"{DEFAULT_NETWORK_CIDR}); it is recorded in the log")
    parser.add_argument("--dns", action="append", default=[], metavar="ADDRESS",
                        help="a resolver for the names containers ask that are not the "
                             "cluster's (repeatable; default: this host's /etc/resolv.conf)")
    parser.add_argument("--fixed-poll", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.address is None:
        found = default_address()
        if found is None:
            raise ConfigError("no default route to take an address from; pass --address")
        args.address = found
    host, port = _parse_address(args.address, "--address")
    seeds = tuple(":".join(map(str, _parse_address(seed, "--seeds")))
                  for seed in filter(None, (s.strip() for s in args.seeds.split(","))))
    if not 1 <= args.voters <= 7 or not 0 <= args.standbys <= 7:
        raise ConfigError("--voters must be 1..7 and --standbys 0..7")
    if not 1.0 <= args.suspect_after <= 3600:
        raise ConfigError("--suspect-after must be 1..3600 seconds")
    if args.metrics is None:
        metrics = True
    elif args.metrics == "none":
        metrics = None
    elif ":" not in args.metrics:
        raise ConfigError(f"--metrics {args.metrics!r} is not IPV4:PORT (or none)")
    else:
        metrics = _parse_address(args.metrics, "--metrics")
    if args.checkpoint_every != 0 and not 100 <= args.checkpoint_every <= 10_000_000:
        raise ConfigError("--checkpoint-every must be 0 (never) or 100..10000000 records")
    if not 0 <= args.relays <= 64:
        raise ConfigError(f"--relays must be 0..64, got {args.relays}")
    if args.retain is None:
        args.retain = RETAIN if args.checkpoint_every else 0
    if args.retain != 0 and not args.checkpoint_every:
        raise ConfigError("--retain needs checkpoints: with --checkpoint-every 0 it must be 0")
    if args.retain != 0 and not args.checkpoint_every <= args.retain <= 1 << 40:
        raise ConfigError(f"--retain must be 0 (keep every record) or at least "
                          f"--checkpoint-every ({args.checkpoint_every}) records")
    if not MIN_RESCHEDULE <= args.reschedule_after <= 3600:
        raise ConfigError(f"--reschedule-after must be {MIN_RESCHEDULE:g}..3600 seconds (a "
                          "cut-off host's replicas must end before they move)")
    if not 0.01 <= args.idle_poll <= 3600:
        raise ConfigError("--idle-poll must be 0.01..3600 seconds")
    if args.reconcile_every != 0 and not 1 <= args.reconcile_every <= 86400:
        raise ConfigError("--reconcile-every must be 0 (never) or 1..86400 seconds")
    if args.fixed_poll is not None and not 0.001 <= args.fixed_poll <= 60:
        raise ConfigError("--fixed-poll must be 0.001..60 seconds")
    if not 1 <= args.network_latency_ms <= 10_000:
        raise ConfigError("--network-latency-ms must be 1..10000")
    if args.join_token_file is not None:
        try:
            with open(args.join_token_file) as f:
                args.join_token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --join-token-file {args.join_token_file}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    if args.join_token is not None:
        parse_token(args.join_token)  # a malformed one says so here, in one line
    if args.default_network is not None:
        if seeds:
            raise ConfigError("--default-network is set by the host that creates the "
                              "cluster; a joining host takes the one in the log")
        try:
            args.default_network = parse_cidr(args.default_network).with_prefixlen
        except InvalidEvent as exc:
            raise ConfigError(f"--default-network: {exc}") from None
    for resolver in args.dns:
        try:
            ipaddress.ip_address(resolver)
        except ValueError:
            raise ConfigError(f"--dns {resolver!r} is not an IP address") from None
    if not NAME_RE.match(args.name):
        raise ConfigError(f"--name {args.name!r} is not a valid node name")
    config = Config(name=args.name, host=host, port=port, seeds=seeds,
                    data_dir=os.path.abspath(args.data_dir),
                    run_dir=os.path.abspath(args.run_dir), voters=args.voters,
                    standbys=args.standbys, network_latency_ms=args.network_latency_ms,
                    suspect_after=args.suspect_after,
                    reschedule_after=args.reschedule_after,
                    checkpoint_every=args.checkpoint_every, retain=args.retain,
                    relays=args.relays, metrics=metrics, idle_poll=args.idle_poll,
                    reconcile_every=args.reconcile_every, join_token=args.join_token,
                    default_network=args.default_network, fixed_poll=args.fixed_poll,
                    dns=tuple(args.dns))
    return config, args.log_level


def _parse_address(value: str, flag: str) -> tuple[str, int]:
    host, _, port = value.partition(":")
    try:
        ipaddress.IPv4Address(host)
        number = int(port) if port else DEFAULT_PORT
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{flag} {value!r} is not IPV4[:PORT]") from None
    return host, number
