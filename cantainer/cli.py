"""``cantainer``: the command line, a thin client of the local API.

Start-up time counts: this module imports the standard library and
``cantainer.errors`` only.  Everything else happens in the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from cantainer.errors import ApiError, CantainerError, DaemonUnreachable

DEFAULT_SOCKET = "/run/cantainer/cantainerd.sock"


# -- talking to the daemon ------------------------------------------------------------


def connect(path: str, message: dict) -> socket.socket:
    """A connection to the daemon with ``message`` sent on it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonUnreachable(f"no cantainerd answers at {path} (is it running? "
                                "see --socket / CANTAINER_SOCKET)") from None
    except PermissionError:
        sock.close()
        raise DaemonUnreachable(f"permission denied on {path}: cantainer needs root") from None
    sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    return sock


def request(path: str, message: dict):
    """Send one request; yield the response objects; raise ApiError on an error line."""
    sock = connect(path, message)
    with sock, sock.makefile("rb") as stream:
        for line in stream:
            reply = json.loads(line)
            if "error" in reply:
                raise ApiError(reply["error"])
            yield reply


def call(path: str, message: dict) -> dict:
    for reply in request(path, message):
        return reply
    raise ApiError("the daemon closed the connection without answering")


# -- commands -------------------------------------------------------------------------


def _parse_data(args) -> dict:
    if args.data is not None:
        if args.fields:
            raise CantainerError("give either --data JSON or key=value fields, not both")
        try:
            data = json.loads(args.data)
        except ValueError as exc:
            raise CantainerError(f"--data is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CantainerError("--data must be a JSON object")
        return data
    data = {}
    for field in args.fields:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise CantainerError(f"{field!r} is not key=value")
        if key in data:
            raise CantainerError(f"field {key!r} given twice")
        data[key] = value
    return data


def _read_batch(path: str) -> list[dict]:
    try:
        stream = sys.stdin if path == "-" else open(path)
    except OSError as exc:
        raise CantainerError(f"cannot read {path}: {exc.strerror}") from None
    items = []
    with stream:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise CantainerError(f"{path}:{n}: not valid JSON: {exc}") from None
            if not isinstance(item, dict):
                raise CantainerError(f"{path}:{n}: expected an object with type, data, id")
            items.append(item)
    if not items:
        raise CantainerError(f"{path}: no events")
    return items


def cmd_submit_event(args) -> int:
    if args.file is not None:
        if args.type or args.fields or args.data is not None or args.id:
            raise CantainerError("--file takes the events from the file; give no TYPE or fields")
        items = _read_batch(args.file)
        if not all(item.get("id") for item in items):
            print("cantainer: warning: events without an id get a fresh one; a retried "
                  "batch may then append twice", file=sys.stderr)
        for item in items:
            item.setdefault("id", os.urandom(16).hex())
    else:
        if not args.type:
            raise CantainerError("submit-event needs an event TYPE (or --file)")
        items = [{"type": args.type, "data": _parse_data(args),
                  "id": args.id or os.urandom(16).hex()}]
    reply = call(args.socket, {"op": "submit", "events": items})
    print("\n".join(str(seq) for seq in reply["seqs"]))
    return 0


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def cmd_events(args) -> int:
    message = {"op": "events", "since": args.since, "follow": args.follow,
               "types": args.type or []}
    for reply in request(args.socket, message):
        if "end" in reply:
            break
        ev = reply["event"]
        if args.json:
            line = json.dumps(ev, separators=(",", ":"))
        else:
            data = json.dumps(ev["data"], separators=(",", ":")) if ev["data"] else \
                f"({ev.get('unknown', '')})"
            line = (f"{ev['seq']:>6}  {_iso(ev['time'])}  {ev['node']:<12} "
                    f"{ev['type']:<17} {ev['id']}  {data}")
        print(line, flush=args.follow)
    return 0


def _show(items: list[dict], as_json: bool, columns) -> int:
    """Print items as JSON, or as a table of ``(HEADER, width, value_of(item))`` columns."""
    if as_json:
        print(json.dumps(items, indent=2))
        return 0
    print(" ".join(h.ljust(w) for h, w, _ in columns).rstrip())
    for item in items:
        print(" ".join(str(value(item)).ljust(w) for _, w, value in columns).rstrip())
    return 0


def _ago(seconds) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s ago"


def cmd_status(args) -> int:
    status = call(args.socket, {"op": "status"})["status"]
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"node     {status['node']} ({status['address']}, id {status['node_id']})")
    print(f"leader   {status['leader'] or '(none: election in progress)'}")
    print(f"head     {status['head']}   applied here {status['applied']}")
    return _show(status["members"], False, [
        ("NAME", 16, lambda m: m["name"] or "?"), ("ADDRESS", 22, lambda m: m["address"]),
        ("ROLE", 8, lambda m: m["role"] + ("*" if m["leader"] else "")),
        ("APPLIED", 8, lambda m: "-" if m["applied"] is None else m["applied"]),
        ("HEARD", 8, lambda m: _ago(m["heard"])), ("ID", 0, lambda m: m["id"])])


