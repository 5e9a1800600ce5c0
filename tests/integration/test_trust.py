"""Cluster trust, tried as an outsider would: a machine on the underlay that is no member.

Every door of the issue that opened them: the log (dqlite), the peer port, VXLAN,
heartbeats, joining; and a member evicted.  Each attempt is refused, each with a
positive control (the same method, with what a member has, works), and the
members keep working with nothing lost.  Runs in order on one five-host lab:
h1-h3 the cluster, h4 a newcomer, h5 another cluster's.
"""

import asyncio
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import subprocess
import time

import msgpack
import pytest

from cantainer.daemon.heartbeat import MAC_SIZE, MAGIC
from cantainer.kernel import netns
from cantainer.trust import kx, pki, tokens
from cantainer.trust.files import Credentials
from cantainer.trust.tls import client_context
from tests.integration.helpers import events, inspect, module_lab, status, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "198.18.0.0/24"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with module_lab(5, "trust", daemon_args=("--suspect-after", "3")) as lab:
        for n in (1, 2, 3):
            lab.start(n)
        lab.wait_formed(hosts=3)
        lab.cli(1, "run", "-d", "-n", NET, "--name", "vault", "busybox", "sh", "-c",
                "echo s3cret > /tmp/s; sleep 100000")
        lab.cli(2, "run", "-d", "-n", NET, "--name", "neighbour", "busybox", "sleep", "100000")
        lab.outside = lab.outsider()
        lab.tmp = tmp_path_factory.mktemp("trust")
        yield lab


def in_ns(ns, fn):
    return netns.run_in(ns, fn)


def other_ca_context(lab, name: str) -> ssl.SSLContext:
    """A client context with a certificate of a CA that is not the cluster's."""
    ca_key, ca = pki.new_ca("impostor")
    key = pki.new_key()
    return _context(lab, name, ca, key, pki.sign(ca_key, ca, pki.csr(key, name), name,
                                                 "198.51.100.66"))


def stolen_ca_context(lab, name: str) -> ssl.SSLContext:
    """A certificate the cluster's CA signed for a host the log does not name: what a
    stolen CA key (read here from the cluster's secrets, as a member can) would mint."""
    ca_key = sql(lab, lab.tls(1), "SELECT value FROM secrets WHERE name = 'ca_key'")[0][0]
    ca = Credentials(lab.host(1).data_dir).load().ca
    key = pki.new_key()
    return _context(lab, name, ca, key, pki.sign(ca_key, ca, pki.csr(key, name), name,
                                                 "198.51.100.66"))


