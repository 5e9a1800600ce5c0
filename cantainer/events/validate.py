"""attrs validators for event fields: names, CIDRs, addresses, sizes.

Each raises :class:`cantainer.errors.InvalidEvent` with a message that names
the field and the offending value, so the CLI can print it as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import re

from cantainer.errors import InvalidEvent

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CONTAINER_ID_RE = re.compile(r"^[0-9a-f]{12,64}$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}(:[A-Za-z0-9._-]{1,64})?$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
EVENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
USER_RE = re.compile(r"^(0|[1-9][0-9]{0,9})(:(0|[1-9][0-9]{0,9}))?$")  # UID[:GID]
CAP_RE = re.compile(r"^(ALL|[A-Z][A-Z_]{1,30})$")  # without CAP_; the kernel knows which
PEM_RE = re.compile(r"^-----BEGIN CERTIFICATE-----\n([A-Za-z0-9+/=\n]{64,4096})"
                    r"-----END CERTIFICATE-----\n?$")
HEX32_RE = re.compile(r"^[0-9a-f]{64}$")

MAX_ARGS = 256
MAX_ARG_LEN = 4096


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of a value, cut short so an error stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def _fail(attribute, value, why: str) -> None:
    raise InvalidEvent(f"field {attribute.name!r}: {shown(value)} {why}")


def _check_str(attribute, value) -> None:
    if not isinstance(value, str):
        _fail(attribute, value, "must be a string")


def name(_instance, attribute, value) -> None:
    """A name of a node, network or container: DNS-label-ish, 1-63 chars."""
    _check_str(attribute, value)
    if not NAME_RE.match(value):
        _fail(attribute, value, "is not a valid name (1-63 of A-Z a-z 0-9 _ . -, "
                                "starting with a letter or digit)")


SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,56}$")  # + ".N" <= 63: a replica's name
MAX_REPLICAS = 1000
CONSTRAINT_RE = re.compile(r"^node\.name(==|!=)([A-Za-z0-9][A-Za-z0-9_.-]{0,62})$")


IMAGE_KINDS = ("rootfs", "image")  # image import/pull: a root tarball; image load: layers


def image_kind(_instance, attribute, value) -> None:
    if value not in IMAGE_KINDS:
        _fail(attribute, value, f"is not one of {', '.join(IMAGE_KINDS)}")


def hex64(_instance, attribute, value) -> None:
    _check_str(attribute, value)
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        _fail(attribute, value, "is not 64 lowercase hex digits (a SHA-256)")


def service_name(_instance, attribute, value) -> None:
    """A service's name: a name without dots, so that NAME.N names one replica."""
    _check_str(attribute, value)
    if not SERVICE_RE.match(value):
        _fail(attribute, value, "is not a valid service name (1-57 of A-Z a-z 0-9 _ -, "
                                "starting with a letter or digit)")


def parse_constraint(value: object) -> tuple[str, str]:
    """``node.name==H`` or ``node.name!=H``: (the operator, the host's name)."""
    m = CONSTRAINT_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidEvent(f"{shown(value)} is not a constraint this build knows "
                           "(node.name==HOST, node.name!=HOST)")
    return m.group(1), m.group(2)


def constraints(_instance, attribute, value) -> None:
    _check_strings(attribute, value, 16)
    for item in value:
        try:
            parse_constraint(item)
        except InvalidEvent as exc:
            raise InvalidEvent(f"field {attribute.name!r}: {exc}") from None


def optional_name(instance, attribute, value) -> None:
    if value is not None:
        name(instance, attribute, value)


def container_id(_instance, attribute, value) -> None:
    _check_str(attribute, value)
    if not CONTAINER_ID_RE.match(value):
        _fail(attribute, value, "is not a container id (12-64 lowercase hex digits)")


def event_id(value: object) -> str:
    """Check an event's idempotency key; returns it."""
    if not isinstance(value, str) or not EVENT_ID_RE.match(value):
        raise InvalidEvent(f"event id {shown(value)} is not valid (1-128 of A-Z a-z 0-9 . _ : -, "
                           "starting with a letter or digit)")
    return value