def cmd_nodes(args) -> int:
    return _show(call(args.socket, {"op": "nodes"})["nodes"], args.json, [
        ("NAME", 16, lambda n: n["name"]), ("ADDRESS", 16, lambda n: n["address"]),
        ("STATE", 10, lambda n: n["state"]), ("ROLE", 8, lambda n: n["role"]),
        ("HEARD", 0, lambda n: _ago(n["heard"]))])


def cmd_network_create(args) -> int:
    net = call(args.socket, {"op": "network_create", "cidr": args.cidr, "name": args.name,
                             "id": os.urandom(16).hex()})["network"]
    print(net["name"])
    return 0


def cmd_network_ls(args) -> int:
    return _show(call(args.socket, {"op": "network_ls"})["networks"], args.json, [
        ("NAME", 20, lambda n: n["name"]), ("CIDR", 18, lambda n: n["cidr"]),
        ("VNI", 8, lambda n: n["vni"]), ("CONTAINERS", 0, lambda n: n["containers"])])


def cmd_network_rm(args) -> int:
    for name in args.names:
        call(args.socket, {"op": "network_rm", "name": name, "id": os.urandom(16).hex()})
        print(name)
    return 0


def cmd_image_ls(args) -> int:
    images = call(args.socket, {"op": "image_ls"})["images"]
    return _show(images, args.json, [
        ("IMAGE", 24, lambda i: f"{i['name']}:{i['tag']}"),
        ("SIZE", 10, lambda i: f"{i['size'] / 2**20:.1f}MiB"),
        ("CREATED", 22, lambda i: _iso(i["created"])[:19]),
        ("SOURCE", 0, lambda i: i["source"])])


def cmd_image_import(args) -> int:
    path = os.path.abspath(args.file)
    if not os.path.isfile(path):
        raise CantainerError(f"no file {args.file}")
    image = call(args.socket, {"op": "image_import", "ref": args.ref, "path": path})["image"]
    print(f"{image['name']}:{image['tag']}")
    return 0


def cmd_image_pull(args) -> int:
    image = call(args.socket, {"op": "image_pull", "ref": args.ref,
                               "mirror": args.mirror})["image"]
    print(f"{image['name']}:{image['tag']} sha256:{image['sha256']}")
    return 0


def cmd_image_rm(args) -> int:
    for ref in args.refs:
        print(call(args.socket, {"op": "image_rm", "ref": ref})["removed"])
    return 0


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


def cmd_run(args) -> int:
    """Exit codes as Docker's: the command's own; 125 when the daemon refuses."""
    attach = (args.interactive or args.tty) and not args.detach
    spec = {"op": "run", "image": args.image, "command": args.command or None,
            "name": args.name, "network": args.network, "env": args.env,
            "hostname": args.hostname, "memory": args.memory,
            "pids_limit": args.pids_limit, "cpus": args.cpus, "attach": attach,
            "follow": not (attach or args.detach), "remove": args.rm,
            "id": os.urandom(16).hex()}
    replies = request(args.socket, spec)
    try:
        first = next(replies)
        c = first["container"]
    except CantainerError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
        return 125
    except StopIteration:
        print("cantainer: error: the daemon closed the connection", file=sys.stderr)
        return 125
    if args.detach or attach:
        replies.close()  # nothing more comes on this connection
    if args.detach:
        print(c["id"])
        return 0
    if attach:
        from cantainer import terminal  # pty relaying: only interactive runs need it

        code = terminal.attach(first["attach"], interactive=args.interactive, tty=args.tty)
        if args.rm:
            call(args.socket, {"op": "rm", "ref": c["id"], "force": True})
        return 125 if code is None else code
    code = None
    try:
        for reply in replies:  # its output, then its exit code (removed first with --rm)
            if "data" in reply:
                sys.stdout.write(reply["data"])
                sys.stdout.flush()
            elif "exit_code" in reply:
                code = reply["exit_code"]
    except CantainerError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
    return 125 if code is None else code


def cmd_exec(args) -> int:
    """Run a command in a running container of any host; 125 when that is refused."""
    if not args.command:
        raise CantainerError("exec needs a command")
    from cantainer import terminal

    message = {"op": "exec", "ref": args.ref, "command": args.command,
               "interactive": args.interactive, "tty": args.tty,
               "size": terminal.size() if args.tty else None}
    try:
        return terminal.exec_relay(connect(args.socket, message), args.interactive, args.tty)
    except ApiError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
        return 125


