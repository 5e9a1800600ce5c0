"""The msgpack codec: round trips, and decoding that never raises."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cantainer import events as ev
from cantainer.errors import PayloadTooLarge
from cantainer.events.codec import rows_from_json
from tests.unit.strategies import BY_TYPE, any_event


@pytest.mark.parametrize("cls", sorted(BY_TYPE, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
@given(data=st.data())
@settings(max_examples=60)
def test_every_event_type_round_trips(cls, data):
    event = data.draw(BY_TYPE[cls])
    decoded = ev.decode(cls.type_name(), cls.VERSION, ev.encode(event))
    assert decoded == event
    assert type(decoded) is cls


@given(type_name=st.sampled_from(sorted(ev.CATALOGUE)) | st.text(max_size=20),
       version=st.integers(-5, 5), payload=st.binary(max_size=300))
@settings(max_examples=500)
def test_decode_never_raises_on_arbitrary_bytes(type_name, version, payload):
    result = ev.decode(type_name, version, payload)
    assert isinstance(result, (ev.Event, ev.UnknownEvent))


@given(payload=st.dictionaries(st.text(max_size=10),
                               st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=10),
                                         st.lists(st.integers(-2**63, 2**63 - 1), max_size=3)), max_size=6))
def test_decode_never_raises_on_arbitrary_maps(payload):
    for type_name in ev.CATALOGUE:
        result = ev.decode(type_name, 1, msgpack.packb(payload))
        assert isinstance(result, (ev.Event, ev.UnknownEvent))


def test_unknown_type_is_skippable_not_an_error():
    result = ev.decode("ContainerTeleported", 1, msgpack.packb({"x": 1}))
    assert result == ev.UnknownEvent("ContainerTeleported", 1, "unknown event type")


def test_newer_version_is_skippable():
    event = ev.NodeLeft(name="a")
    result = ev.decode("NodeLeft", 2, ev.encode(event))
    assert isinstance(result, ev.UnknownEvent)
    assert "newer" in result.reason


def test_invalid_fields_in_the_log_are_skippable():
    payload = msgpack.packb({"name": "net", "cidr": "198.18.0.1/24"})
    result = ev.decode("NetworkCreated", 1, payload)
    assert isinstance(result, ev.UnknownEvent)
    assert "host bits" in result.reason


def test_missing_and_extra_fields_are_skippable():
    assert isinstance(ev.decode("NodeLeft", 1, msgpack.packb({})), ev.UnknownEvent)
    assert isinstance(ev.decode("NodeLeft", 1, msgpack.packb({"name": "a", "x": 1})),
                      ev.UnknownEvent)


def test_oversized_payload_is_refused_on_encode_and_skipped_on_decode():
    big = ev.ContainerCreated(container="a" * 64, name="c", host="h", network="n",
                              command=tuple("x" * 4000 for _ in range(20)))
    with pytest.raises(PayloadTooLarge, match="limit is 65536"):
        ev.encode(big)
    oversized = msgpack.packb({"name": "a", "pad": "x" * ev.MAX_PAYLOAD})
    result = ev.decode("NodeLeft", 1, oversized)
    assert isinstance(result, ev.UnknownEvent) and "exceeds" in result.reason


def event_of_size(size: int) -> ev.ContainerCreated:
    """A ContainerCreated whose payload encodes to exactly ``size`` bytes."""
    for full in range(size // 4000 + 1):
        for rest in range(4097):
            event = ev.ContainerCreated(container="a" * 64, name="c", host="h", network="n",
                                        command=("x" * 4000,) * full + ("x" * rest,))
            got = len(msgpack.packb(ev.to_data(event), use_bin_type=True))
            if got == size:
                return event
            if got > size:
                break
    raise AssertionError(f"no event of {size} bytes")


def test_the_payload_limit_is_exact_on_both_sides():
    at_limit, over = event_of_size(ev.MAX_PAYLOAD), event_of_size(ev.MAX_PAYLOAD + 1)
    payload = ev.encode(at_limit)
    assert len(payload) == ev.MAX_PAYLOAD == 65536
    assert ev.decode("ContainerCreated", 1, payload) == at_limit, "read back at the limit"
    with pytest.raises(PayloadTooLarge, match="payload is 65537 bytes; the limit is 65536"):
        ev.encode(over)
    raw = msgpack.packb(ev.to_data(over), use_bin_type=True)
    result = ev.decode("ContainerCreated", 1, raw)
    assert isinstance(result, ev.UnknownEvent) and "65537 bytes exceeds 65536" in result.reason


@given(any_event)
def test_recorded_data_is_json_ready(event):
    import json
    rec = ev.Recorded(1, "id", event.type_name(), 1, "n", 0.0, event)
    assert json.loads(json.dumps(rec.data())) == rec.data()


@given(events=st.lists(any_event, max_size=20))
@settings(max_examples=100)
def test_a_record_stream_gives_back_the_records_it_was_packed_from(events):
    rows = [(seq, f"id{seq}", e.type_name(), e.VERSION, "h1", 1.5 + seq, ev.encode(e))
            for seq, e in enumerate(events, 1)]
    back = list(ev.unpack_records(ev.pack_rows(rows)))
    assert [(r.seq, r.id, r.type, r.version, r.node, r.time, r.event) for r in back] == \
        [(*row[:6], e) for row, e in zip(rows, events)]


def test_a_record_stream_keeps_a_payload_it_cannot_read_as_unknown():
    rows = [(1, "a", "NoSuchEvent", 1, "h1", 0.0, b"\x80"), (2, "b", "NodeLeft", 1, "h1", 0.0,
                                                           b"\xc1")]
    first, second = ev.unpack_records(ev.pack_rows(rows))
    assert first.event == ev.UnknownEvent("NoSuchEvent", 1, "unknown event type")
    assert isinstance(second.event, ev.UnknownEvent) and "does not decode" in \
        second.event.reason


@pytest.mark.parametrize("data, reason", [
    (msgpack.packb([1, 2, 3]), r"not \[seq, id, type, version, node, time, payload\]"),
    (msgpack.packb(["1", "a", "T", 1, "h1", 0.0, b""]), "a record is"),
    (b"\xc1", "not a record stream"),
    (ev.pack_rows([(1, "a", "NodeLeft", 1, "h1", 0.0, b"\x81")])[:-1], "ends inside a record"),
])
def test_anything_else_is_no_record_stream(data, reason):
    with pytest.raises(ev.BadStream, match=reason):
        list(ev.unpack_records(data))


def test_rows_in_json_come_back_exact_and_in_order():
    rows = [[2, "b", "NodeLeft", 1, "h1", "1796127535.3644691", "81a46e616d65a26831"],
            [1, "a", "T", 1, "h1", "0.10000000000000001", None]]
    assert rows_from_json(rows) == [
        [1, "a", "T", 1, "h1", 0.1, None],
        [2, "b", "NodeLeft", 1, "h1", 1796127535.3644691, msgpack.packb({"name": "h1"})]]
    for bad in ([[1, "a"]], [[1, "a", "T", 1, "h1", "x", None]],
                [[1, "a", "T", 1, "h1", "1", "zz"]]):
        with pytest.raises(ev.BadStream, match="not rows of the log"):
            rows_from_json(bad)
