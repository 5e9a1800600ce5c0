"""The commands: each turns parsed arguments into requests and prints the answers.

Start-up time counts: this imports the standard library and the CLI's own
modules only (``replay`` imports the projections when it runs).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from cantainer.cli.client import call, connect, replies, request
from cantainer.errors import REFUSED, CantainerError, Invalid
from cantainer.ids import new_event_id



def _parse_data(args) -> dict:
    if args.data is not None:
        if args.fields:
            raise Invalid("give either --data JSON or key=value fields, not both")
        try:
            data = json.loads(args.data)
        except ValueError as exc:
            raise Invalid(f"--data is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Invalid("--data must be a JSON object")
        return data
    data = {}
    for field in args.fields:
        key, sep, value = field.partition("=")
        if not sep or not key:
            raise Invalid(f"{field!r} is not key=value")
        if key in data:
            raise Invalid(f"field {key!r} given twice")
        data[key] = value
    return data


def _read_batch(path: str) -> list[dict]:
    try:
        stream = sys.stdin if path == "-" else open(path)
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror}") from None
    items = []
    with stream:
        for n, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise Invalid(f"{path}:{n}: not valid JSON: {exc}") from None
            if not isinstance(item, dict):
                raise Invalid(f"{path}:{n}: expected an object with type, data, id")
            items.append(item)
    if not items:
        raise Invalid(f"{path}: no events")
    return items


def cmd_submit_event(args) -> int:
    if args.file is not None:
        if args.type or args.fields or args.data is not None or args.id:
            raise Invalid("--file takes the events from the file; give no TYPE or fields")
        items = _read_batch(args.file)
        if not all(item.get("id") for item in items):
            print("cantainer: warning: events without an id get a fresh one; a retried "
                  "batch may then append twice", file=sys.stderr)
        for item in items:
            item.setdefault("id", new_event_id())
    else:
        if not args.type:
            raise Invalid("submit-event needs an event TYPE (or --file)")
        items = [{"type": args.type, "data": _parse_data(args),
                  "id": args.id or new_event_id()}]
    reply = call(args.socket, {"op": "submit", "events": items})
    print("\n".join(str(seq) for seq in reply["seqs"]))
    return 0


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def cmd_events(args) -> int:
    message = {"op": "events", "since": args.since, "follow": args.follow,
               "types": args.type or []}
    if args.msgpack:
        return _events_raw(args, message)
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


def _events_raw(args, message: dict) -> int:
    """``events --msgpack``: the record stream the daemon sends, as it is."""
    import base64

    if args.json:
        raise Invalid("--json and --msgpack are two formats: give one")
    if sys.stdout.isatty():
        raise Invalid("--msgpack writes binary: send it to a file or a pipe")
    out = sys.stdout.buffer
    for reply in request(args.socket, {**message, "raw": True}):
        if "end" in reply:
            break
        out.write(base64.b64decode(reply["records"]))
        if args.follow:
            out.flush()
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
    print(f"reads    the log from {'the leader' if status['feed'] == 'leader' else 'relay ' + status['feed']}")
    print(f"head     {status['head']}   applied here {status['applied']}"
          + (f"   archived up to {status['first'] - 1}" if status.get("first", 0) > 1
             else ""))
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
                             "internal": args.internal, "id": new_event_id()})["network"]
    print(net["name"])
    return 0


def cmd_network_ls(args) -> int:
    return _show(call(args.socket, {"op": "network_ls"})["networks"], args.json, [
        ("NAME", 20, lambda n: n["name"]), ("CIDR", 18, lambda n: n["cidr"]),
        ("VNI", 8, lambda n: n["vni"]), ("EGRESS", 8, lambda n: "no" if n["internal"] else "nat"),
        ("CONTAINERS", 0, lambda n: n["containers"])])


def cmd_network_rm(args) -> int:
    for name in args.names:
        call(args.socket, {"op": "network_rm", "name": name, "id": new_event_id()})
        print(name)
    return 0


def cmd_service_create(args) -> int:
    s = call(args.socket, {
        "op": "service_create", "name": args.name, "replicas": args.replicas,
        "image": args.image, "command": args.command or None,
        "entrypoint": [args.entrypoint] if args.entrypoint is not None else None,
        "network": args.network, "env": args.env, "workdir": args.workdir,
        "user": args.user, "memory": args.memory, "pids_limit": args.pids_limit,
        "cpus": args.cpus, "ports": args.publish, "restart": args.restart,
        "init": args.init, "constraints": args.constraint, "detach": args.detach,
        "id": new_event_id()})["service"]
    print(s["name"])
    if s["pending"]:
        print(f"cantainer: {s['pending']} of {s['replicas']} replicas pending: "
              f"'cantainer service ps {s['name']}' says why", file=sys.stderr)
    return 0


def _replicas(s: dict) -> str:
    return f"{s['running']}/{s['replicas']}" + (f" ({s['pending']} pending)"
                                                 if s["pending"] else "")


def cmd_service_ls(args) -> int:
    return _show(call(args.socket, {"op": "service_ls"})["services"], args.json, [
        ("NAME", 16, lambda s: s["name"]), ("REPLICAS", 16, _replicas),
        ("IMAGE", 16, lambda s: s["image"]), ("NETWORK", 16, lambda s: s["network"]),
        ("PORTS", 0, lambda s: ", ".join(s["ports"]))])


def cmd_service_ps(args) -> int:
    return _show(call(args.socket, {"op": "service_ps", "name": args.name})["tasks"],
                 args.json, [
        ("NAME", 18, lambda t: t["name"]), ("HOST", 10, lambda t: t["host"] or "-"),
        ("STATE", 10, lambda t: t["state"]), ("ADDRESS", 16, lambda t: t["ip"] or "-"),
        ("ID", 0, lambda t: t["id"][:12] if t["id"] else t.get("reason") or "")])


def cmd_service_inspect(args) -> int:
    print(json.dumps(call(args.socket, {"op": "service_inspect",
                                        "name": args.name})["service"], indent=2))
    return 0


def cmd_service_scale(args) -> int:
    for name, replicas in args.scales:
        s = call(args.socket, {"op": "service_scale", "name": name, "replicas": replicas,
                               "detach": args.detach, "id": new_event_id()})["service"]
        print(f"{s['name']} scaled to {s['replicas']}")
    return 0


def cmd_service_rm(args) -> int:
    return _each(args, args.names, "service_rm", "removed", key="name", fresh_id=True)


def cmd_image_ls(args) -> int:
    images = call(args.socket, {"op": "image_ls"})["images"]
    return _show(images, args.json, [
        ("IMAGE", 24, lambda i: f"{i['name']}:{i['tag']}"),
        ("SIZE", 10, lambda i: f"{i['size'] / 2**20:.1f}MiB"),
        ("CREATED", 22, lambda i: _iso(i["created"])[:19] if i["created"] else "-"),
        ("HOSTS", 20, lambda i: ",".join(i.get("hosts") or []) or "-"),
        ("SOURCE", 0, lambda i: i["source"])])


def cmd_image_import(args) -> int:
    return _image_from(args, args.file, {"op": "image_import", "ref": args.ref})


def cmd_image_load(args) -> int:
    return _image_from(args, args.input, {"op": "image_load", "ref": args.ref})


def _image_from(args, given: str, request: dict) -> int:
    """An image made from a file of this host's, which the daemon reads by its path."""
    path = os.path.abspath(given)
    if not os.path.isfile(path):
        raise Invalid(f"no file {given}")
    image = call(args.socket, {**request, "path": path})["image"]
    print(f"{image['name']}:{image['tag']}")
    return 0


