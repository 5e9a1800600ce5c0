"""The CLI on its own: start-up weight, bad arguments, no daemon."""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

CLI = [sys.executable, "-m", "cantainer.cli"]


def run(*args, socket_path="/nonexistent/cantainerd.sock", input=None):
    env = dict(os.environ, CANTAINER_SOCKET=socket_path)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, input=input,
                          timeout=30)


@pytest.mark.parametrize("argv", [["status"], ["run", "-d", "-n", "blue", "busybox"],
                                  ["exec", "-it", "x", "sh"], ["--help"]])
def test_cli_imports_nothing_heavy(argv):
    """What a command imports before it talks to the daemon (a daemon that does not
    answer here): the standard library and the CLI's own light modules."""
    code = ("import json, sys, cantainer.cli\n"
            "try:\n    cantainer.cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(m for m in sys.modules)))")
    env = dict(os.environ, CANTAINER_SOCKET="/nonexistent/cantainerd.sock")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         check=True, env=env)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in (
        "pyroute2", "dqliteclient", "dqlitewire", "msgpack", "attrs", "pykka", "asyncio",
        "typing", "dataclasses")]
    assert heavy == [], heavy
    if argv[0] in ("status", "run"):  # only a terminal's relay needs the socket module
        assert "socket" not in loaded and "selectors" not in loaded
    ours = {m for m in loaded if m.startswith("cantainer.") and not m.startswith("cantainer.cli")}
    assert ours <= {"cantainer.errors", "cantainer.config", "cantainer.ids"}, ours


@pytest.mark.parametrize("args", [
    ("status",),
    ("events",),
    ("submit-event", "NodeLeft", "name=a"),
])
def test_no_daemon_is_one_clear_line(args):
    result = run(*args)
    assert result.returncode == 5, "unavailable: try again (README, exit codes)"
    assert result.stderr.count("\n") == 1
    assert "no cantainerd answers at /nonexistent/cantainerd.sock" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("submit-event", "NodeLeft", "name"), "'name' is not key=value"),
    (("submit-event", "NodeLeft", "name=a", "name=b"), "given twice"),
    (("submit-event", "NodeLeft", "--data", "{bad"), "--data is not valid JSON"),
    (("submit-event", "NodeLeft", "--data", "[1]"), "must be a JSON object"),
    (("submit-event", "NodeLeft", "name=a", "--data", "{}"), "either --data"),
    (("submit-event",), "needs an event TYPE"),
    (("submit-event", "--file", "/nonexistent/batch"), "cannot read /nonexistent/batch"),
    (("replay", "--file", "/nonexistent/log"), "cannot read /nonexistent/log"),
    (("replay", "--check", "--file", "x"), "--check compares this host's kernel"),
])
def test_bad_arguments_fail_before_reaching_the_daemon(args, message):
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_batch_file_names_the_line(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"type": "NodeLeft", "data": {"name": "a"}}\nnot json\n')
    result = run("submit-event", "--file", str(batch))
    assert result.returncode == 1 and f"{batch}:2: not valid JSON" in result.stderr


def test_usage_errors_exit_2():
    result = run("events", "--since", "-3")
    assert result.returncode == 2 and "a seq is >= 0" in result.stderr
    assert run("frobnicate").returncode == 2


def test_daemon_error_reply_is_printed_as_one_line(tmp_path):
    """A fake daemon answering with an error: the CLI prints it and exits 1."""
    path = str(tmp_path / "fake.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    seen = []

    def answer():
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            seen.append(f.readline())
            conn.sendall(b'{"error": "field \'cidr\': bad"}\n')

    t = threading.Thread(target=answer)
    t.start()
    try:
        result = run("submit-event", "NetworkCreated", "name=n", "cidr=x", socket_path=path)
    finally:
        t.join(10)
        server.close()
    assert result.returncode == 1
    assert result.stderr == "cantainer: error: field 'cidr': bad\n"
    assert b'"op":"submit"' in seen[0]


def test_replay_from_a_file_needs_no_daemon(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"seq": 1, "id": "a", "type": "NodeJoined", "version": 1, "node": "h1", "time": 0,'
        ' "data": {"name": "h1", "address": "192.0.2.1", "dqlite_address": "192.0.2.1:9000"}}\n'
        '{"seq": 2, "id": "b", "type": "NetworkCreated", "version": 1, "node": "h1", "time": 0,'
        ' "data": {"name": "blue", "cidr": "198.18.0.0/24"}}\n')
    result = run("replay", "--file", str(log))
    assert result.returncode == 0, result.stderr
    assert "blue             198.18.0.0/24      vni 4096" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = run("replay", "--file", str(bad))
    assert result.returncode == 1 and "is not JSON Lines" in result.stderr
    bad.write_text('{"seq": 1}\n')
    result = run("replay", "--file", str(bad))
    assert result.returncode == 1 and "not an event record" in result.stderr


def test_replay_reads_a_record_stream_from_events_msgpack(tmp_path):
    from cantainer import events as ev

    joined = ev.NodeJoined(name="h1", address="192.0.2.1", dqlite_address="192.0.2.1:9000")
    blue = ev.NetworkCreated(name="blue", cidr="198.18.0.0/24")
    stream = tmp_path / "log.msgpack"
    stream.write_bytes(ev.pack_rows([(1, "a", "NodeJoined", 2, "h1", 0.0, ev.encode(joined)),
                                     (2, "b", "NetworkCreated", 2, "h1", 0.0, ev.encode(blue))]))
    result = run("replay", "--file", str(stream))
    assert result.returncode == 0, result.stderr
    assert "blue             198.18.0.0/24      vni 4096" in result.stdout
    stream.write_bytes(stream.read_bytes()[:-3])
    result = run("replay", "--file", str(stream))
    assert (result.returncode, result.stderr.count("\n")) == (1, 1)
    assert "is not a record stream from 'events --msgpack'" in result.stderr


def test_version_needs_no_daemon():
    from cantainer import __version__
    for argv in ([*CLI, "--version"], [sys.executable, "-m", "cantainer.daemon", "--version"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stderr == "", result
        assert result.stdout.split() == [argv[2].split(".")[-1].replace("cli", "cantainer")
                                         .replace("daemon", "cantainerd"), __version__]


@pytest.mark.parametrize("argv", [
    ["status", "--json"], ["--socket", "/s", "ps", "-a"], ["--socket=/s", "run", "-d", "--rm",
                                                          "-p", "80:80", "busybox", "true"],
    ["network", "create", "198.18.0.0/24", "--internal"], ["image", "rm", "a", "b"],
    ["replay", "--until", "5"]])
def test_a_start_builds_only_its_commands_parser_and_parses_the_same(argv):
    from cantainer.cli.parser import build_parser, command_named

    only = command_named(argv)
    assert only == next(a for a in argv if not a.startswith("-") and a != "/s")
    narrow = build_parser(only=only)
    assert list(narrow._subparsers._group_actions[0].choices) == [only]
    assert vars(narrow.parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_help_and_an_unknown_command_get_the_whole_grammar():
    from cantainer.cli.parser import command_named

    assert [command_named(a) for a in (["--help"], ["-h", "ps"], ["bogus"], [])] == [None] * 4