def _context(lab, name, ca, key, cert) -> ssl.SSLContext:
    directory = lab.tmp / name
    directory.mkdir(exist_ok=True)
    (directory / "node.key").write_text(key)
    (directory / "node.crt").write_text(cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(directory / "node.crt", directory / "node.key")
    return ctx


def sql(lab, tls, statement, params=(), ns=None, address=None):
    """Run one statement on the log's database from namespace ``ns`` (the outsider's
    by default), dialing with ``tls`` (None: plain TCP, as dqlite-client does)."""
    from dqliteclient import connect

    address = address or lab.host(1).dqlite_address

    async def dial(a):
        host, port = a.rsplit(":", 1)
        return await asyncio.open_connection(host, int(port), ssl=tls, server_hostname=None)

    async def go():
        conn = await asyncio.wait_for(connect(address, database="cantainer", timeout=3,
                                              dial_func=dial), 10)
        try:
            if statement.startswith("SELECT"):
                return await conn.fetchall(statement, list(params))
            return await conn.execute(statement, list(params))
        finally:
            await conn.close()

    return in_ns(ns or lab.outside, lambda: asyncio.run(go()))


def peer(lab, tls, message: dict, ns=None) -> dict:
    """One request to h1's peer port from namespace ``ns`` (the outsider's)."""
    def talk():
        raw = socket.create_connection((lab.host(1).address, 9002), timeout=10)
        with (tls.wrap_socket(raw) if tls else raw) as sock:
            sock.sendall(json.dumps(message).encode() + b"\n")
            return json.loads(sock.makefile("rb").readline())
    return in_ns(ns or lab.outside, talk)


def anonymous() -> ssl.SSLContext:
    return client_context(None, None)


EVICT_H2 = ["outsider-1", "NodeLeft", 1, "outsider", 0.0,
            msgpack.packb({"name": "h2"}, use_bin_type=True)]
INSERT = "INSERT INTO events (id, type, version, node, time, payload) VALUES (?, ?, ?, ?, ?, ?)"


def test_the_log_is_closed_to_outsiders(lab):
    head = status(lab, 1)["head"]
    refused = {}
    for what, tls in (("plain dqlite-client", None),
                      ("another CA's certificate", other_ca_context(lab, "impostor")),
                      ("a certificate of the cluster's CA the log does not name",
                       stolen_ca_context(lab, "h9"))):
        for statement, params in ((INSERT, EVICT_H2), ("SELECT * FROM events", ())):
            with pytest.raises(Exception) as failure:  # noqa: PT011 - any refusal will do
                sql(lab, tls, statement, params)
        refused[what] = type(failure.value).__name__  # writing and reading alike
    # The positive control: the same client, from the same machine, with a member's
    # certificate, reaches the log.
    assert sql(lab, lab.tls(1), "SELECT coalesce(max(seq), 0) FROM events")[0][0] >= head
    assert status(lab, 2)["head"] == head, "nothing appended"
    assert {n["name"]: n["state"] for n in json.loads(lab.cli(3, "nodes", "--json").stdout)}[
        "h2"] == "joined", "no one was evicted"
    print("FIGURES trust-log: " + ", ".join(f"{k}: refused ({v})" for k, v in refused.items()))


def test_the_peer_port_serves_no_stranger(lab):
    vault = inspect(lab, 2, "vault")
    exec_ = {"op": "exec", "ref": vault["id"], "command": ["cat", "/tmp/s"]}
    for tls in (anonymous(), stolen_ca_context(lab, "h8")):
        answer = peer(lab, tls, exec_)
        assert answer == {"error": "request 'exec' is for members: this certificate is no "
                                   "live member's", "kind": "invalid"}, answer
        assert peer(lab, tls, {"op": "logs", "ref": vault["id"]})["kind"] == "invalid"
    # Another CA: the server aborts the handshake (TLS 1.3 tells the client on its first
    # read), so nothing is answered.
    with pytest.raises((ssl.SSLError, OSError, ValueError)):
        peer(lab, other_ca_context(lab, "impostor2"), exec_)
    with pytest.raises((OSError, ValueError)):  # no TLS: nothing is answered
        peer(lab, None, exec_)
    assert peer(lab, anonymous(), {"op": "ca"})["ca"].startswith("-----BEGIN CERTIFICATE")
    assert peer(lab, stolen_ca_context(lab, "h7"), {"op": "whoami"})["kind"] == "not_found"
    # Control: a member's certificate runs it (the forwarding daemons use exactly this).
    out = []
    for line in in_ns(lab.outside, lambda: _all_lines(lab, lab.tls(2), exec_)):
        out.append(line)
    assert out[-1] == {"exit_code": 0}
    assert peer(lab, lab.tls(2), {"op": "whoami"}) == {"member": "h2"}


def _all_lines(lab, tls, message):
    raw = socket.create_connection((lab.host(1).address, 9002), timeout=10)
    with tls.wrap_socket(raw) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        return [json.loads(line) for line in sock.makefile("rb")]


def rx_packets(lab, name) -> int:
    return int(lab.cli(1, "exec", name, "cat", "/sys/class/net/eth0/statistics/rx_packets")
               .stdout)


def vxlan_dropped(lab, n) -> int:
    out = subprocess.run(["ip", "netns", "exec", lab.host(n).netns, "nft", "-j", "list",
                          "counter", "inet", "cantainer", "vxlan_dropped"],
                         capture_output=True, text=True, check=True).stdout
    return next(i["counter"]["packets"] for i in json.loads(out)["nftables"] if "counter" in i)


def inject(lab, ns, local, target, frames=15):
    """Build a VXLAN device with the network's VNI in namespace ``ns`` and send
    ``frames`` UDP datagrams to the container ``target`` on h1, straight to its MAC."""
    def ip(*argv):
        subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

    ip("ip", "link", "add", "rogue0", "type", "vxlan", "id", "4096", "dstport", "4789",
       "local", local, "dev", "eth0")
    try:
        ip("ip", "addr", "add", "198.18.0.250/24", "dev", "rogue0")
        ip("ip", "link", "set", "rogue0", "up")
        ip("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "rogue0", "dst",
           lab.host(1).address)
        ip("ip", "neigh", "replace", target["ip"], "lladdr", target["mac"], "dev", "rogue0",
           "nud", "permanent")

        def send():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(frames):
                    s.sendto(b"injected", (target["ip"], 9))
                    time.sleep(0.02)
        in_ns(ns, send)
    finally:
        ip("ip", "link", "del", "rogue0")


def test_vxlan_from_outsiders_is_dropped(lab):
    vault = inspect(lab, 1, "vault")
    before, dropped = rx_packets(lab, "vault"), vxlan_dropped(lab, 1)
    inject(lab, lab.outside, "198.51.100.66", vault)
    # Once the table has dropped all 15, any frame that got past it has arrived too.
    wait_for(lambda: vxlan_dropped(lab, 1) - dropped >= 15, timeout=5, interval=0.05)
    after = rx_packets(lab, "vault")
    # Fewer than the 15 sent: a container's own chatter (IPv6 at its start) is counted too.
    assert after - before < 15, (before, after)
    # Control: the same injection from a member's address arrives (h3 has no container
    # on this network, so no VXLAN device of that VNI of its own).
    inject(lab, lab.host(3).netns, lab.host(3).address, vault)
    wait_for(lambda: rx_packets(lab, "vault") - after >= 15, timeout=5, interval=0.05)
    arrived = rx_packets(lab, "vault") - after
    print(f"FIGURES trust-vxlan: outsider's 15 frames: dropped by the table "
          f"{vxlan_dropped(lab, 1) - dropped} (with its ARP), container rx +{after - before} "
          f"(its own chatter); a member's 15 frames: container rx +{arrived}")


def datagram(lab, sender: int, receiver: int, t: int | None = None, mac: bytes | None = None,
             **extra):
    """A heartbeat from ``sender`` to ``receiver`` as the sender would make it (its keys,
    read from its data directory), with time ``t``; ``mac`` forges one."""
    mine = Credentials(lab.host(sender).data_dir).load()
    theirs = kx.kx_public(Credentials(lab.host(receiver).data_dir).load().kx)
    key = kx.pair_key(mine.kx, theirs)
    body = MAGIC + json.dumps({"a": 1, "n": lab.host(sender).name,
                               "t": t or time.time_ns(), **extra}).encode()
    return body + (mac or hmac.new(key, body, hashlib.sha256).digest()[:MAC_SIZE])


def send_to(lab, n, data: bytes) -> None:
    def go():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, (lab.host(n).address, 9001))
    in_ns(lab.outside, go)