def _each(args, targets, op: str, answer: str, key: str = "ref", fresh_id: bool = False,
          **fields) -> int:
    """One request per target, in order, printing each answer's ``answer``; the first
    refusal stops there (what went before is done, as in Docker)."""
    for target in targets:
        message = {"op": op, key: target, **fields}
        if fresh_id:  # the idempotency key of the event it appends
            message["id"] = new_event_id()
        print(call(args.socket, message)[answer])
    return 0


def cmd_image_pull(args) -> int:
    image = call(args.socket, {"op": "image_pull", "ref": args.ref,
                               "mirror": args.mirror})["image"]
    print(f"{image['name']}:{image['tag']} sha256:{image['sha256']}")
    return 0


def cmd_image_rm(args) -> int:
    return _each(args, args.refs, "image_rm", "removed")


def cmd_run(args) -> int:
    """Exit codes as Docker's: the command's own; 125 when the daemon refuses."""
    attach = (args.interactive or args.tty) and not args.detach
    spec = {"op": "run", "image": args.image, "command": args.command or None,
            "name": args.name, "network": args.network, "env": args.env,
            "hostname": args.hostname, "memory": args.memory,
            "pids_limit": args.pids_limit, "cpus": args.cpus, "workdir": args.workdir,
            "user": args.user,
            "entrypoint": [args.entrypoint] if args.entrypoint is not None else None,
            "cap_add": args.cap_add, "cap_drop": args.cap_drop, "volumes": args.volume,
            "tmpfs": args.tmpfs, "read_only": args.read_only, "ports": args.publish,
            "restart": args.restart, "init": args.init,
            "attach": attach,
            "follow": not (attach or args.detach), "remove": args.rm,
            "id": new_event_id()}
    replies = request(args.socket, spec)
    try:
        first = next(replies)
        c = first["container"]
    except CantainerError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
        return REFUSED
    except StopIteration:
        print("cantainer: error: the daemon closed the connection", file=sys.stderr)
        return REFUSED
    if args.detach or attach:
        replies.close()  # nothing more comes on this connection
    if args.detach:
        print(c["id"])
        return 0
    if attach:
        from cantainer.cli import terminal  # pty relaying: only interactive runs need it

        code = terminal.attach(first["attach"], interactive=args.interactive, tty=args.tty)
        if code is None:
            print(f"cantainer: error: container {c['name']} did not start (cantainer logs "
                  f"{c['id'][:12]} says why)", file=sys.stderr)
        if args.rm:
            call(args.socket, {"op": "rm", "ref": c["id"], "force": True})
        return REFUSED if code is None else code
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
    return REFUSED if code is None else code