def cmd_new(args) -> int:
    """The original tool's command: an interactive shell in a new container on a subnet."""
    args.image, args.command, args.detach = "busybox", ["/bin/sh"], False
    args.interactive = args.tty = args.rm = True
    args.name = args.env = args.hostname = args.memory = args.pids_limit = args.cpus = None
    args.env = []
    return cmd_run(args)


def cmd_ps(args) -> int:
    found = call(args.socket, {"op": "ps", "all": args.all})["containers"]
    return _show(found, args.json, [
        ("ID", 14, lambda c: c["id"][:12]), ("NAME", 16, lambda c: c["name"]),
        ("HOST", 10, lambda c: c["host"]), ("IMAGE", 14, lambda c: c["image"]),
        ("ADDRESS", 16, lambda c: c["ip"]), ("STATE", 10, lambda c: c["state"]),
        ("NETWORK", 0, lambda c: c["network"])])


def cmd_inspect(args) -> int:
    print(json.dumps(call(args.socket, {"op": "inspect", "ref": args.ref})["container"],
                     indent=2))
    return 0


def cmd_logs(args) -> int:
    for reply in request(args.socket, {"op": "logs", "ref": args.ref, "follow": args.follow}):
        if "end" in reply:
            break
        sys.stdout.write(reply["data"])
        sys.stdout.flush()
    return 0


def cmd_stop(args) -> int:
    for ref in args.refs:
        print(call(args.socket, {"op": "stop", "ref": ref, "timeout": args.time})["stopped"])
    return 0


def cmd_node_leave(args) -> int:
    reply = call(args.socket, {"op": "leave"})
    print(f"{reply['left']} left the cluster at seq {reply['seq']}; its daemon is stopping")
    return 0


def cmd_node_rm(args) -> int:
    for name in args.names:
        reply = call(args.socket, {"op": "node_rm", "name": name, "force": args.force})
        print(reply["removed"])
    return 0


def cmd_rm(args) -> int:
    for ref in args.refs:
        print(call(args.socket, {"op": "rm", "ref": ref, "force": args.force})["removed"])
    return 0


