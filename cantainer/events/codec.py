"""Encoding events for the log, and decoding whatever the log holds.

``encode`` turns an event into a msgpack map of its fields (type and version
live in their own columns of the log).  ``decode`` never raises: a record of
an unknown type, of a newer version than this build knows, or with a payload
that does not decode becomes an :class:`UnknownEvent`, which projections skip.
``from_data`` builds an event from user input (JSON or ``key=value`` strings)
for ``submit-event``, with one-line errors that name the problem.

A *record stream* is the log's rows as they are stored, one msgpack array
``[seq, id, type, version, node, time, payload]`` after another, the payload
the stored bytes themselves: ``events --msgpack`` writes one, ``replay`` reads
one (from a file, or from the daemon), and each payload is decoded once, by its
reader.  ``pack_rows`` and ``unpack_records`` are the format's one owner.
"""

from __future__ import annotations

import json
import operator
import types
import typing

import attrs
import msgpack

from cantainer.errors import InvalidEvent, PayloadTooLarge
from cantainer.events.catalogue import CATALOGUE, Event
from cantainer.events.validate import shown
from cantainer.ids import new_event_id  # noqa: F401 - the codec's callers take it here

MAX_PAYLOAD = 64 * 1024


@attrs.frozen
class UnknownEvent:
    """A log record this build cannot apply; ``reason`` says why."""

    type: str
    version: int
    reason: str


class Recorded(typing.NamedTuple):
    """An event as the log holds it: its position, identity and origin.  (A named
    tuple, not an attrs class: one is made for every record read, and replay reads
    hundreds of thousands.)"""

    seq: int
    id: str
    type: str
    version: int
    node: str
    time: float
    event: Event | UnknownEvent

    def data(self) -> dict:
        """The event's fields as JSON-ready values (empty for unknown events)."""
        return to_data(self.event) if isinstance(self.event, Event) else {}


def to_data(event: Event) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in attrs.asdict(event, recurse=False).items()}


def encode(event: Event) -> bytes:
    payload = msgpack.packb(to_data(event), use_bin_type=True)
    if len(payload) > MAX_PAYLOAD:
        raise PayloadTooLarge(
            f"{event.type_name()} payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD}")
    return payload


def decode(type_name: object, version: object, payload: object) -> Event | UnknownEvent:
    """The event a log record holds, or an :class:`UnknownEvent` saying why not."""
    if type(payload) is not bytes:
        return _unknown(type_name, version, "payload is not bytes")
    if len(payload) > MAX_PAYLOAD:
        return _unknown(type_name, version, f"payload of {len(payload)} bytes exceeds "
                                            f"{MAX_PAYLOAD}")
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many kinds on garbage
        return _unknown(type_name, version, f"payload does not decode: {type(exc).__name__}")
    return decode_fields(type_name, version, data)


def decode_fields(type_name: object, version: object, data: object) -> Event | UnknownEvent:
    """The event of this type and version with these fields, or an :class:`UnknownEvent`.

    Used for decoded payloads and for records read back from ``events --json``.
    """
    cls = _READABLE.get((type_name, version)) if type(type_name) is str and \
        type(version) is int else None
    if cls is None:
        return _unreadable(type_name, version)
    if not isinstance(data, dict):
        return _unknown(type_name, version, "payload is not a map")
    try:
        return cls(**data)
    except InvalidEvent as exc:
        return _unknown(type_name, version, str(exc))
    except (TypeError, ValueError) as exc:
        return _unknown(type_name, version, f"fields do not match {cls.__name__}: {exc}")


# (type, version) -> the class that reads it: what this build can read, decided once.
_READABLE = {(name, version): cls for name, cls in CATALOGUE.items()
             for version in range(1, cls.VERSION + 1)}


def _unreadable(type_name: object, version: object) -> UnknownEvent:
    """Why a record of this type and version is no event of this build's."""
    cls = CATALOGUE.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        return _unknown(type_name, version, "unknown event type")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return _unknown(type_name, version, f"invalid version {shown(version)}")
    return _unknown(type_name, version, f"version {version} is newer than this "
                                        f"build's {cls.VERSION}")


def _unknown(type_name: object, version: object, reason: str) -> UnknownEvent:
    shown_type = type_name if isinstance(type_name, str) else repr(type_name)
    shown_version = version if isinstance(version, int) and not isinstance(version, bool) else -1
    return UnknownEvent(shown_type, shown_version, reason)