def cmd_exec(args) -> int:
    """Run a command in a running container of any host; 125 when that is refused."""
    if not args.command:
        raise Invalid("exec needs a command")
    from cantainer.cli import terminal

    message = {"op": "exec", "ref": args.ref, "command": args.command,
               "interactive": args.interactive, "tty": args.tty,
               "size": terminal.size() if args.tty else None}
    try:
        return terminal.exec_relay(connect(args.socket, message), args.interactive, args.tty)
    except CantainerError as exc:
        print(f"cantainer: error: {exc}", file=sys.stderr)
        return REFUSED


def cmd_new(args) -> int:
    """The original tool's command: an interactive shell in a new container on a subnet."""
    args.image, args.command, args.detach = "busybox", ["/bin/sh"], False
    args.interactive = args.tty = args.rm = True
    args.name = args.hostname = args.memory = args.pids_limit = args.cpus = None
    args.workdir = args.user = args.entrypoint = None
    args.env, args.cap_add, args.cap_drop, args.volume, args.tmpfs = [], [], [], [], []
    args.publish, args.read_only, args.restart, args.init = [], False, None, False
    return cmd_run(args)


# ps --format: Docker's field names, and ours (Host, Address)
PS_FIELDS = {"ID": lambda c: c["id"][:12], "Names": lambda c: c["name"],
             "Image": lambda c: c["image"], "Status": lambda c: c["state"],
             "State": lambda c: c["state"], "Networks": lambda c: c["network"],
             "Host": lambda c: c["host"], "Address": lambda c: c["ip"],
             "Ports": lambda c: ", ".join(c.get("ports", []))}
_FIELD_RE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def _template(text: str):
    """A ``--format`` template: ``{{.Field}}`` replaced, ``\\t`` and ``\\n`` as in Docker."""
    for name in _FIELD_RE.findall(text):
        if name not in PS_FIELDS:
            raise Invalid(f"--format: no field {name!r} (fields: {', '.join(PS_FIELDS)})")
    if "{{" in _FIELD_RE.sub("", text):
        raise Invalid("--format: only {{.Field}} is understood, or 'json'")
    text = text.replace("\\t", "\t").replace("\\n", "\n")
    return lambda c: _FIELD_RE.sub(lambda m: str(PS_FIELDS[m.group(1)](c)), text)


def cmd_ps(args) -> int:
    show = _template(args.format) if args.format not in (None, "json") else None
    found = call(args.socket, {"op": "ps", "all": args.all})["containers"]
    if args.quiet or args.format is not None:
        for c in found:
            print(c["id"][:12] if args.quiet else
                  json.dumps({k: v(c) for k, v in PS_FIELDS.items()}) if show is None else
                  show(c))
        return 0
    return _show(found, args.json, [
        ("ID", 14, lambda c: c["id"][:12]), ("NAME", 16, lambda c: c["name"]),
        ("HOST", 10, lambda c: c["host"]), ("IMAGE", 14, lambda c: c["image"]),
        ("ADDRESS", 16, lambda c: c["ip"]), ("STATE", 10, lambda c: c["state"]),
        ("NETWORK", 16, lambda c: c["network"]),
        ("PORTS", 0, lambda c: ", ".join(c.get("ports", [])))])


def cmd_inspect(args) -> int:
    print(json.dumps(call(args.socket, {"op": "inspect", "ref": args.ref})["container"],
                     indent=2))
    return 0


def cmd_logs(args) -> int:
    for reply in request(args.socket, {"op": "logs", "ref": args.ref, "follow": args.follow,
                                       "tail": args.tail, "timestamps": args.timestamps}):
        if "end" in reply:
            break
        sys.stdout.write(reply["data"])
        sys.stdout.flush()
    return 0