def _records_from(args):
    if args.file is None:
        return [reply["event"] for reply in request(args.socket, {"op": "events", "since": 0})
                if "event" in reply]
    try:
        with (sys.stdin if args.file == "-" else open(args.file)) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError as exc:
        raise CantainerError(f"cannot read {args.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise CantainerError(f"{args.file} is not JSON Lines from 'events --json': {exc}") \
            from None


def cmd_replay(args) -> int:
    if args.check:
        if args.file or args.until is not None:
            raise CantainerError("--check compares this host's kernel with the whole live log; "
                                 "it takes no --file or --until")
        reply = call(args.socket, {"op": "check"})
        for difference in reply["differences"]:
            print(difference)
        print(f"{len(reply['differences'])} differences at seq {reply['applied']}",
              file=sys.stderr)
        return 1 if reply["differences"] else 0
    from cantainer.actors import replay  # the projections: only this command needs them

    # Hundreds of thousands of small acyclic objects: the cyclic GC would only
    # rescan them again and again (a third of the command's time at 100 000 events).
    import gc
    gc.disable()
    records = [replay.record_from_json(obj) for obj in _records_from(args)]
    result = replay.view(replay.replay(records, args.until), args.node)
    print(json.dumps(result) if args.json else replay.render(result))
    return 0


def _since(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a seq number") from None
    if number < 0:
        raise argparse.ArgumentTypeError("a seq is >= 0")
    return number


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cantainer", description="Cantainer command line.")
    parser.add_argument("--socket", default=os.environ.get("CANTAINER_SOCKET", DEFAULT_SOCKET),
                        help=f"the daemon's API socket (default: $CANTAINER_SOCKET or "
                             f"{DEFAULT_SOCKET})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("submit-event", help="append a raw event to the log; prints its seq")
    p.add_argument("type", nargs="?", metavar="TYPE", help="event type, e.g. NetworkCreated")
    p.add_argument("fields", nargs="*", metavar="key=value")
    p.add_argument("--data", metavar="JSON", help="the event's fields as a JSON object")
    p.add_argument("--id", help="idempotency key: a retried submit with the same id appends once")
    p.add_argument("--file", metavar="FILE",
                   help="JSON Lines of {type, data, id} appended as one atomic batch ('-': stdin)")
    p.set_defaults(func=cmd_submit_event)

    p = sub.add_parser("events", help="print the event log")
    p.add_argument("--since", type=_since, default=0, metavar="SEQ",
                   help="only events after this seq")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--type", action="append", metavar="T", help="only events of this type")
    p.add_argument("--json", action="store_true", help="JSON Lines")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("status", help="nodes, Raft roles, leader, log head, applied seqs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("nodes", help="cluster members: name, address, state, Raft role")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_nodes)

    node = sub.add_parser("node", help="this host's membership").add_subparsers(
        dest="node_command", required=True, parser_class=_Parser)
    p = node.add_parser("leave", help="leave the cluster: stop this host's containers, free "
                                      "their addresses, stop its daemon")
    p.set_defaults(func=cmd_node_leave)
    p = node.add_parser("rm", help="evict hosts that are gone (NodeLeft on their behalf)")
    p.add_argument("--force", action="store_true", help="even if their heartbeat is live")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_node_rm)

    net = sub.add_parser("network", help="overlay networks").add_subparsers(
        dest="network_command", required=True, parser_class=_Parser)
    p = net.add_parser("create", help="create an overlay network; prints its name")
    p.add_argument("cidr", metavar="CIDR", help="e.g. 198.18.0.0/24")
    p.add_argument("--name", help="default: the CIDR with '-' for '/'")
    p.set_defaults(func=cmd_network_create)
    p = net.add_parser("ls", help="list networks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_network_ls)
    p = net.add_parser("rm", help="remove networks that have no containers")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_network_rm)

    p = sub.add_parser("run", help="run a container on this host")
    p.add_argument("-d", "--detach", action="store_true", help="print the id and return")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    p.add_argument("-t", "--tty", action="store_true", help="give the container a terminal")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--name")
    p.add_argument("-n", "--network", metavar="CIDR|NAME")
    p.add_argument("-e", "--env", action="append", type=_env, default=[], metavar="K=V")
    p.add_argument("--hostname")
    p.add_argument("--memory", type=_size, metavar="SIZE")
    p.add_argument("--pids-limit", type=int, metavar="N")
    p.add_argument("--cpus", type=float, metavar="X")
    p.add_argument("image", nargs="?", default="busybox", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("new", help="an interactive shell in a new container on a subnet")
    p.add_argument("-n", "--network", required=True, metavar="CIDR|NAME")
    p.set_defaults(func=cmd_new)
    p = sub.add_parser("exec", help="run a command in a running container (any host)")
    p.add_argument("-i", "--interactive", action="store_true", help="pass stdin on")
    p.add_argument("-t", "--tty", action="store_true", help="give the command a terminal")
    p.add_argument("ref", metavar="NAME|ID")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("ps", help="containers of the whole cluster")
    p.add_argument("-a", "--all", action="store_true", help="exited ones too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ps)
    p = sub.add_parser("inspect", help="a container, as JSON")
    p.add_argument("ref", metavar="NAME|ID")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("logs", help="a container's output (any host)")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("ref", metavar="NAME|ID")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser("stop", help="SIGTERM, then SIGKILL after -t seconds (any host, "
                                    "through the log)")
    p.add_argument("-t", "--time", type=int, default=10, metavar="SECONDS")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("rm", help="remove containers (from any host, through the log)")
    p.add_argument("-f", "--force", action="store_true", help="also running ones")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=cmd_rm)

    img = sub.add_parser("image", help="this host's images").add_subparsers(
        dest="image_command", required=True, parser_class=_Parser)
    p = img.add_parser("ls", help="list images")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_image_ls)
    p = img.add_parser("import", help="import a root filesystem tarball as NAME[:TAG]")
    p.add_argument("ref", metavar="NAME[:TAG]")
    p.add_argument("file", metavar="FILE.tar[.gz]")
    p.set_defaults(func=cmd_image_import)
    p = img.add_parser("pull", help="download the Alpine minirootfs (checks its SHA-256)")
    p.add_argument("ref", metavar="alpine:X.Y.Z")
    p.add_argument("--mirror", metavar="URL",
                   help="base URL instead of https://dl-cdn.alpinelinux.org/alpine")
    p.set_defaults(func=cmd_image_pull)
    p = img.add_parser("rm", help="remove images")
    p.add_argument("refs", nargs="+", metavar="NAME[:TAG]")
    p.set_defaults(func=cmd_image_rm)

    p = sub.add_parser("replay", help="what every host should look like, from the log alone")
    p.add_argument("--until", type=_since, metavar="SEQ", help="stop after this seq")
    p.add_argument("--node", metavar="NAME", help="only this host's overlay")
    p.add_argument("--json", action="store_true")
    p.add_argument("--file", metavar="FILE",
                   help="read 'events --json' output instead of asking the daemon ('-': stdin)")
    p.add_argument("--check", action="store_true",
                   help="compare this host's kernel with the log; print every difference")
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CantainerError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
