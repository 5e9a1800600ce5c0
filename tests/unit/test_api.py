"""The API's handlers against a fake handle: a log in memory, the real projections.

No daemon, no dqlite, no kernel: what the handlers decide (which errors, of
which kind; what they append; what they answer) is theirs alone.  The server's
framing is tested on a real unix socket.
"""

import asyncio
import re
import json
import socket

import pytest

from cantainer.api import server
from cantainer.errors import Conflict, Invalid, NotFound, Rejected, Unavailable
from cantainer.events import Recorded
from cantainer.kernel.images import ImageStore
from cantainer.kernel.volumes import VolumeStore
from cantainer.kernel.statedir import StateDir
from cantainer.projections.state import ClusterState
from tests.unit.strategies import joined_hosts


class FakeHandle:
    """The Handle of api/handle.py, over a list of records; appends apply at once."""

    node = "h1"

    def __init__(self, tmp_path) -> None:
        self.data_dir = str(tmp_path)
        self.images = ImageStore(str(tmp_path))
        self.volumes = VolumeStore(str(tmp_path))
        self.state = ClusterState()
        self.records: list[Recorded] = []
        self.stopped = False
        self.acted: list[int] = []
        self.follows: list[tuple[str, bool]] = []
        for event in joined_hosts():
            self._record(event, f"join-{event.name}")

    def _record(self, event, event_id) -> int:
        for rec in self.records:
            if rec.id == event_id:
                return rec.seq
        rec = Recorded(len(self.records) + 1, event_id, event.type_name(), event.VERSION,
                       self.node, 0.0, event)
        self.records.append(rec)
        self.state.apply(rec)
        return rec.seq

    async def append(self, events, ids):
        seqs = [self._record(e, i) for e, i in zip(events, ids, strict=True)]
        if (rejected := self.state.rejection(seqs)) is not None:
            raise rejected
        return seqs

    async def read(self, after, limit, types=None):
        return [r for r in self.records if r.seq > after and (not types or r.type in types)][:limit]

    async def head(self):
        return len(self.records)

    async def first(self):
        return 1 if self.records else 0

    def feed(self):
        return "leader"

    async def wait_applied(self, seq=None):
        pass

    async def until(self, done, timeout, what):
        if not done():  # nothing moves in the fake but the handlers themselves
            raise Unavailable(f"waited {timeout:g}s for {what}")

    async def acted_on(self, seq):
        self.acted.append(seq)

    def follow(self, container, on):
        self.follows.append((container, on))

    async def differences(self):
        return []

    def peer(self, host):
        return ("192.0.2.2", 9002) if host in self.state.members.live() else None

    async def raft(self):
        return {"node_id": "1", "address": "192.0.2.1:9000", "leader": "192.0.2.1:9000",
                "members": [{"id": "1", "address": "192.0.2.1:9000", "role": "voter"}]}

    def heard(self):
        return {"h2": {"applied": 3, "heard": 0.4}}

    def heartbeats_refused(self):
        return 0

    secrets: dict[str, str] = {}

    async def secret(self, name):
        return self.secrets.get(name)

    async def set_secret(self, name, value, *, replace):
        if replace or name not in self.secrets:
            self.secrets = {**self.secrets, name: value}
        return self.secrets[name]

    def stop(self):
        self.stopped = True


