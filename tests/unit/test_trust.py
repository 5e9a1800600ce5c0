"""Trust's parts on their own: keys and certificates, tokens, the gate, heartbeats' MACs,
and what the membership projection makes of certificates.  No network, no root."""

import hashlib
import hmac
import json
import os
import stat
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from cantainer import child
from cantainer.daemon.heartbeat import MAC_SIZE, MAGIC, Heartbeats
from cantainer.errors import ConfigError, Invalid
from cantainer.events import NodeJoined, NodeLeft, Recorded
from cantainer.events.validate import fingerprint
from cantainer.kernel import supervise
from cantainer.projections.membership import Membership
from cantainer.trust import certs, kx, pki, tokens
from cantainer.trust.files import Credentials
from cantainer.trust.tls import Gate


@pytest.fixture(scope="module")
def ca():
    return pki.new_ca()


def member(ca, name="h1", address="192.0.2.1"):
    ca_key, ca_cert = ca
    key = pki.new_key()
    return key, pki.sign(ca_key, ca_cert, pki.csr(key, name), name, address)


def test_a_member_certificate_names_the_node_and_chains_to_its_ca_only(ca):
    _, cert = member(ca, "h1", "192.0.2.1")
    parsed = x509.load_pem_x509_certificate(cert.encode())
    assert parsed.subject.rfc4514_string() == "CN=h1"
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    assert pki.issued_by(cert, ca[1])
    assert not pki.issued_by(cert, pki.new_ca("other")[1])
    assert fingerprint(cert) == parsed.fingerprint(hashes.SHA256()).hex(), \
        "the log's fingerprint is the TLS certificate's"


def test_only_a_proper_request_is_signed(ca):
    with pytest.raises(Invalid, match="not a certificate request"):
        pki.sign(*ca, "garbage", "h1", "192.0.2.1")
    with pytest.raises(Invalid, match="not a certificate request"):
        pki.sign(*ca, pki.csr(pki.new_key(), "h1"), "h1", "not-an-address")


def test_a_token_pins_the_ca_and_carries_a_secret(ca):
    secret = tokens.new_secret()
    token = tokens.token(ca[1], secret)
    assert tokens.parse_token(token) == (fingerprint(ca[1]), secret)
    for bad in ("", "CTN1-abc-def", token.replace("CTN1", "CTN2"), token[:-20] + "!" * 20):
        with pytest.raises(ConfigError, match="is not a Cantainer join token"):
            tokens.parse_token(bad)
    assert tokens.same_secret(secret, secret) and \
        not tokens.same_secret(secret, tokens.new_secret())


def test_a_joiner_proves_the_secret_to_one_member_only():
    secret = tokens.new_secret()
    proof = tokens.join_proof(secret, "aa" * 32)
    assert secret not in proof and proof == tokens.join_proof(secret, "aa" * 32)
    assert proof != tokens.join_proof(secret, "bb" * 32), "useless at another certificate"
    assert proof != tokens.join_proof(tokens.new_secret(), "aa" * 32)


def test_pair_keys_are_shared_by_two_members_alone():
    a, b, c = pki.new_kx_key(), pki.new_kx_key(), pki.new_kx_key()
    ab = kx.pair_key(a, kx.kx_public(b))
    assert ab == kx.pair_key(b, kx.kx_public(a)) and len(ab) == 32
    assert ab != kx.pair_key(a, kx.kx_public(c)) != kx.pair_key(b, kx.kx_public(c))


def test_pair_keys_are_x25519_then_hkdf_sha256_as_cryptography_computes_them():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    a, b = pki.new_kx_key(), pki.new_kx_key()
    mine = serialization.load_pem_private_key(a.encode(), None)
    theirs = serialization.load_pem_private_key(b.encode(), None).public_key()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert kx.kx_public(b) == theirs.public_bytes(*raw).hex()
    expected = HKDF(hashes.SHA256(), 32, salt=None, info=b"cantainer heartbeats v1").derive(
        mine.exchange(theirs))
    assert kx.pair_key(a, kx.kx_public(b)) == expected


