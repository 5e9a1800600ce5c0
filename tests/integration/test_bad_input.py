"""Bad input, end to end, on one host: the table of docs/RELIABILITY.md.

Each row gets a clear one-line error (no traceback) and a non-zero exit; the
daemon stays up, and the log still holds every event it held before the table
(``test_nothing_was_lost`` runs last).  Rows checked elsewhere are listed in
docs/RELIABILITY.md with their tests: malformed events, oversized payloads and
bad event ids (test_log_cluster.test_bad_input_appends_nothing), bad CLI
arguments (tests/unit/test_cli.py), unsafe tarballs in detail
(tests/unit/test_images.py), a second daemon on one data directory
(test_log_cluster.test_one_daemon_per_data_directory), and the codec and every
projection fuzzed with hypothesis (tests/unit/test_codec.py, test_projections.py).
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from cantainer.kernel import netns
from lab import Lab
from tests.integration.helpers import events, status
from tests.unit.test_images import tarball

pytestmark = [pytest.mark.root, pytest.mark.slow]

BLUE, TINY = "198.18.0.0/24", "198.18.1.0/29"  # TINY: five addresses


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(1, tag=f"bad{os.getpid() % 100000}")
    try:
        lab.build()
        lab.start(1)
        lab.cli(1, "network", "create", "--name", "blue", BLUE)
        lab.cli(1, "network", "create", "--name", "tiny", TINY)
        for i in range(5):
            lab.cli(1, "run", "-d", "-n", "tiny", "--name", f"t{i}", "busybox", "sleep", "600")
        lab.cli(1, "run", "-d", "-n", "blue", "--name", "dup", "busybox", "sleep", "600")
        lab.before = events(lab, 1)
        lab.tmp = tmp_path_factory.mktemp("bad-input")
        yield lab
    except BaseException:
        print(f"----- cantainerd log of h1 -----\n{lab.log(1)}")
        raise
    finally:
        lab.close()


def one_clear_line(result, code=None):
    assert result.returncode != 0 if code is None else result.returncode == code, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


CLI_ROWS = [
    # (what, argv, exit code, message)
    ("invalid CIDR", ("network", "create", "--name", "bad", "198.18.0.0/33"), 1, "'198.18.0.0/33'"),
    ("CIDR with host bits", ("network", "create", "--name", "bad", "198.18.9.1/24"), 1, "host bits set"),
    ("overlapping CIDR", ("network", "create", "--name", "wide", "198.18.0.0/16"), 4,
     "overlaps network 'blue'"),
    ("duplicate network", ("network", "create", "--name", "blue", "198.18.7.0/24"), 4, "already exists"),
    ("full subnet", ("run", "-d", "-n", "tiny", "busybox", "true"), 125,
     "network 'tiny' (198.18.1.0/29) is full"),
    ("duplicate name", ("run", "-d", "-n", "blue", "--name", "dup", "busybox", "true"), 125,
     "container name 'dup' is already in use"),
    ("unknown image", ("run", "-n", "blue", "nosuchimage", "true"), 125, "nosuchimage"),
    ("unknown network name", ("run", "-n", "nonet", "busybox", "true"), 125,
     "no network named 'nonet'"),
    ("stop unknown container", ("stop", "nosuch"), 3, "no container 'nosuch'"),
    ("rm unknown container", ("rm", "nosuch"), 3, "no container 'nosuch'"),
    ("logs of unknown container", ("logs", "nosuch"), 3, "no container 'nosuch'"),
    ("exec in unknown container", ("exec", "nosuch", "true"), 125, "no container 'nosuch'"),
    ("inspect unknown container", ("inspect", "nosuch"), 3, "no container 'nosuch'"),
    ("rm unknown network", ("network", "rm", "nonet"), 3, "no network named 'nonet'"),
    ("rm network in use", ("network", "rm", "tiny"), 4, "still has containers"),
    ("evict unknown host", ("node", "rm", "h9"), 3, "no member named 'h9'"),
]


@pytest.mark.parametrize(("argv", "code", "message"), [row[1:] for row in CLI_ROWS],
                         ids=[row[0] for row in CLI_ROWS])
def test_cli_row(lab, argv, code, message):
    assert message in one_clear_line(lab.cli(1, *argv, check=False), code)


# Every escape aims at a sentinel directory in the lab's own work directory (never at
# the host's files): were the daemon's checks broken, the sentinel would change.
UP = "../" * 5  # from the scratch root (DATA/images/.evil-X/rootfs) to the lab's workdir


@pytest.mark.parametrize(("entries", "message"), [
    ([(f"{UP}sentinel/evil", "file", "x")], "contains '..'"),
    ([("lnk", "hard", "{sentinel}/target"), ("lnk", "file", "overwritten")],
     "hard link out of the root"),
    ([("a/", "dir", None), ("a/lnk", "sym", f"../{UP}sentinel"), ("a/lnk/evil", "file", "x")],
     "symbolic link out of the root"),
], ids=["dot-dot entry", "hard link out", "symbolic link out"])
def test_unsafe_image_tarball(lab, entries, message):
    sentinel = os.path.join(lab.workdir, "sentinel")
    os.makedirs(sentinel, exist_ok=True)
    with open(os.path.join(sentinel, "target"), "w") as f:
        f.write("original")
    entries = [(name, kind, payload.format(sentinel=sentinel) if kind == "hard" else payload)
               for name, kind, payload in entries]
    path = tarball(lab.tmp / "bad.tar.gz", [("bin/", "dir", None), *entries])
    assert message in one_clear_line(lab.cli(1, "image", "import", "evil", str(path),
                                             check=False), 1)
    assert "evil" not in lab.cli(1, "image", "ls").stdout
    assert os.listdir(sentinel) == ["target"], "nothing written beside the store"
    with open(os.path.join(sentinel, "target")) as f:
        assert f.read() == "original"


def raw_exchange(lab, payload: bytes) -> bytes:
    """Send ``payload`` to the API socket as is; what came back before it closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(lab.host(1).socket)
        sock.settimeout(10)
        sender = threading.Thread(target=lambda: _send_quietly(sock, payload))
        sender.start()
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            chunks.append(b"<reset>")  # closed with our unread bytes still queued
        sender.join()
        return b"".join(chunks)