def state_of(lab, name):
    return {n["name"]: n["state"] for n in
            json.loads(lab.cli(1, "nodes", "--json").stdout)}.get(name)


def test_forged_and_replayed_heartbeats_keep_no_dead_host_alive(lab):
    recorded = {n: datagram(lab, 3, n) for n in (1, 2)}
    refused = status(lab, 1)["heartbeats_refused"]
    assert relays_of(lab, 3), "control: h3's TLS relay runs beside its daemon"
    lab.kill(3)
    killed = time.monotonic()
    wait_for(lambda: not relays_of(lab, 3), timeout=5)  # it dies with its daemon
    suspected = None
    while time.monotonic() - killed < 20:
        for n in (1, 2):  # every 0.3 s, as the outsider did
            send_to(lab, n, recorded[n])  # replayed
            send_to(lab, n, datagram(lab, 3, n, mac=b"\0" * MAC_SIZE))  # forged
            send_to(lab, n, datagram(lab, 3, n, mac=b"\1" * MAC_SIZE, poke=1))  # a poke
        if state_of(lab, "h3") == "suspected":
            suspected = time.monotonic() - killed
            break
        time.sleep(0.3)
    assert suspected is not None and suspected < 3 + 5, "h3 was suspected in time"
    assert status(lab, 1)["heartbeats_refused"] > refused + 10
    # Control: datagrams made with h3's own key, fresh, are taken: h3 "recovers".
    wait_for(lambda: [send_to(lab, n, datagram(lab, 3, n)) for n in (1, 2)] and
             state_of(lab, "h3") == "joined", timeout=15, interval=0.3)
    wait_for(lambda: state_of(lab, "h3") == "suspected", timeout=15)  # silence again
    print(f"FIGURES trust-heartbeats: dead host suspected {suspected:.1f} s after the kill "
          "while forged and replayed datagrams came every 0.3 s")