def test_a_key_openssl_will_not_take_is_a_value_error():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import x25519

    a = pki.new_kx_key()
    encrypted = x25519.X25519PrivateKey.generate().private_bytes(  # asks no passphrase
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")).decode()
    for key, theirs, why in ((a, "00" * 32, "refused X25519"),  # a low-order point
                             (encrypted, "ab" * 32, "not a PEM private key"),
                             (a, "ab" * 31, "32 bytes"),
                             ("not a key", "ab" * 32, "not a PEM private key"),
                             (pki.new_key(), "ab" * 32, "not an X25519 key")):
        with pytest.raises(ValueError, match=why):
            kx.pair_key(key, theirs)


def test_a_joiners_public_key_must_be_one_a_member_can_share_a_key_with():
    from cantainer.api.trust import OPS

    check = OPS["join"][1]["kx"][0]
    good = kx.kx_public(pki.new_kx_key())
    assert check("kx", good) == good
    kx.check_public(good)
    for bad, why in (("00" * 32, "low-order point"), ("e0eb7a7c3b41b8ae1656e3faf19fc46a"
                     "da098deb9c32b1fd866205165f49b800", "low-order point"),
                     ("ab" * 31, "64 hex digits"), ("zz" * 32, "64 hex digits")):
        with pytest.raises(Invalid, match=why):
            check("kx", bad)


def test_the_daemon_makes_keys_and_certificates_in_a_child_that_says_what_it_refused():
    ca_key, ca_cert, key, cert, kx_key = certs.new_cluster("h1", "192.0.2.1")
    assert certs.issued_by(cert, ca_cert) and pki.issued_by(cert, ca_cert)
    assert x509.load_pem_x509_certificate(cert.encode()).subject.rfc4514_string() == "CN=h1"
    assert len(kx.kx_public(kx_key)) == 64
    joiner_key, joiner_kx, request = certs.new_member("h2")
    signed = certs.sign(ca_key, ca_cert, request, "h2", "192.0.2.2")
    assert certs.issued_by(signed, ca_cert) and not certs.issued_by(signed, pki.new_ca()[1])
    with pytest.raises(Invalid, match="not a certificate request"):
        certs.sign(ca_key, ca_cert, "garbage", "h2", "192.0.2.2")


def test_credentials_are_private_files(tmp_path, ca):
    key, cert = member(ca)
    creds = Credentials(str(tmp_path)).save(ca[1], key, cert, pki.new_kx_key())
    assert stat.S_IMODE(os.stat(creds.dir).st_mode) == 0o700
    for name in ("ca.crt", "node.key", "node.crt", "node.kx"):
        assert stat.S_IMODE(os.stat(creds.path(name)).st_mode) == 0o600, name
    loaded = Credentials(str(tmp_path)).load()
    assert (loaded.cert, loaded.fingerprint) == (cert, fingerprint(cert))
    loaded.remove()
    assert not Credentials(str(tmp_path)).exist()


def test_the_gate_admits_live_members_and_cuts_who_leaves():
    gate = Gate("me")
    assert gate.admits("me") and not gate.admits("a") and not gate.admits(None)
    gate.update(frozenset({"a", "b"}), frozenset())
    assert gate.admits("a") and gate.reaches("newcomer"), "catching up: any but the revoked"
    cut = []

    class Conn:  # what the gate tracks: connections, held weakly
        def __init__(self, name):
            self.name = name

    conns = {name: Conn(name) for name in ("in-a", "in-b", "out-b", "dropped")}
    gate.track(conns["in-a"], "a", True, lambda: cut.append("in-a"))
    gate.track(conns["in-b"], "b", True, lambda: cut.append("in-b"))
    gate.track(conns["out-b"], "b", False, lambda: cut.append("out-b"))
    gate.track(conns.pop("dropped"), "b", False, lambda: cut.append("dropped"))
    gate.update(frozenset({"a"}), frozenset({"b"}))  # b left
    assert sorted(cut) == ["in-b", "out-b"] and not gate.reaches("b") and not gate.admits("b"), \
        "a connection its owner dropped is forgotten, not cut"
    gate.untrack(conns["in-a"])
    gate.update(frozenset(), frozenset({"a", "b"}))
    assert sorted(cut) == ["in-b", "out-b"], "an untracked connection is not cut"
    assert gate.admits("me"), "this member always admits itself"
    gate.update(frozenset({"a"}), frozenset({"b"}), caught_up=True)
    assert gate.reaches("a") and not gate.reaches("newcomer") and not gate.reaches("b"), \
        "caught up: only the members the log names"
    gate.update(frozenset({"a", "newcomer"}), frozenset({"b"}))
    assert gate.reaches("newcomer") and gate.caught_up, "caught up stays caught up"


class Receiver(Heartbeats):
    """The receiving side only: what ``_open`` takes."""

    def __init__(self, keys) -> None:
        super().__init__("h1", lambda: [], lambda: 0, lambda: None, keys.get)


def beat(key: bytes, name="h2", t=None, **extra) -> bytes:
    body = MAGIC + json.dumps({"n": name, "t": t or time.time_ns(), "a": 3, **extra}).encode()
    return body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_SIZE]


