"""The command line's grammar: every command, its arguments and their types."""

from __future__ import annotations

import argparse
import os

from cantainer import __version__
from cantainer.cli import commands
from cantainer.config import DEFAULT_SOCKET


_SIZES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(value: str) -> int:
    number, unit = value[:-1], value[-1].lower()
    if unit.isdigit():
        number, unit = value, ""
    try:
        return int(float(number) * _SIZES[unit])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a size (e.g. 64m, 1g)") from None


def _env(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return value


def _since(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a seq number") from None
    if number < 0:
        raise argparse.ArgumentTypeError("a seq is >= 0")
    return number


def _tail(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of lines or 'all'")
    return int(value)


def _columns() -> int:
    """The terminal's width, as ``shutil.get_terminal_size`` finds it (shutil costs a
    start 2 ms of imports, and argparse makes a formatter for every argument added)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=max(_columns() - 2, 20))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, formatter_class=_Formatter, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


_COMMANDS: dict = {}  # name -> the function that adds its parser, in help's order


def _command(name: str):
    """Registers the function that adds command ``name``'s parser."""
    def register(define):
        _COMMANDS[name] = define
        return define
    return register


def command_named(argv: list[str]) -> str | None:
    """The command ``argv`` names, when only its parser need be built: None when an
    option comes first (but --socket) or the name is no command's."""
    args = iter(argv)
    for arg in args:
        if arg == "--socket":
            next(args, None)
        elif not arg.startswith("--socket="):
            return arg if arg in _COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The grammar; ``only``: of that one command (a start builds just the one it runs)."""
    parser = _Parser(prog="cantainer", description="Cantainer command line.")
    parser.add_argument("--version", action="version", version=f"cantainer {__version__}")
    parser.add_argument("--socket", default=os.environ.get("CANTAINER_SOCKET", DEFAULT_SOCKET),
                        help=f"the daemon's API socket (default: $CANTAINER_SOCKET or "
                             f"{DEFAULT_SOCKET})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, define in _COMMANDS.items():
        if only is None or name == only:
            define(sub)
    return parser


@_command("submit-event")
def _submit_event(sub) -> None:
    p = sub.add_parser("submit-event", help="append a raw event to the log; prints its seq")
    p.add_argument("type", nargs="?", metavar="TYPE", help="event type, e.g. NetworkCreated")
    p.add_argument("fields", nargs="*", metavar="key=value")
    p.add_argument("--data", metavar="JSON", help="the event's fields as a JSON object")
    p.add_argument("--id", help="idempotency key: a retried submit with the same id appends once")
    p.add_argument("--file", metavar="FILE",
                   help="JSON Lines of {type, data, id} appended as one atomic batch ('-': stdin)")
    p.set_defaults(func=commands.cmd_submit_event)


@_command("events")
def _events(sub) -> None:
    p = sub.add_parser("events", help="print the event log")
    p.add_argument("--since", type=_since, default=0, metavar="SEQ",
                   help="only events after this seq")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--type", action="append", metavar="T", help="only events of this type")
    p.add_argument("--json", action="store_true", help="JSON Lines")
    p.add_argument("--msgpack", action="store_true",
                   help="the records as the log stores them (binary, for 'replay --file': "
                        "quicker to read than JSON)")
    p.set_defaults(func=commands.cmd_events)


@_command("status")
def _status(sub) -> None:
    p = sub.add_parser("status", help="nodes, Raft roles, leader, log head, applied seqs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_status)


@_command("nodes")
def _nodes(sub) -> None:
    p = sub.add_parser("nodes", help="cluster members: name, address, state, Raft role")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_nodes)


@_command("join-token")
def _join_token(sub) -> None:
    p = sub.add_parser("join-token", help="print the token a new host joins with "
                                          "(cantainerd --seeds HOST:PORT --join-token TOKEN)")
    p.add_argument("--rotate", action="store_true",
                   help="a new token: the old one no longer lets anyone join "
                        "(members stay members)")
    p.set_defaults(func=commands.cmd_join_token)


@_command("node")
def _node(sub) -> None:
    node = sub.add_parser("node", help="this host's membership").add_subparsers(
        dest="node_command", required=True, parser_class=_Parser)
    p = node.add_parser("leave", help="leave the cluster: stop this host's containers, free "
                                      "their addresses, stop its daemon")
    p.set_defaults(func=commands.cmd_node_leave)
    p = node.add_parser("rm", help="evict hosts that are gone (NodeLeft on their behalf)")
    p.add_argument("--force", action="store_true", help="even if their heartbeat is live")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=commands.cmd_node_rm)


@_command("network")
def _network(sub) -> None:
    net = sub.add_parser("network", help="overlay networks").add_subparsers(
        dest="network_command", required=True, parser_class=_Parser)
    p = net.add_parser("create", help="create an overlay network; prints its name")
    p.add_argument("cidr", metavar="CIDR", help="e.g. 198.18.0.0/24")
    p.add_argument("--name", help="default: the CIDR with '-' for '/'")
    p.add_argument("--internal", action="store_true",
                   help="no traffic in or out of the cluster (no NAT, no default route)")
    p.set_defaults(func=commands.cmd_network_create)
    p = net.add_parser("ls", help="list networks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_network_ls)
    p = net.add_parser("rm", help="remove networks that have no containers")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=commands.cmd_network_rm)


def _process_flags(p) -> None:
    """What runs and with what: the flags ``run`` and ``service create`` share."""
    p.add_argument("-e", "--env", action="append", type=_env, default=[], metavar="K=V")
    p.add_argument("--memory", type=_size, metavar="SIZE")
    p.add_argument("--pids-limit", type=int, metavar="N")
    p.add_argument("--cpus", type=float, metavar="X")
    p.add_argument("-w", "--workdir", metavar="DIR", help="the working directory (made if "
                                                        "missing)")
    p.add_argument("-u", "--user", metavar="UID[:GID]", help="numbers: who the process runs "
                                                            "as (default: root, or the "
                                                            "image's USER)")
    p.add_argument("--entrypoint", metavar="CMD",
                   help="run CMD with the command as its arguments")
    p.add_argument("--init", action="store_true",
                   help="an init as its first process: signals passed on, orphans reaped")


@_command("run")
def _run(sub) -> None:
    p = sub.add_parser("run", help="run a container on this host")
    p.add_argument("-d", "--detach", action="store_true", help="print the id and return")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--name")
    p.add_argument("-n", "--network", metavar="CIDR|NAME",
                   help="a network by name, or a CIDR (a new one is made); default: the "
                        "cluster's network 'default'")
    p.add_argument("--hostname")
    _process_flags(p)
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                   help="a capability more than Docker's default set (ALL: all)")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                   help="a capability less (ALL: all; --cap-add adds back)")
    p.add_argument("-v", "--volume", action="append", default=[],
                   metavar="SOURCE:PATH[:ro]",
                   help="a host path (which must exist) or a named volume (made if new)")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH",
                   help="an empty tmpfs at PATH")
    p.add_argument("--read-only", action="store_true",
                   help="the root file system read-only (volumes and tmpfs stay writable)")
    p.add_argument("--restart", metavar="POLICY",
                   help="no (default), on-failure[:N], always, unless-stopped: carried out "
                        "by its host, recorded in the log")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:]HOSTPORT:PORT[/udp]",
                   help="this host's port HOSTPORT (at IP, or at all its addresses) to the "
                        "container's PORT, TCP unless /udp")
    p.add_argument("image", nargs="?", default="busybox", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=commands.cmd_run)


def _scale(value: str) -> tuple[str, int]:
    name, _, number = value.partition("=")
    if not name or not number.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME=REPLICAS")
    return name, int(number)


@_command("service")
def _service(sub) -> None:
    svc = sub.add_parser("service", help="services: replicas placed on the cluster's hosts "
                                         "by the log").add_subparsers(
        dest="service_command", required=True, parser_class=_Parser)
    p = svc.add_parser("create", help="create a service; waits until its replicas run")
    p.add_argument("--name", required=True)
    p.add_argument("--replicas", type=int, default=1, metavar="N")
    p.add_argument("-d", "--detach", action="store_true", help="return at once")
    p.add_argument("-n", "--network", metavar="CIDR|NAME",
                   help="default: the cluster's network 'default'")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="HOSTPORT:PORT[/udp]",
                   help="HOSTPORT on every host, to a running replica's PORT (the routing "
                        "mesh)")
    p.add_argument("--constraint", action="append", default=[],
                   metavar="node.name==H|node.name!=H", help="where replicas may run")
    p.add_argument("--restart", metavar="POLICY",
                   help="always (default), on-failure[:N], unless-stopped, no")
    _process_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=commands.cmd_service_create)
    p = svc.add_parser("ls", help="list services")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_service_ls)
    p = svc.add_parser("ps", help="a service's replicas: host, state, or why pending")
    p.add_argument("--json", action="store_true")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=commands.cmd_service_ps)
    p = svc.add_parser("inspect", help="a service, as JSON")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=commands.cmd_service_inspect)
    p = svc.add_parser("scale", help="set services' replicas (the highest-numbered go first)")
    p.add_argument("-d", "--detach", action="store_true", help="return at once")
    p.add_argument("scales", nargs="+", type=_scale, metavar="NAME=REPLICAS")
    p.set_defaults(func=commands.cmd_service_scale)
    p = svc.add_parser("rm", help="remove services and all their replicas")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=commands.cmd_service_rm)


@_command("new")
def _new(sub) -> None:
    p = sub.add_parser("new", help="an interactive shell in a new container on a subnet")
    p.add_argument("-n", "--network", required=True, metavar="CIDR|NAME")
    p.set_defaults(func=commands.cmd_new)


@_command("exec")
def _exec(sub) -> None:
    p = sub.add_parser("exec", help="run a command in a running container (any host)")
    p.add_argument("-i", "--interactive", action="store_true", help="pass stdin on")
    p.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=commands.cmd_exec)


@_command("ps")
def _ps(sub) -> None:
    p = sub.add_parser("ps", help="containers of the whole cluster")
    p.add_argument("-a", "--all", action="store_true", help="exited ones too")
    p.add_argument("-q", "--quiet", action="store_true", help="short ids only")
    p.add_argument("--format", metavar="json|TEMPLATE",
                   help="'json': a JSON object per line; else a template such as "
                        "'{{.Names}} {{.Status}}' (fields: " + ", ".join(commands.PS_FIELDS)
                        + ")")
    p.add_argument("--json", action="store_true", help="one JSON array")
    p.set_defaults(func=commands.cmd_ps)


@_command("inspect")
def _inspect(sub) -> None:
    p = sub.add_parser("inspect", help="a container, as JSON")
    p.add_argument("ref", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_inspect)


@_command("logs")
def _logs(sub) -> None:
    p = sub.add_parser("logs", help="a container's output (any host)")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", type=_tail, metavar="N|all",
                   help="only the last N lines (default: all)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="each line after the time it came (RFC 3339, UTC)")
    p.add_argument("ref", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_logs)


@_command("stop")
def _stop(sub) -> None:
    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after -t seconds (any host, "
                                    "through the log)")
    p.add_argument("-t", "--time", type=int, default=10, metavar="SECONDS")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_stop)


@_command("start")
def _start(sub) -> None:
    p = sub.add_parser("start", help="run exited containers again, on their hosts, in the "
                                     "same root (any host, through the log)")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_start)


@_command("restart")
def _restart(sub) -> None:
    p = sub.add_parser("restart", help="stop, then start (any host, through the log)")
    p.add_argument("-t", "--time", type=int, default=10, metavar="SECONDS")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_restart)


@_command("wait")
def _wait(sub) -> None:
    p = sub.add_parser("wait", help="until containers exit; prints their exit codes")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_wait)


@_command("kill")
def _kill(sub) -> None:
    p = sub.add_parser("kill", help="send a signal to containers (any host; default KILL)")
    p.add_argument("-s", "--signal", default="KILL", metavar="SIG",
                   help="a name (KILL, TERM, HUP...) or a number")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_kill)


@_command("version")
def _version(sub) -> None:
    p = sub.add_parser("version", help="this CLI's version and the daemon's")
    p.set_defaults(func=commands.cmd_version)


@_command("info")
def _info(sub) -> None:
    p = sub.add_parser("info", help="this host's daemon and the cluster, in short")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_info)


@_command("rm")
def _rm(sub) -> None:
    p = sub.add_parser("rm", help="remove containers (from any host, through the log)")
    p.add_argument("-f", "--force", action="store_true", help="also running ones")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=commands.cmd_rm)


@_command("volume")
def _volume(sub) -> None:
    vol = sub.add_parser("volume", help="this host's named volumes").add_subparsers(
        dest="volume_command", required=True, parser_class=_Parser)
    p = vol.add_parser("create", help="make a volume; prints its name")
    p.add_argument("name", nargs="?", metavar="NAME", help="default: a random one")
    p.set_defaults(func=commands.cmd_volume_create)
    p = vol.add_parser("ls", help="list volumes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_volume_ls)
    p = vol.add_parser("inspect", help="a volume, as JSON (and the containers using it)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=commands.cmd_volume_inspect)
    p = vol.add_parser("rm", help="remove volumes no container uses")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=commands.cmd_volume_rm)


@_command("image")
def _image(sub) -> None:
    img = sub.add_parser("image", help="images: this host's, and where the cluster's "
                                       "are").add_subparsers(
        dest="image_command", required=True, parser_class=_Parser)
    p = img.add_parser("ls", help="list images: this host's, and those the log says "
                                  "other hosts hold (HOSTS)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.cmd_image_ls)
    p = img.add_parser("import", help="import a root filesystem tarball as NAME[:TAG]")
    p.add_argument("ref", metavar="NAME[:TAG]")
    p.add_argument("file", metavar="FILE.tar[.gz]")
    p.set_defaults(func=commands.cmd_image_import)
    p = img.add_parser("load", help="load a 'docker save' archive or an OCI image layout "
                                    "tarball (its config: run's defaults)")
    p.add_argument("-i", "--input", required=True, metavar="FILE.tar")
    p.add_argument("ref", nargs="?", metavar="NAME[:TAG]",
                   help="the name to give it (default: the one the archive gives)")
    p.set_defaults(func=commands.cmd_image_load)
    p = img.add_parser("pull", help="download the Alpine minirootfs (checks its SHA-256)")
    p.add_argument("ref", metavar="alpine:X.Y.Z")
    p.add_argument("--mirror", metavar="URL",
                   help="base URL instead of https://dl-cdn.alpinelinux.org/alpine")
    p.set_defaults(func=commands.cmd_image_pull)
    p = img.add_parser("rm", help="remove images")
    p.add_argument("refs", nargs="+", metavar="NAME[:TAG]")
    p.set_defaults(func=commands.cmd_image_rm)


@_command("replay")
def _replay(sub) -> None:
    p = sub.add_parser("replay", help="what every host should look like, from the log alone")
    p.add_argument("--until", type=_since, metavar="SEQ", help="stop after this seq")
    p.add_argument("--node", metavar="NAME", help="only this host's overlay")
    p.add_argument("--json", action="store_true")
    p.add_argument("--file", metavar="FILE",
                   help="read 'events --json' or 'events --msgpack' output instead of asking "
                        "the daemon ('-': stdin)")
    p.add_argument("--check", action="store_true",
                   help="compare this host's kernel with the log; print every difference")
    p.set_defaults(func=commands.cmd_replay)
