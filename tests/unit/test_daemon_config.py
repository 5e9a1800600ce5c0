"""cantainerd refuses bad flags and unusable data directories with one line."""

import json
import subprocess
import sys

import pytest


def daemon(*args):
    return subprocess.run([sys.executable, "-m", "cantainer.daemon", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("args", "message"), [
    (("--address", "not-an-ip"), "--address 'not-an-ip' is not IPV4[:PORT]"),
    (("--address", "192.0.2.1:70000"), "is not IPV4[:PORT]"),
    (("--address", "192.0.2.1", "--seeds", "192.0.2.2:x"), "is not IPV4[:PORT]"),
    (("--address", "192.0.2.1", "--name", "bad name"), "is not a valid node name"),
    (("--address", "192.0.2.1", "--voters", "0"), "--voters must be 1..7"),
    (("--address", "192.0.2.1", "--network-latency-ms", "0"), "--network-latency-ms must be"),
    (("--address", "192.0.2.1", "--idle-poll", "0"), "--idle-poll must be 0.01..3600"),
    (("--address", "192.0.2.1", "--reconcile-every", "0.5"), "--reconcile-every must be 0"),
])
def test_bad_flags(args, message, tmp_path):
    result = daemon(*args, "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert result.stderr == f"cantainerd: error: {result.stderr.split('error: ', 1)[1]}"
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_data_dir_of_another_address_is_refused(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "node.json").write_text(json.dumps(
        {"id": 1, "address": "192.0.2.7:9000", "joined": True}))
    result = daemon("--address", "192.0.2.8", "--data-dir", str(data),
                    "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "belongs to the dqlite node at 192.0.2.7:9000" in result.stderr


def test_corrupt_identity_is_refused(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "node.json").write_text("{not json")
    result = daemon("--address", "192.0.2.8", "--data-dir", str(data),
                    "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "node.json is unreadable or corrupt" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_defaults_are_the_readmes():
    from cantainer.daemon.main import parse

    config, level = parse(["--address", "192.0.2.1", "--name", "h1"])
    assert level == "info"
    assert (config.host, config.port, config.dqlite_address) == ("192.0.2.1", 9000,
                                                                 "192.0.2.1:9000")
    assert config.seeds == () and config.data_dir == "/var/lib/cantainer"
    assert config.socket_path == "/run/cantainer/cantainerd.sock"
    assert (config.network_latency_ms, config.suspect_after) == (60, 10.0)
    assert (config.idle_poll, config.reconcile_every) == (2.0, 10.0)
    assert (config.voters, config.standbys) == (3, 3)
