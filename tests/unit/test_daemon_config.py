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
    (("--address", "192.0.2.1", "--reschedule-after", "1"), "--reschedule-after must be 2..3600"),
    (("--address", "192.0.2.1", "--checkpoint-every", "5"), "--checkpoint-every must be 0"),
    (("--address", "192.0.2.1", "--checkpoint-every", "0", "--retain", "5000"),
     "--retain needs checkpoints: with --checkpoint-every 0 it must be 0"),
    (("--address", "192.0.2.1", "--retain", "500"),
     "--retain must be 0 (keep every record) or at least --checkpoint-every (10000)"),
    (("--address", "192.0.2.1", "--relays", "65"), "--relays must be 0..64, got 65"),
    (("--address", "192.0.2.1", "--relays", "-1"), "--relays must be 0..64, got -1"),
    (("--address", "192.0.2.1", "--metrics", "127.0.0.1"), "--metrics '127.0.0.1' is not IPV4:PORT"),
    (("--address", "192.0.2.1", "--metrics", "localhost:9"), "is not IPV4[:PORT]"),
    (("--address", "192.0.2.1", "--default-network", "10.88.0.1/16"),
     "--default-network: '10.88.0.1/16' is not a valid IPv4 CIDR"),
    (("--address", "192.0.2.1", "--default-network", "10.88.0.0/30"),
     "--default-network: '10.88.0.0/30': prefix length must be between /8 and /29"),
    (("--address", "192.0.2.1", "--seeds", "192.0.2.2:9000", "--default-network",
      "10.88.0.0/16"), "--default-network is set by the host that creates the cluster"),
])
def test_bad_flags(args, message, tmp_path):
    result = daemon(*args, "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert result.stderr == f"cantainerd: error: {result.stderr.split('error: ', 1)[1]}"
    assert message in result.stderr and result.stderr.count("\n") == 1


def member_credentials(data, address="192.0.2.7"):
    """DATA_DIR/tls as a member has it (a data directory made after cluster trust)."""
    from cantainer.trust import pki
    from cantainer.trust.files import Credentials

    ca_key, ca = pki.new_ca()
    key = pki.new_key()
    Credentials(str(data)).save(ca, key, pki.sign(ca_key, ca, pki.csr(key, "h"), "h", address),
                                pki.new_kx_key())


def test_a_data_dir_from_before_cluster_trust_is_refused_with_what_to_do(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "node.json").write_text(json.dumps(
        {"id": 1, "address": "192.0.2.8:9000", "joined": True}))
    result = daemon("--address", "192.0.2.8", "--data-dir", str(data),
                    "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "is from before cluster trust (no certificates in it): move it aside and join " \
           "the cluster again with a --join-token" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--seeds", "192.0.2.9"), "joining a cluster needs --join-token TOKEN"),
    (("--seeds", "192.0.2.9", "--join-token", "CTN1-abc"), "is not a Cantainer join token"),
    (("--seeds", "192.0.2.9", "--join-token-file", "/nonexistent/token"),
     "cannot read --join-token-file /nonexistent/token: No such file or directory"),
])
def test_joining_without_a_proper_token_is_refused(tmp_path, args, message):
    result = daemon("--address", "192.0.2.8", "--data-dir", str(tmp_path / "d"),
                    "--run-dir", str(tmp_path / "r"), *args)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "d" / "tls" / "node.crt").exists(), "no credentials made"


def test_data_dir_of_another_address_is_refused(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    member_credentials(data)
    (data / "node.json").write_text(json.dumps(
        {"id": 1, "address": "192.0.2.7:9000", "joined": True}))
    result = daemon("--address", "192.0.2.8", "--data-dir", str(data),
                    "--run-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "belongs to the dqlite node at 192.0.2.7:9000" in result.stderr


def test_corrupt_identity_is_refused(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    member_credentials(data, "192.0.2.8")
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
    assert (config.network_latency_ms, config.suspect_after) == (100, 10.0)
    assert (config.idle_poll, config.reconcile_every) == (2.0, 10.0)
    assert (config.voters, config.standbys) == (3, 1)
    assert (config.reschedule_after, config.checkpoint_every) == (5.0, 10_000)
    assert config.metrics == ("127.0.0.1", 9003), "off the underlay"
    assert parse(["--address", "192.0.2.1", "--metrics", "none"])[0].metrics is None


def test_the_join_token_can_come_from_a_file(tmp_path):
    """Not on the command line, where every local user reads it in 'ps'."""
    from cantainer.daemon.main import parse
    from cantainer.errors import ConfigError
    from cantainer.trust import pki, tokens

    token = tokens.token(pki.new_ca()[1], tokens.new_secret())
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    config, _ = parse(["--address", "192.0.2.8", "--seeds", "192.0.2.9",
                       "--join-token-file", str(path)])
    assert config.join_token == token
    path.write_text("CTN1-abc\n")
    with pytest.raises(ConfigError, match="is not a Cantainer join token"):
        parse(["--address", "192.0.2.8", "--seeds", "192.0.2.9", "--join-token-file", str(path)])