def test_heartbeats_are_authentic_fresh_and_not_replayable():
    key = os.urandom(32)
    rx = Receiver({"h2": key})
    good = beat(key)
    assert rx._open(good)["n"] == "h2"
    assert rx._open(good) is None, "replayed"
    assert rx._open(beat(key, t=time.time_ns() - 60 * 10**9)) is None, "recorded long ago"
    late = Receiver({"h2": key})  # a receiver that has just started
    assert late._open(beat(key, t=time.time_ns() - 5 * 10**9)) is None, \
        "sent before the receiver started: a recording, however fresh"
    assert late._open(beat(key)) is not None
    assert rx._open(beat(os.urandom(32))) is None, "another key: forged"
    forged = bytearray(beat(key))
    forged[10] ^= 1
    assert rx._open(bytes(forged)) is None, "changed on the way"
    assert rx._open(beat(key, name="h9")) is None, "no key shared with h9: no member"
    assert rx._open(beat(key, name="h1")) is None, "not itself"
    assert rx._open(b"{\"n\": \"h2\", \"a\": 1}") is None, "the old plain format"
    assert rx._open(beat(key)) is not None, "a fresh one after all that"


def test_heartbeats_refused_are_counted_and_wake_no_one():
    key = os.urandom(32)
    woken = []
    rx = Heartbeats("h1", lambda: [], lambda: 0, lambda: woken.append(1), {"h2": key}.get)
    rx.datagram_received(beat(os.urandom(32), poke=1), ("192.0.2.9", 1))
    assert (rx.refused, woken, rx.last_heard) == (1, [], {})
    rx.datagram_received(beat(key, poke=1), ("192.0.2.2", 1))
    assert (rx.refused, woken, list(rx.last_heard)) == (1, [1], ["h2"])


def test_a_goodbye_marks_the_sender_gone_until_its_next_heartbeat():
    key = os.urandom(32)
    rx = Heartbeats("h1", lambda: [], lambda: 0, lambda: None, {"h2": key}.get)
    rx.datagram_received(beat(key), ("192.0.2.2", 1))
    heard = rx.last_heard["h2"]
    rx.datagram_received(beat(key, bye=1), ("192.0.2.2", 1))
    assert rx.gone == {"h2"} and rx.last_heard["h2"] == heard, \
        "gone for Raft seats; its silence still counts from its last heartbeat"
    forged = beat(os.urandom(32), name="h3", bye=1)
    rx.datagram_received(forged, ("192.0.2.9", 1))
    assert rx.gone == {"h2"} and rx.refused == 1, "no one else can say another's goodbye"
    rx.datagram_received(beat(key), ("192.0.2.2", 1))
    assert rx.gone == set() and rx.last_heard["h2"] > heard, "back with its next heartbeat"


def test_a_closed_heartbeat_socket_says_goodbye_to_every_peer():
    sent = []

    class Transport:
        def sendto(self, data, address):
            sent.append((json.loads(data[len(MAGIC):-MAC_SIZE]), address))

        def close(self):
            pass

    peers = [("h2", ("192.0.2.2", 9001)), ("h3", ("192.0.2.3", 9001))]
    tx = Heartbeats("h1", lambda: peers, lambda: 0, lambda: None,
                    {"h2": os.urandom(32), "h3": os.urandom(32)}.get)
    tx._transport = Transport()
    tx.close()
    assert [(m["n"], m.get("bye"), a) for m, a in sent] == \
        [("h1", 1, ("192.0.2.2", 9001)), ("h1", 1, ("192.0.2.3", 9001))]
    tx.close()
    assert len(sent) == 2, "once"


def test_pokes_close_together_go_as_one_at_the_gaps_end():
    import asyncio

    from cantainer.daemon import heartbeat

    sent = []

    class Transport:
        def sendto(self, data, address):
            sent.append((time.monotonic(), address))

        def close(self):
            pass

    async def go():
        tx = Heartbeats("h1", lambda: [("h2", ("192.0.2.2", 9001))], lambda: 0,
                        lambda: None, {"h2": os.urandom(32)}.get)
        tx._transport = Transport()
        began = time.monotonic()
        for _ in range(20):  # a burst of appends
            tx.poke()
        assert sent == [], "not on the appender's path: after its answer"
        await asyncio.sleep(0)
        assert len(sent) == 1, "the first at the loop's next turn"
        for _ in range(19):
            tx.poke()
        await asyncio.sleep(heartbeat.POKE_GAP * 3)
        assert len(sent) == 2, "the other 19 as one"
        assert sent[1][0] - began >= heartbeat.POKE_GAP * 0.9
        tx.poke()
        await asyncio.sleep(0)
        assert len(sent) == 3, "a poke after a quiet gap goes at the next turn"
        tx.poke()
        tx.close()  # a merged one still waiting is dropped with the socket
        await asyncio.sleep(heartbeat.POKE_GAP * 2)
        assert len(sent) == 4 and tx.sent == {"heartbeat": 0, "poke": 3, "bye": 1}, \
            "the poke dropped, the goodbye sent"

    asyncio.run(go())


