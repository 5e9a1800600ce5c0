"""Building events from user input: coercion and one-line errors."""

import pytest

from cantainer import events as ev
from cantainer.errors import InvalidEvent, PayloadTooLarge

CID = "0123456789ab"


def test_key_value_strings_are_coerced_to_field_types():
    event = ev.from_data("ContainerCreated", {
        "container": CID, "name": "web", "host": "h1", "network": "198.18.0.0/24",
        "command": '["sh", "-c", "echo hi"]', "memory": "67108864", "cpus": "0.5",
        "pids_limit": "64", "hostname": "null"})
    assert event.command == ("sh", "-c", "echo hi")
    assert event.memory == 64 << 20 and event.cpus == 0.5 and event.pids_limit == 64
    assert event.hostname is None


def test_json_values_pass_through():
    event = ev.from_data("ContainerExited", {"container": CID, "exit_code": 137})
    assert event == ev.ContainerExited(container=CID, exit_code=137)


@pytest.mark.parametrize(("type_name", "data", "message"), [
    ("NoSuchEvent", {}, "unknown event type 'NoSuchEvent'"),
    ("NetworkCreated", {"name": "n"}, "needs field 'cidr'"),
    ("NetworkCreated", {"name": "n", "cidr": "198.18.0.0/24", "vni": 1}, "has no field 'vni'"),
    ("NetworkCreated", {"name": "n", "cidr": "198.18.0.1/24"}, "host bits set"),
    ("NetworkCreated", {"name": "n", "cidr": "198.18.0.0/30x"}, "not a valid IPv4 CIDR"),
    ("NetworkCreated", {"name": "n", "cidr": "198.18.0.0"}, "not a CIDR"),
    ("NetworkCreated", {"name": "n", "cidr": "16.0.0.0/4"}, "prefix length"),
    ("NetworkCreated", {"name": "bad name", "cidr": "198.18.0.0/24"}, "not a valid name"),
    ("NodeJoined", {"name": "a", "address": "300.1.1.1", "dqlite_address": "1.2.3.4:9"},
     "not an IPv4 address"),
    ("NodeJoined", {"name": "a", "address": "192.0.2.1", "dqlite_address": "192.0.2.1"},
     "IPV4:PORT"),
    ("ContainerExited", {"container": CID, "exit_code": "256"}, "out of range"),
    ("ContainerExited", {"container": CID, "exit_code": "x"}, "not a number"),
    ("ContainerExited", {"container": "XYZ", "exit_code": 0}, "not a container id"),
    ("ContainerCreated", {"container": CID, "name": "c", "host": "h", "network": "n",
                          "env": '["NOEQUALS"]'}, "KEY=VALUE"),
    ("ContainerCreated", {"container": CID, "name": "c", "host": "h", "network": "n",
                          "command": "not json"}, "JSON list"),
    ("ContainerCreated", {"container": CID, "name": "c", "host": "h", "network": "n",
                          "memory": "1"}, "out of range"),
    ("ContainerCreated", {"container": CID, "name": "c", "host": "h", "network": "n",
                          "cpus": "nan"}, "must be a number"),
])
def test_bad_input_names_the_problem(type_name, data, message):
    with pytest.raises(InvalidEvent, match=message) as info:
        ev.from_data(type_name, data)
    assert "\n" not in str(info.value)


def test_errors_about_huge_values_stay_short():
    with pytest.raises(InvalidEvent) as info:
        ev.from_data("NodeLeft", {"name": "x" * 100_000})
    assert len(str(info.value)) < 300


def test_oversized_event_is_refused_before_the_log():
    with pytest.raises(PayloadTooLarge):
        ev.from_data("ContainerCreated", {
            "container": CID, "name": "c", "host": "h", "network": "n",
            "command": ["x" * 4000] * 20})


def test_events_are_frozen():
    event = ev.NodeLeft(name="a")
    with pytest.raises(AttributeError):
        event.name = "b"