def parse_cidr(value: object) -> ipaddress.IPv4Network:
    """An IPv4 network with no host bits set and room for at least two hosts."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidEvent(f"{shown(value)} is not a CIDR (expected e.g. 198.18.0.0/24)")
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise InvalidEvent(f"{shown(value)} is not a valid IPv4 CIDR: {exc}") from None
    if not 8 <= net.prefixlen <= 29:
        raise InvalidEvent(f"{value!r}: prefix length must be between /8 and /29")
    return net


def _parsed_by(parse):
    """A validator of a string field: ``parse`` accepts it, or names why not."""
    def check(_instance, attribute, value) -> None:
        _check_str(attribute, value)
        try:
            parse(value)
        except InvalidEvent as exc:
            raise InvalidEvent(f"field {attribute.name!r}: {exc}") from None
    return check


cidr = _parsed_by(parse_cidr)


def network_ref(_instance, attribute, value) -> None:
    """A network given by name or by CIDR."""
    _check_str(attribute, value)
    if "/" in value:
        cidr(_instance, attribute, value)
    else:
        name(_instance, attribute, value)


def ipv4_address(_instance, attribute, value) -> None:
    _check_str(attribute, value)
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        _fail(attribute, value, "is not an IPv4 address")


def host_port(_instance, attribute, value) -> None:
    """``IPV4:PORT`` as dqlite addresses are written."""
    _check_str(attribute, value)
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        ok = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        _fail(attribute, value, "is not an address of the form IPV4:PORT")


def image(_instance, attribute, value) -> None:
    _check_str(attribute, value)
    if not IMAGE_RE.match(value):
        _fail(attribute, value, "is not an image name (e.g. busybox or alpine:3.20)")


def _int_in(attribute, value, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(attribute, value, "must be an integer")
    if not low <= value <= high:
        _fail(attribute, value, f"is out of range ({low}..{high})")


def in_range(low: int, high: int):
    def check(_instance, attribute, value) -> None:
        _int_in(attribute, value, low, high)
    return check


def checkpoint_every(_instance, attribute, value) -> None:
    """None (unrecorded), 0 (no checkpoints) or 100..10 000 000 records."""
    if value is not None and value != 0:
        _int_in(attribute, value, 100, 10_000_000)


def optional_in_range(low: int, high: int):
    def check(_instance, attribute, value) -> None:
        if value is not None:
            _int_in(attribute, value, low, high)
    return check


def optional_cpus(_instance, attribute, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(attribute, value, "must be a number")
    if not 0.01 <= value <= 1024:
        _fail(attribute, value, "is out of range (0.01..1024)")


def _check_strings(attribute, value, limit: int) -> None:
    if not isinstance(value, tuple):
        _fail(attribute, value, "must be a list of strings")
    if len(value) > limit:
        _fail(attribute, value, f"has more than {limit} items")
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_ARG_LEN or "\x00" in item:
            _fail(attribute, item, f"must be a string without NUL, at most {MAX_ARG_LEN} chars")


def argv(_instance, attribute, value) -> None:
    _check_strings(attribute, value, MAX_ARGS)


def env(_instance, attribute, value) -> None:
    _check_strings(attribute, value, MAX_ARGS)
    for item in value:
        if not ENV_RE.match(item):
            _fail(attribute, item, "is not an environment entry KEY=VALUE")


def optional_argv(instance, attribute, value) -> None:
    if value is not None:
        argv(instance, attribute, value)


def optional_abs_path(_instance, attribute, value) -> None:
    if value is None:
        return
    _check_str(attribute, value)
    if not value.startswith("/") or len(value) > MAX_ARG_LEN or "\x00" in value:
        _fail(attribute, value, "is not an absolute path")


def optional_user(_instance, attribute, value) -> None:
    if value is None:
        return
    _check_str(attribute, value)
    if not USER_RE.match(value) or any(int(n) >= 1 << 32 for n in value.split(":")):
        _fail(attribute, value, "is not UID[:GID] (numbers)")


def parse_user(value: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) of a valid ``user`` field; (None, None) for none (root)."""
    uid, _, gid = (value or "").partition(":")
    return (int(uid) if uid else None), (int(gid) if gid else None)


def capabilities(_instance, attribute, value) -> None:
    _check_strings(attribute, value, 64)
    for item in value:
        if not CAP_RE.match(item):
            _fail(attribute, item, "is not a capability name (e.g. NET_ADMIN, ALL)")