def _send_quietly(sock, payload: bytes) -> None:
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the daemon may close first: a line too long is refused before its end


@pytest.mark.parametrize(("payload", "message"), [
    (b"\x00\xff\xfe garbage\n", "bad request"),
    (b"[1, 2]\n", "bad request: not an object"),
    (b'{"op": "teleport"}\n', "unknown request 'teleport'"),
    (b'{"op": "submit", "events": "x"}\n', "submit needs a non-empty list of events"),
    (b'{"op": "run", "image": 7}\n', "request field 'image' must be a string"),
    (b'{"op": "events", "types": [1]}\n', "--type must name event types"),
    (b"x" * (17 << 20), "bad request"),
    (b"", None),
], ids=["binary", "not an object", "unknown op", "wrong field type", "image not a string",
        "types not strings", "line over 16 MiB", "nothing, then close"])
def test_garbage_on_the_api_socket(lab, payload, message):
    head = status(lab, 1)["head"]
    reply = raw_exchange(lab, payload)
    if message is None:
        assert reply == b""
    elif reply.endswith(b"<reset>"):
        # The daemon stopped reading a line over its limit and closed: the reset may
        # come before its error line reaches us, never after anything else.
        assert len(payload) > 1 << 20, reply
        answered = reply[:-len(b"<reset>")]
        assert answered == b"" or message in json.loads(answered.splitlines()[0])["error"]
    else:
        answer = json.loads(reply.splitlines()[0])
        assert message in answer["error"] and "internal error" not in answer["error"]
    assert status(lab, 1)["head"] == head, "the daemon answers the next request; nothing appended"