def joined(name, i, cert=None):
    return NodeJoined(name=name, address=f"192.0.2.{i}", dqlite_address=f"192.0.2.{i}:9000",
                      certificate=cert, kx="ab" * 32 if cert else None)


def test_membership_knows_members_by_their_certificates(ca):
    m = Membership()
    seq = iter(range(1, 100))

    def apply(event):
        s = next(seq)
        m.apply(Recorded(s, f"id{s}", event.type_name(), event.VERSION, "t", 0.0, event))
        return m.verdict(s)

    _, c1 = member(ca, "h1", "192.0.2.1")
    _, c2 = member(ca, "h2", "192.0.2.2")
    assert apply(joined("h1", 1, c1)) is None and apply(joined("h2", 2, c2)) is None
    assert apply(joined("h0", 3)) is None, "a version 1 member: known by no certificate"
    assert m.trusted() == {fingerprint(c1), fingerprint(c2)} and m.revoked() == frozenset()
    assert "that certificate is already member h1's" in apply(joined("h3", 4, c1))
    apply(NodeLeft(name="h2"))
    assert m.trusted() == {fingerprint(c1)} and m.revoked() == {fingerprint(c2)}
    assert "revoked when its member left" in apply(joined("h2", 2, c2)), "not with that one"
    _, again = member(ca, "h2", "192.0.2.2")
    assert apply(joined("h2", 2, again)) is None, "with a new certificate, a new token's"
    assert m.revoked() == {fingerprint(c2)}, "the old one stays revoked"


def test_a_host_that_joins_again_gets_a_fresh_grace_before_suspicion():
    from cantainer.daemon.heartbeat import Suspicion

    m = Membership()
    seqs = iter(range(1, 100))

    def apply(event):
        s = next(seqs)
        m.apply(Recorded(s, f"id{s}", event.type_name(), event.VERSION, "t", 0.0, event))

    apply(joined("h1", 1))
    apply(joined("h2", 2))
    now = [1000.0]
    judge = Suspicion("h1", suspect_after=3, clock=lambda: now[0])
    heard = {"h2": 999.0}
    assert judge.events(m, heard, is_leader=True) == [], "heard a second ago"
    now[0] = 1010.0
    assert [e.type_name() for e, _ in judge.events(m, heard, is_leader=True)] == \
        ["NodeSuspected"], "silent for 11 s"
    apply(NodeLeft(name="h2"))
    apply(joined("h2", 2))  # back, as a new member: no heartbeat of it yet
    assert judge.events(m, heard, is_leader=True) == [], "not suspected for the old silence"
    now[0] = 1014.0
    assert [e.name for e, _ in judge.events(m, heard, is_leader=True)] == ["h2"], \
        "silent 4 s since it joined again"
    assert judge.events(m, {}, is_leader=False) == [], "only the leader judges"


def test_a_daemon_does_not_import_cryptography_nor_dnspython_until_it_serves_names():
    import subprocess
    import sys

    code = ("import sys, cantainer.daemon.main, cantainer.daemon.daemon, cantainer.api.server; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography', 'dns'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.stdout.strip() == "[]", out.stdout  # 10 MiB and 5 MiB a daemon would keep


def test_the_child_given_the_cas_key_imports_nothing_from_the_working_directory(
        tmp_path, monkeypatch):
    (tmp_path / "json.py").write_text("raise SystemExit('imported from the working directory')")
    (tmp_path / "cantainer").mkdir()
    (tmp_path / "cantainer" / "__init__.py").write_text("raise SystemExit('a stranger')")
    monkeypatch.chdir(tmp_path)
    key, kx_key, request = certs.new_member("h2")
    assert "PRIVATE KEY" in key and "CERTIFICATE REQUEST" in request


@pytest.mark.parametrize("argv", [supervise.SHIM, child.argv("cantainer.kernel.enter")],
                         ids=["shim", "exec"])
def test_the_shim_and_execs_entry_import_nothing_from_the_working_directory(
        tmp_path, monkeypatch, argv):
    """They run as root, the shim for a container's life: a cantainer/ or json.py in the
    daemon's working directory must not be what they run."""
    (tmp_path / "json.py").write_text("raise SystemExit('imported from the working directory')")
    (tmp_path / "cantainer").mkdir()
    (tmp_path / "cantainer" / "__init__.py").write_text("raise SystemExit('a stranger')")
    monkeypatch.chdir(tmp_path)
    done = subprocess.run(argv, env=child.ENV, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("usage: python -m cantainer."), \
        done.stderr