def parse_volume(value: str) -> tuple[str, str, bool]:
    """``SOURCE:TARGET[:ro|rw]`` (``-v``): (source, target, read-only).  SOURCE is an
    absolute host path or a volume's name; TARGET an absolute path in the container."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise InvalidEvent(f"{shown(value)} is not SOURCE:TARGET[:ro|rw]")
    source, target = parts[0], parts[1]
    if not (source.startswith("/") or NAME_RE.match(source)):
        raise InvalidEvent(f"{shown(value)}: {shown(source)} is neither an absolute host path "
                           "nor a volume name")
    if not _mount_target(target):
        raise InvalidEvent(f"{shown(value)}: {shown(target)} is not an absolute path in the "
                           "container (other than /, without '..')")
    return source, target, len(parts) == 3 and parts[2] == "ro"


def parse_port(value: str) -> tuple[str | None, int, int, str]:
    """``[IP:]HOSTPORT:PORT[/tcp|/udp]`` (``-p``): (the host address, None for all of
    them; the host's port; the container's; the protocol)."""
    spec, _, proto = value.partition("/") if isinstance(value, str) else ("", "", "")
    proto = proto or "tcp"
    parts = spec.split(":")
    if proto not in ("tcp", "udp") or len(parts) not in (2, 3):
        raise InvalidEvent(f"{shown(value)} is not [IP:]HOSTPORT:PORT[/tcp|/udp]")
    ip = None
    if len(parts) == 3:
        try:
            ip = str(ipaddress.IPv4Address(parts[0]))
        except ValueError:
            raise InvalidEvent(f"{shown(value)}: {shown(parts[0])} is not an IPv4 "
                               "address") from None
    numbers = []
    for text in parts[-2:]:
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise InvalidEvent(f"{shown(value)}: {shown(text)} is not a port (1-65535)")
        numbers.append(int(text))
    return ip, numbers[0], numbers[1], proto


def ports(_instance, attribute, value) -> None:
    _check_strings(attribute, value, 64)
    seen = set()
    for item in value:
        try:
            _, host_port, _, proto = parse_port(item)
        except InvalidEvent as exc:
            raise InvalidEvent(f"field {attribute.name!r}: {exc}") from None
        if (host_port, proto) in seen:
            _fail(attribute, item, f"publishes {host_port}/{proto} twice")
        seen.add((host_port, proto))


def parse_restart(value: object) -> tuple[str, int | None]:
    """``no | on-failure[:N] | always | unless-stopped``: (the policy, on-failure's
    most restarts, None: no bound)."""
    policy, _, count = value.partition(":") if isinstance(value, str) else ("", "", "")
    if policy in ("no", "always", "unless-stopped") and not count and ":" not in value:
        return policy, None
    if policy == "on-failure" and (":" not in value or (count.isdigit() and
                                                         0 < int(count) <= 1_000_000)):
        return policy, int(count) if count else None
    raise InvalidEvent(f"{shown(value)} is not a restart policy (no, on-failure[:N], "
                       "always, unless-stopped)")


restart_policy = _parsed_by(parse_restart)


def _mount_target(path: str) -> bool:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return path.startswith("/") and bool(parts) and ".." not in parts


def mount_targets(targets) -> None:
    """No mount inside another of the same container: every directory on a target's
    way is then the container's own (not a volume another container may change)."""
    norm = ["/" + "/".join(p for p in t.split("/") if p not in ("", ".")) for t in targets]
    for a in norm:
        for b in norm:
            if a != b and b.startswith(a + "/"):
                raise InvalidEvent(f"mount {b} is inside mount {a}: give them apart")
    if len(set(norm)) != len(norm):
        raise InvalidEvent("two mounts at one path")


def volumes(_instance, attribute, value) -> None:
    _check_strings(attribute, value, 64)
    for item in value:
        try:
            parse_volume(item)
        except InvalidEvent as exc:
            raise InvalidEvent(f"field {attribute.name!r}: {exc}") from None


def paths(_instance, attribute, value) -> None:
    _check_strings(attribute, value, 64)
    for item in value:
        if not _mount_target(item):
            _fail(attribute, item, "is not an absolute path (other than /, without '..')")


def boolean(_instance, attribute, value) -> None:
    if not isinstance(value, bool):
        _fail(attribute, value, "must be true or false")


def to_tuple(value):
    """Converter: lists (as msgpack and JSON give them) become tuples."""
    return tuple(value) if isinstance(value, list) else value


def fingerprint(pem: str) -> str:
    """The SHA-256 of a PEM certificate's DER bytes, hex: how a member is named on the
    wire (its TLS certificate) and in the log (its NodeJoined)."""
    found = PEM_RE.match(pem) if isinstance(pem, str) else None
    if found is None:
        raise InvalidEvent(f"{shown(pem)} is not a PEM certificate")
    try:
        der = base64.b64decode(found.group(1).replace("\n", ""), validate=True)
    except binascii.Error:
        raise InvalidEvent(f"{shown(pem)} is not a PEM certificate") from None
    return hashlib.sha256(der).hexdigest()


def optional_certificate(_instance, attribute, value) -> None:
    if value is not None:
        _check_str(attribute, value)
        try:
            fingerprint(value)
        except InvalidEvent:
            _fail(attribute, value, "is not a PEM certificate")


def optional_hex32(_instance, attribute, value) -> None:
    if value is not None:
        _check_str(attribute, value)
        if not HEX32_RE.match(value):
            _fail(attribute, value, "is not 64 lowercase hex digits")