def relays_of(lab, n) -> list[int]:
    """The pids of the dqlite TLS relays of host ``n``'s data directory."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/cantainer-relay") and str(lab.host(n).data_dir).encode() in argv:
            found.append(int(pid))
    return found


def held_connection(lab, tls, ns) -> ssl.SSLSocket:
    """A dqlite connection to h1 from namespace ``ns``, through the gate, answered once
    (a LEADER request) and kept open."""
    def open_() -> ssl.SSLSocket:
        sock = tls.wrap_socket(socket.create_connection((lab.host(1).address, 9000),
                                                        timeout=10))
        sock.sendall(struct.pack("<Q", 1)  # the protocol version
                     + struct.pack("<IBBHQ", 1, 0, 0, 0, 0))  # LEADER, one word of body
        assert sock.recv(4096), "the node answered through the gate"
        return sock
    return in_ns(ns, open_)


def cut(sock: ssl.SSLSocket) -> bool:
    """Whether the other end closed ``sock`` (an end of file, or a reset)."""
    sock.settimeout(10)
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def exits_with(lab, n, expected: str, **start) -> str:
    h = lab.start(n, wait=False, **start)
    assert h.proc.wait(60) == 1
    h.proc = None
    last = lab.log(n).splitlines()[-1]
    assert last.startswith("cantainerd: error: ") and expected in last, last
    assert "Traceback" not in lab.log(n)
    return last


def test_joining_needs_this_clusters_current_token(lab):
    first = lab.join_token(1)
    ca_fingerprint, secret = tokens.parse_token(first)
    exits_with(lab, 4, "joining a cluster needs --join-token", token="")
    exits_with(lab, 4, "is not a Cantainer join token", token="not-a-token")
    exits_with(lab, 4, "this join token is not the cluster's current one",
               token=f"CTN1-{ca_fingerprint}-{'x' * 43}")
    rotated = lab.cli(1, "join-token", "--rotate").stdout.strip()
    assert rotated != first and lab.join_token(2) == rotated, "one token, every member"
    exits_with(lab, 4, "this join token is not the cluster's current one", token=first)
    # Another cluster: h5 bootstraps its own.  Its token at our seed, our token at its seed.
    lab.start(5, seeds=[])
    theirs = lab.join_token(5)
    exits_with(lab, 4, "presents another CA than the join token's", token=theirs)
    exits_with(lab, 4, "presents another CA than the join token's", seeds=[5], token=rotated)
    lab.stop(5)
    assert not Credentials(lab.host(4).data_dir).exist(), "no credentials were issued"
    # The current token joins; members made before the rotation restart as members.
    lab.start(4, token=rotated)
    assert state_of(lab, "h4") == "joined"
    lab.stop(2)
    lab.start(2)
    # A restart that outlasts --suspect-after leaves h2 suspected until its first
    # heartbeat is heard again; a member refused at the door would never recover.
    wait_for(lambda: state_of(lab, "h2") == "joined", timeout=15)
    names = [e["data"]["name"] for e in events(lab, 1) if e["type"] == "NodeJoined"]
    assert names == ["h1", "h2", "h3", "h4"], "refused joiners left no trace in the log"


def test_an_evicted_member_is_refused_everywhere(lab):
    old = Credentials(lab.host(3).data_dir).load()
    old_tls = client_context(old, old.ca)
    held = held_connection(lab, old_tls, lab.host(3).netns)  # while h3 is still a member
    its_token = lab.join_token(1)  # the token of the day, which h3 could have kept
    assert lab.cli(1, "node", "rm", "h3").stdout == "h3\n"  # suspected since the last test
    assert lab.join_token(2) != its_token, "an eviction makes a new join token"
    assert cut(held), "its open connection is cut when the gate learns of the eviction"
    held.close()
    wait_for(lambda: lab.host(3).address not in nft_members(lab, 1))
    with pytest.raises(Exception):  # noqa: PT011 - any refusal will do
        sql(lab, old_tls, "SELECT 1", ns=lab.host(3).netns)
    assert peer(lab, old_tls, {"op": "whoami"}, ns=lab.host(3).netns)["kind"] == "conflict"
    refused = status(lab, 1)["heartbeats_refused"]
    send_to(lab, 1, datagram(lab, 3, 1))  # its own key: no one's partner any more
    wait_for(lambda: status(lab, 1)["heartbeats_refused"] > refused)
    exits_with(lab, 3, "this host's certificate is revoked")
    exits_with(lab, 3, "this join token is not the cluster's current one", token=its_token)
    # With a new token it joins again, with a new certificate; the old one stays refused.
    lab.start(3, token=lab.join_token(1))
    assert state_of(lab, "h3") == "joined"
    assert Credentials(lab.host(3).data_dir).load().fingerprint != old.fingerprint
    assert peer(lab, old_tls, {"op": "whoami"}, ns=lab.host(3).netns)["kind"] == "conflict"


def nft_members(lab, n) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", lab.host(n).netns, "nft", "-j", "list", "set",
                          "inet", "cantainer", "members"], capture_output=True, text=True,
                         check=True).stdout
    return next(i["set"].get("elem", []) for i in json.loads(out)["nftables"] if "set" in i)


def test_the_members_kept_working(lab):
    vault = inspect(lab, 2, "vault")
    reach = lab.cli(2, "exec", "neighbour", "ping", "-c", "1", "-W", "2", vault["ip"],
                    check=False)
    assert reach.returncode == 0, reach
    assert lab.cli(3, "exec", "vault", "cat", "/tmp/s").stdout == "s3cret\n"
    for n in (1, 2, 3, 4):
        assert lab.cli(n, "replay", "--check", check=False).returncode == 0
    logged = events(lab, 1)
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    assert not any(e["node"] == "outsider" for e in logged)
    assert [e["data"]["name"] for e in logged if e["type"] == "NodeLeft"] == ["h3"], \
        "the one departure: the eviction"