def test_a_non_root_user_is_told_to_be_root(lab):
    """The CLI's own code as user nobody (forked: this checkout is not readable to
    nobody, so a fresh interpreter could not import it)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, run the CLI, report its exit code
        try:
            os.dup2(write, 2)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            from cantainer import cli
            os.environ["CANTAINER_SOCKET"] = lab.host(1).socket
            code = cli.main(["ps"])
            sys.stderr.flush()
        except BaseException:
            code = 99
        os._exit(code if isinstance(code, int) else 98)
    os.close(write)
    with os.fdopen(read) as f:
        stderr = f.read()
    _, status_ = os.waitpid(pid, 0)
    result = subprocess.CompletedProcess(["cantainer", "ps"], os.waitstatus_to_exitcode(status_),
                                         "", stderr)
    assert "cantainer needs root" in one_clear_line(result, 5)
    mode = os.stat(lab.host(1).socket)
    assert (mode.st_mode & 0o777, mode.st_uid) == (0o600, 0), "the API socket is 0600 root"


def test_unknown_types_newer_versions_and_garbage_in_the_log_are_skipped(lab):
    """Rows another build (or a bug) wrote: every host skips them and goes on."""
    from dqliteclient import connect

    tls = lab.tls(1)  # a member's credentials: only members reach the log

    async def dial(address):
        host, port = address.rsplit(":", 1)
        return await asyncio.open_connection(host, int(port), ssl=tls, server_hostname=None)

    async def insert() -> None:
        conn = await connect(lab.host(1).dqlite_address, database="cantainer", dial_func=dial)
        try:
            for rid, typ, version, payload in [
                    ("future-1", "Teleported", 1, b"\x80"),
                    ("future-2", "NetworkCreated", 99, b"\x81\xa4name\xa3new"),
                    ("garbage-1", "NetworkCreated", 1, b"\xc1\xc1 not msgpack")]:
                await conn.execute(
                    "INSERT INTO events (id, type, version, node, time, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?)", [rid, typ, version, "elsewhere", time.time(),
                                                   payload])
        finally:
            await conn.close()

    netns.run_in(lab.host(1).netns, lambda: asyncio.run(insert()))
    lab.cli(1, "network", "create", "--name", "after", "198.18.2.0/24")
    shown = {e["id"]: e for e in events(lab, 1)}
    assert {"future-1", "future-2", "garbage-1"} <= set(shown), "kept in the log, shown"
    assert shown["future-1"]["unknown"] == "unknown event type"
    assert shown["future-2"]["unknown"] == "version 99 is newer than this build's 2"
    assert shown["garbage-1"]["unknown"].startswith("payload does not decode")
    nets = json.loads(lab.cli(1, "network", "ls", "--json").stdout)
    assert "after" in {n["name"] for n in nets}, "the next event is applied"
    assert "new" not in {n["name"] for n in nets}
    assert lab.cli(1, "replay", "--check", check=False).returncode == 0


def test_nothing_was_lost(lab):
    assert lab.host(1).running, "the daemon stayed up through every row"
    after = events(lab, 1)
    assert after[:len(lab.before)] == lab.before, "every event logged before the table is there"
    assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    # Nothing half-applied: what the rows appended was rejected by log order or is
    # unreadable to this build, but for the one network created after the garbage.
    rejected = {r["seq"] for r in json.loads(lab.cli(1, "replay", "--json").stdout)["rejected"]}
    accepted = [e for e in after[len(lab.before):]
                if e["seq"] not in rejected and "unknown" not in e]
    assert [(e["type"], e["data"]["name"]) for e in accepted] in (
        [], [("NetworkCreated", "after")]), accepted


def test_a_corrupt_data_directory_is_refused_clearly(lab):
    """Last: it stops the daemon.  Raft's metadata overwritten with garbage."""
    assert lab.stop(1) == 0
    data = lab.host(1).data_dir
    damaged = [os.path.join(root, f) for root, _, files in os.walk(data) for f in files
               if f.startswith("metadata")]
    assert damaged, os.listdir(data)
    for path in damaged:
        with open(path, "wb") as f:
            f.write(b"\xde\xad" * 8)
    h = lab.start(1, wait=False)
    assert h.proc.wait(60) == 1
    log = lab.log(1).splitlines()
    assert log[-1].startswith("cantainerd: error: ") and "Traceback" not in lab.log(1), log[-5:]
    assert log[-1].endswith(f"the Raft state in {data}/dqlite is unreadable or damaged"), \
        log[-1]