def pack_rows(rows) -> bytes:
    """A record stream of rows ``(seq, id, type, version, node, time, payload)``."""
    pack = msgpack.Packer(use_bin_type=True).pack
    return b"".join(pack(row) for row in rows)


class BadStream(ValueError):
    """A record stream that is not one."""


_SEQ = operator.itemgetter(0)


def rows_from_json(rows: list) -> list[list]:
    """Rows as a read gives them in JSON (``log.py``: the node makes that value),
    ``[seq, id, type, version, node, "TIME", "HEX" | null]``, as stored: the time
    written with 17 digits (exact), the payload in hex (null: no blob, which then
    decodes as unknown).  In place; in seq order."""
    try:
        for row in rows:
            row[5] = float(row[5])
            row[6] = bytes.fromhex(row[6]) if row[6] is not None else None
    except (TypeError, ValueError, IndexError) as exc:
        raise BadStream(f"not rows of the log: {exc}") from None
    rows.sort(key=_SEQ)  # an aggregate's order is its scan's, not a promise
    return rows


def unpack_rows(data: bytes):
    """The rows of a record stream, as stored (payloads not decoded); ``BadStream`` at
    anything else, a stream cut short included."""
    unpacker = msgpack.Unpacker(raw=False, use_list=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    end = 0  # where the last whole record ends
    try:
        for row in unpacker:
            end = unpacker.tell()
            if type(row) is not tuple or len(row) != 7:
                raise BadStream(f"a record is {shown(row)}, not [seq, id, type, version, "
                                "node, time, payload]")
            seq, rid, typ, version, node, when, payload = row
            if type(seq) is not int or type(rid) is not str or type(typ) is not str \
                    or type(node) is not str or type(when) is not float:
                raise BadStream(f"a record is {shown(row)}")
            yield row
    except BadStream:
        raise
    except (msgpack.UnpackException, ValueError) as exc:
        raise BadStream(f"not a record stream: {exc}") from None
    if end != len(data):
        raise BadStream(f"the stream ends inside a record (at byte {end})")


def unpack_records(data: bytes):
    """The records of a record stream, each payload decoded (``decode``: never raises)."""
    for seq, rid, typ, version, node, when, payload in unpack_rows(data):
        yield Recorded(seq, rid, typ, version, node, when, decode(typ, version, payload))


def decode_rows(rows) -> list[Recorded]:
    """Rows as the log stores them, each payload decoded."""
    return [Recorded(seq, rid, typ, ver, node, t, decode(typ, ver, payload))
            for seq, rid, typ, ver, node, t, payload in rows]


def row_of(rec: Recorded) -> list:
    """A record this host has just appended, as the log stores it (its payload is what
    ``encode`` made of the event)."""
    return [rec.seq, rec.id, rec.type, rec.version, rec.node, rec.time, encode(rec.event)]


def event_class(type_name: str) -> type[Event]:
    cls = CATALOGUE.get(type_name)
    if cls is None:
        known = ", ".join(sorted(CATALOGUE))
        raise InvalidEvent(f"unknown event type {shown(type_name)} (known: {known})")
    return cls


def from_data(type_name: str, data: dict) -> Event:
    """Build and validate an event from user data; values may be strings."""
    cls = event_class(type_name)
    if not isinstance(data, dict):
        raise InvalidEvent("event data must be a JSON object")
    fields = {f.name: f for f in attrs.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InvalidEvent(f"{type_name} has no field {shown(unknown[0])} "
                           f"(fields: {', '.join(fields)})")
    missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in data]
    if missing:
        raise InvalidEvent(f"{type_name} needs field {missing[0]!r}")
    values = {k: _coerce(k, fields[k].type, v) for k, v in data.items()}
    event = cls(**values)
    encode(event)  # size check, so an oversized event fails before it reaches the log
    return event


def _coerce(name: str, annotation, value):
    """Turn a ``key=value`` string into the field's type; other values pass as they are."""
    if not isinstance(value, str):
        return value
    kinds = set(typing.get_args(annotation)) if isinstance(annotation, types.UnionType) \
        else {annotation}
    if type(None) in kinds and value in ("", "null", "none"):
        return None
    try:
        if int in kinds:
            return int(value)
        if float in kinds:
            return float(value)
    except ValueError:
        raise InvalidEvent(f"field {name!r}: {shown(value)} is not a number") from None
    if typing.get_origin(annotation) is tuple:
        try:
            parsed = json.loads(value)
        except ValueError:
            raise InvalidEvent(f"field {name!r}: {shown(value)} is not a JSON list of strings") from None
        return tuple(parsed) if isinstance(parsed, list) else parsed
    return value