def cmd_stop(args) -> int:
    return _each(args, args.refs, "stop", "stopped", timeout=args.time)


def cmd_start(args) -> int:
    return _each(args, args.refs, "start", "started", fresh_id=True)


def cmd_restart(args) -> int:
    return _each(args, args.refs, "restart", "restarted", fresh_id=True, timeout=args.time)


def cmd_volume_create(args) -> int:
    print(call(args.socket, {"op": "volume_create", "name": args.name})["volume"]["name"])
    return 0


def cmd_volume_ls(args) -> int:
    found = call(args.socket, {"op": "volume_ls"})["volumes"]
    return _show(found, args.json, [("NAME", 34, lambda v: v["name"]),
                                    ("MOUNTPOINT", 0, lambda v: v["mountpoint"])])


def cmd_volume_inspect(args) -> int:
    print(json.dumps(call(args.socket, {"op": "volume_inspect", "name": args.name})["volume"],
                     indent=2))
    return 0


def cmd_volume_rm(args) -> int:
    return _each(args, args.names, "volume_rm", "removed", key="name")


def cmd_wait(args) -> int:
    return _each(args, args.refs, "wait", "exit_code")


def cmd_kill(args) -> int:
    return _each(args, args.refs, "kill", "killed", signal=args.signal)


def cmd_version(args) -> int:
    from cantainer import __version__
    print(f"client: cantainer {__version__}")
    server = call(args.socket, {"op": "version"})
    print(f"server: cantainerd {server['version']} on {server['node']}")
    return 0


def cmd_info(args) -> int:
    info = call(args.socket, {"op": "info"})["info"]
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    m, c = info["members"], info["containers"]
    for label, value in [
            ("node", f"{info['node']} (cantainerd {info['version']}, {info['data_dir']})"),
            ("log", f"applied up to seq {info['applied']}"),
            ("members", f"{m['joined']} joined, {m['suspected']} suspected"),
            ("containers", f"{c['running']} running, {c['exited']} exited, {c['created']} "
                           f"created; {info['containers_here']} on this host"),
            ("networks", f"{info['networks']}; default {info['default_network'] or 'none'}"),
            ("images", f"{info['images_here']} on this host"),
            ("cgroups", ", ".join(info["cgroup_controllers"]) or "none visible: no limits")]:
        print(f"{label:<11} {value}")
    return 0


def cmd_join_token(args) -> int:
    print(call(args.socket, {"op": "join_token", "rotate": args.rotate})["token"])
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
    return _each(args, args.refs, "rm", "removed", force=args.force)


def _records_from(args, view, asked=None):
    """The records to replay, in order: the daemon's log, or a file of ``events --json`` (JSON
    Lines) or ``events --msgpack`` (a record stream), told apart by their first byte."""
    if args.file is None:  # each batch decoded while the daemon reads the next
        import base64

        return (rec for reply in replies(asked) if "records" in reply
                for rec in view.records_from_stream(base64.b64decode(reply["records"])))
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                data = f.read()
    except OSError as exc:
        raise Invalid(f"cannot read {args.file}: {exc.strerror}") from None
    if data.lstrip()[:1] in (b"{", b""):
        try:
            return view.records_from_json_lines(data)
        except Invalid as exc:
            raise Invalid(f"{args.file} is not JSON Lines from 'events --json': {exc}") \
                from None
    try:
        return view.records_from_stream(data)
    except Invalid as exc:
        raise Invalid(f"{args.file} is not a record stream from 'events --msgpack': {exc}") \
            from None


def cmd_replay(args) -> int:
    if args.check:
        if args.file or args.until is not None:
            raise Invalid("--check compares this host's kernel with the whole live log; "
                                 "it takes no --file or --until")
        reply = call(args.socket, {"op": "check"})
        for difference in reply["differences"]:
            print(difference)
        print(f"{len(reply['differences'])} differences at seq {reply['applied']}",
              file=sys.stderr)
        return 1 if reply["differences"] else 0
    if args.file is None:  # asked first: the daemon reads while the projections load
        asked = connect(args.socket, {"op": "events", "since": 0, "raw": True})
    from cantainer.projections import view  # the projections: only this command needs them

    # Hundreds of thousands of small acyclic objects: the cyclic GC would only
    # rescan them again and again (a third of the command's time at 100 000 events).
    import gc
    gc.disable()
    records = _records_from(args, view, asked if args.file is None else None)
    result = view.view(view.replay(records, args.until), args.node)
    print(json.dumps(result) if args.json else view.render(result))
    return 0