class Sink:
    """The exchange's sending side: what the handler answered."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def send(self, msg: dict) -> None:
        self.sent.append(msg)


def call(h, request: dict, peer: str | None = None) -> list[dict]:
    req = server.normalise(request.get("op"), request, peer)
    sink = Sink()
    asyncio.run(server.OPS[req["op"]].handler(h, req, sink))
    return sink.sent


@pytest.fixture
def h(tmp_path):
    return FakeHandle(tmp_path)


def created(h, name, host="h1", network="198.18.0.0/24", cid=None, state=None):
    cid = cid or f"{len(h.records):012x}"
    call(h, {"op": "submit", "events": [{"type": "ContainerCreated", "id": f"c-{cid}",
                                         "data": {"container": cid, "name": name,
                                                  "host": host, "network": network}}]})
    if state == "running":
        call(h, {"op": "submit", "events": [{"type": "ContainerStarted",
                                             "data": {"container": cid, "pid": 7}}]})
    return cid


# -- the filter every request passes --------------------------------------------------

@pytest.mark.parametrize(("request_", "error", "message"), [
    ({"op": "teleport"}, Invalid, "unknown request 'teleport'"),
    ({"op": 7}, Invalid, "unknown request 7"),
    ({"op": "inspect"}, Invalid, "request needs 'ref'"),
    ({"op": "inspect", "ref": ""}, Invalid, "request field 'ref' must be a string"),
    ({"op": "ps", "all": "yes"}, Invalid, "request field 'all' must be true or false"),
    ({"op": "run", "image": 7}, Invalid, "request field 'image' must be a string"),
    ({"op": "exec", "ref": "x", "command": []}, Invalid, "'command' must be a non-empty list"),
    ({"op": "submit", "events": "x"}, Invalid, "submit needs a non-empty list of events"),
    ({"op": "events", "types": [1]}, Invalid, "--type must name event types"),
    ({"op": "events", "since": -1}, Invalid, "--since must be a seq >= 0"),
])
def test_bad_requests_are_refused_by_the_filter(h, request_, error, message):
    with pytest.raises(error, match=message):
        call(h, request_)
    assert len(h.records) == 3, "nothing appended"


def test_the_peer_port_serves_members_logs_exec_and_kill_and_anyone_the_joining(h):
    for op in ("submit", "run", "rm", "stop", "leave", "node_rm", "status", "check",
               "join_token"):
        for who in ("member", "stranger"):
            with pytest.raises(Invalid, match=f"unknown request {op!r}"):
                server.normalise(op, {"op": op}, peer=who)
    for op in ("logs", "exec", "kill"):
        with pytest.raises(Invalid, match=f"request {op!r} is for members"):
            server.normalise(op, {"op": op, "ref": "x", "command": ["true"]}, peer="stranger")
    assert server.normalise("logs", {"op": "logs", "ref": "x"}, peer="member")["peer"] is True
    for op in ("ca", "whoami"):
        assert server.normalise(op, {"op": op}, peer="stranger")["op"] == op


def test_defaults_are_filled_and_other_fields_dropped(h):
    req = server.normalise("run", {"op": "run", "network": "n", "sneaky": 1})
    assert req["image"] == "busybox" and req["command"] is None and req["env"] == []
    assert "sneaky" not in req and req["attach"] is False


# -- the log -------------------------------------------------------------------------

def test_submit_appends_once_per_id_and_reports_the_verdict(h):
    event = {"type": "NetworkCreated", "id": "n1", "data": {"name": "blue",
                                                            "cidr": "198.18.0.0/24"}}
    assert call(h, {"op": "submit", "events": [event]}) == [{"seqs": [4]}]
    assert call(h, {"op": "submit", "events": [event]}) == [{"seqs": [4]}], "retried: once"
    again = {**event, "id": "n2"}
    with pytest.raises(Rejected, match="seq 5 was appended but rejected: network 'blue'"):
        call(h, {"op": "submit", "events": [again]})
    with pytest.raises(Invalid, match="event 2: needs a type"):
        call(h, {"op": "submit", "events": [event, {"data": {}}]})
    assert len(h.records) == 5, "a batch with a bad event appends nothing"


def test_events_are_read_after_a_seq_and_by_type(h):
    sent = call(h, {"op": "events", "since": 1, "types": ["NodeJoined"]})
    assert [m["event"]["seq"] for m in sent[:-1]] == [2, 3] and sent[-1] == {"end": True}
    assert sent[0]["event"]["data"]["name"] == "h2"


# -- networks ----------------------------------------------------------------------------

def test_networks_are_created_listed_and_removed(h):
    sent = call(h, {"op": "network_create", "cidr": "198.18.0.0/24"})
    assert sent == [{"network": {"name": "198.18.0.0-24", "cidr": "198.18.0.0/24",
                                 "vni": 4096, "seq": 4, "gateway": "198.18.0.1",
                                 "internal": False, "containers": 0}}]
    internal = call(h, {"op": "network_create", "cidr": "198.18.9.0/24", "internal": True,
                        "name": "quiet"})
    assert internal[0]["network"]["internal"] is True
    assert h.records[-1].event.internal is True, "recorded in the event"
    call(h, {"op": "network_rm", "name": "quiet"})
    assert [n["name"] for n in call(h, {"op": "network_ls"})[0]["networks"]] == \
        ["198.18.0.0-24"]
    with pytest.raises(Invalid, match="host bits set"):
        call(h, {"op": "network_create", "cidr": "198.18.1.1/24"})
    with pytest.raises(NotFound, match="no network named 'nope'"):
        call(h, {"op": "network_rm", "name": "nope"})
    head = len(h.records)
    assert call(h, {"op": "network_rm", "name": "198.18.0.0-24"}) == [
        {"removed": "198.18.0.0-24"}]
    assert len(h.records) == head + 1 and h.state.ipam.networks == {}


# -- containers ----------------------------------------------------------------------------

def test_containers_are_found_by_id_name_and_unique_prefix(h):
    a = created(h, "web", cid="abc000000001")
    created(h, "db", cid="abd000000002")
    assert call(h, {"op": "inspect", "ref": "web"})[0]["container"]["id"] == a
    assert call(h, {"op": "inspect", "ref": "abc"})[0]["container"]["name"] == "web"
    with pytest.raises(Invalid, match="'ab' matches 2 containers; give more of the id"):
        call(h, {"op": "inspect", "ref": "ab"})
    with pytest.raises(NotFound, match="no container 'nosuch'"):
        call(h, {"op": "inspect", "ref": "nosuch"})
    assert [c["name"] for c in call(h, {"op": "ps"})[0]["containers"]] == ["web", "db"]


def test_run_refuses_an_unknown_network_before_appending(h):
    head = len(h.records)
    with pytest.raises(NotFound, match="no network named 'blue'"):
        call(h, {"op": "run", "network": "blue"})
    with pytest.raises(NotFound, match="this cluster has no default network"):
        call(h, {"op": "run"})  # a log with no ClusterCreated: from before there was one
    assert len(h.records) == head


def test_a_foreground_run_records_its_run_itself_and_lets_go_however_it_ends(h):
    """The runtime is told to leave the run's reports to the call, and told again when
    the call is over: here it fails (nothing starts in the fake)."""
    with pytest.raises(Unavailable, match="to start"):
        call(h, {"op": "run", "network": "198.18.0.0/24", "follow": True, "name": "fg"})
    cid = next(c.id for c in h.state.ipam.containers.values() if c.name == "fg")
    assert h.follows == [(cid, True), (cid, False)]
    with pytest.raises(Unavailable, match="to start"):
        call(h, {"op": "run", "network": "198.18.0.0/24", "name": "bg"})  # run -d
    assert h.follows == [(cid, True), (cid, False)], "run -d leaves its reports to the runtime"


def test_rm_of_a_running_container_needs_force(h):
    created(h, "web", state="running")
    with pytest.raises(Conflict, match="container web is running: stop it first, or rm -f"):
        call(h, {"op": "rm", "ref": "web"})
    assert call(h, {"op": "rm", "ref": "web", "force": True}) == [{"removed": "web"}]
    assert h.records[-1].type == "ContainerRemoved"
    assert h.records[-1].id == f"ContainerRemoved-{h.records[-1].event.container}"


def test_exec_and_logs_of_another_hosts_container_forwarded_here_are_refused(h):
    """A peer that forwards to the wrong host (an older view of the log)."""
    created(h, "far", host="h2", state="running")
    with pytest.raises(Conflict, match="container far is not on host h1"):
        call(h, {"op": "logs", "ref": "far"}, peer="member")


def test_exec_needs_a_running_container(h, tmp_path):
    cid = created(h, "idle")
    StateDir(str(tmp_path), cid).create()
    with pytest.raises(Conflict, match="container idle is not running"):
        call(h, {"op": "exec", "ref": "idle", "command": ["true"]})


def test_logs_of_a_local_container_come_from_its_state_directory(h, tmp_path):
    cid = created(h, "talker", state="running")
    state = StateDir(str(tmp_path), cid)
    state.create()
    state.say("hello")
    assert call(h, {"op": "logs", "ref": "talker"}) == [{"data": "hello\n"}, {"end": True}]


# -- the cluster ------------------------------------------------------------------------

def test_node_rm_refuses_this_host_the_unknown_and_the_live(h):
    with pytest.raises(Invalid, match="h1 is this host: use 'cantainer node leave' on it"):
        call(h, {"op": "node_rm", "name": "h1"})
    with pytest.raises(NotFound, match="no member named 'h9'"):
        call(h, {"op": "node_rm", "name": "h9"})
    with pytest.raises(Conflict, match="host h2 is alive"):
        call(h, {"op": "node_rm", "name": "h2"})
    assert h.secrets == {}, "refusals change nothing, not even the join token"
    h.secrets = {"join_secret": "before"}
    sent = call(h, {"op": "node_rm", "name": "h2", "force": True})
    assert sent == [{"removed": "h2", "seq": 4}] and h.records[-1].id == "NodeLeft-h2-2"
    assert h.secrets["join_secret"] != "before", "the token h2 joined with joins no one"


def test_leave_records_the_same_departure_as_an_eviction_then_stops(h):
    h.secrets = {"join_secret": "before"}
    sent = call(h, {"op": "leave"})
    assert sent == [{"left": "h1", "seq": 4}] and h.records[-1].id == "NodeLeft-h1-1"
    assert h.secrets["join_secret"] != "before", "the token h1 joined with joins no one"
    assert h.acted == [4], "answered once the actors acted on it"
    assert h.stopped


def test_status_and_nodes(h):
    status = call(h, {"op": "status"})[0]["status"]
    assert (status["node"], status["head"], status["applied"]) == ("h1", 3, 3)
    assert status["feed"] == "leader"
    assert status["members"] == [{"id": "1", "address": "192.0.2.1:9000", "role": "voter",
                                  "name": "h1", "leader": True, "applied": 3, "heard": 0.0}]
    nodes = call(h, {"op": "nodes"})[0]["nodes"]
    assert [(n["name"], n["state"], n["role"], n["heard"]) for n in nodes] == [
        ("h1", "joined", "voter", None), ("h2", "joined", "-", 0.4),
        ("h3", "joined", "-", None)]


# -- the framing, on a real socket ----------------------------------------------------------

def test_errors_cross_the_socket_with_their_kind(h, tmp_path):
    path = str(tmp_path / "api.sock")

    async def go():
        api = server.ApiServer(h, path)
        await api.start()
        try:
            answers = []
            for line in (b'{"op": "inspect", "ref": "nosuch"}\n', b"\x00 garbage\n",
                         b'{"op": "node_rm", "name": "h2"}\n'):
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(line)
                answers.append(json.loads(await reader.readline()))
                writer.close()
            return answers
        finally:
            await api.stop()

    assert asyncio.run(go()) == [
        {"error": "no container 'nosuch'", "kind": "not_found"},
        {"error": "bad request: Expecting value: line 1 column 2 (char 1)", "kind": "invalid"},
        {"error": "host h2 is alive (state joined): it should leave by itself ('node leave'), "
                  "or use --force", "kind": "conflict"}]
    with pytest.raises(FileNotFoundError):
        socket.socket(socket.AF_UNIX).connect(path)


# -- wait, kill, version, info ------------------------------------------------------------

def test_wait_answers_the_exit_code_once_it_has_exited(h):
    cid = created(h, "job", state="running")
    call(h, {"op": "submit", "events": [{"type": "ContainerExited",
                                         "data": {"container": cid, "exit_code": 3}}]})
    assert call(h, {"op": "wait", "ref": "job"}) == [{"exit_code": 3}]
    created(h, "busy", state="running")
    with pytest.raises(Unavailable, match="container busy to exit"):
        call(h, {"op": "wait", "ref": "busy"})  # the fake's log never moves: a timeout
    with pytest.raises(NotFound, match="no container 'nosuch'"):
        call(h, {"op": "wait", "ref": "nosuch"})


def test_kill_takes_signal_names_and_numbers_and_needs_a_running_container(h):
    for value, number in [("KILL", 9), ("sigterm", 15), ("HUP", 1), (10, 10), ("2", 2)]:
        assert server.normalise("kill", {"ref": "x", "signal": value})["signal"] == number
    assert server.normalise("kill", {"ref": "x"})["signal"] == 9, "Docker's default"
    for bad in ("NOPE", "0x9", "99", True):
        with pytest.raises(Invalid, match="is not a signal"):
            server.normalise("kill", {"ref": "x", "signal": bad})
    created(h, "idle")  # created, never started: no process
    with pytest.raises(Conflict, match="container idle is not running"):
        call(h, {"op": "kill", "ref": "idle"})


def test_version_and_info(h):
    from cantainer import __version__
    assert call(h, {"op": "version"}) == [{"version": __version__, "node": "h1"}]
    created(h, "web", state="running")
    created(h, "db", host="h2")
    info = call(h, {"op": "info"})[0]["info"]
    assert (info["members"], info["containers"], info["containers_here"]) == (
        {"joined": 3, "suspected": 0}, {"created": 1, "running": 1, "exited": 0}, 1)
    assert (info["networks"], info["default_network"], info["images_here"]) == (1, None, 0)


# -- volumes ------------------------------------------------------------------------------

def test_a_volume_in_use_is_not_removed(h):
    assert call(h, {"op": "volume_create", "name": "data"})[0]["volume"]["name"] == "data"
    cid = created(h, "db")
    call(h, {"op": "submit", "events": [{"type": "ContainerCreated", "id": "with-vol",
                                         "data": {"container": "ab" * 6, "name": "db2",
                                                  "host": "h1", "network": "198.18.0.0/24",
                                                  "volumes": ["data:/var/lib/db"]}}]})
    assert call(h, {"op": "volume_inspect", "name": "data"})[0]["volume"]["containers"] == \
        ["db2"]
    with pytest.raises(Conflict, match="volume data is in use by container db2"):
        call(h, {"op": "volume_rm", "name": "data"})
    call(h, {"op": "submit", "events": [{"type": "ContainerRemoved",
                                         "data": {"container": "ab" * 6}}]})
    assert call(h, {"op": "volume_rm", "name": "data"}) == [{"removed": "data"}]
    with pytest.raises(NotFound, match="no volume 'data' on this host"):
        call(h, {"op": "volume_rm", "name": "data"})
    with pytest.raises(Invalid, match="is not a volume name"):
        call(h, {"op": "volume_create", "name": "../etc"})
    assert cid


@pytest.mark.parametrize(("spec", "message"), [
    ("/nonexistent/dir:/data", "/nonexistent/dir does not exist on this host"),
    ("data", "is not SOURCE:TARGET[:ro|rw]"),
    ("data:/data:rx", "is not SOURCE:TARGET[:ro|rw]"),
    ("data:relative", "is not an absolute path in the container"),
    ("bad name!:/data", "is neither an absolute host path nor a volume name"),
    ("data:/.", "is not an absolute path in the container (other than /"),
    ("data://", "is not an absolute path in the container (other than /"),
    ("data:/a/../..", "without '..'"),
])
def test_bad_volume_specs_are_refused_before_appending(h, spec, message):
    head = len(h.records)
    with pytest.raises(Invalid, match=re.escape(message)):
        call(h, {"op": "run", "network": "198.18.0.0/24", "volumes": [spec]})
    assert len(h.records) == head


def test_mounts_inside_mounts_are_refused():
    from cantainer import events as ev
    from cantainer.errors import InvalidEvent
    base = {"container": "a" * 12, "name": "x", "host": "h1", "network": "n"}
    for volumes, tmpfs in [(["v:/data", "w:/data/sub"], []), (["v:/data"], ["/data/tmp"]),
                           (["v:/data", "w:/data/"], [])]:
        with pytest.raises(InvalidEvent, match="inside mount|two mounts at one path"):
            ev.from_data("ContainerCreated", {**base, "volumes": volumes, "tmpfs": tmpfs})
    assert ev.from_data("ContainerCreated", {**base, "volumes": ["v:/data", "w:/database"]})
