"""Names and traffic out, on a three-host lab with a machine outside the cluster.

The outsider (a namespace on the underlay, no member) runs an HTTP server and a
name server of its own; every daemon is told to ask that one (``--dns``) for
the names that are not the cluster's.  Containers find each other by name on
any host, on their own network only; they reach the outsider through their
host's NAT, unless their network is internal; a host reaches its own containers.
"""

import os
import socket
import subprocess
import threading

import dns.message
import dns.rcode
import dns.rrset
import pytest

from cantainer.kernel import netns
from tests.integration.helpers import module_lab, ps, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

OTHER, QUIET = "198.18.4.0/24", "198.18.5.0/24"
OUTSIDE_NAME, OUTSIDE_ADDRESS = "outside.example.", "192.0.2.80"
HTTP_PORT = 8080
WEB = ("mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && "
       "exec httpd -f -p 80 -h /www")


class Outsider:
    """An HTTP server and a name server on the outsider's address, served by threads of
    this process from sockets made in its namespace."""

    def __init__(self, ns: str, address: str) -> None:
        self.address = address
        self.peers: list[str] = []      # who connected to the HTTP server
        self.questions: list[str] = []  # what the name server was asked

        def sockets():
            http = socket.create_server((address, HTTP_PORT))
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((address, 53))
            return http, udp

        self.http, self.udp = netns.run_in(ns, sockets)
        for target in (self._serve_http, self._serve_dns):
            threading.Thread(target=target, daemon=True).start()

    def _serve_http(self) -> None:
        while True:
            try:
                conn, (peer, _) = self.http.accept()
            except OSError:
                return
            with conn:
                self.peers.append(peer)
                conn.recv(4096)
                body = b"hello-outside\n"
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))

    def _serve_dns(self) -> None:
        while True:
            try:
                data, addr = self.udp.recvfrom(512)
            except OSError:
                return
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text()
            self.questions.append(name)
            reply = dns.message.make_response(query)
            if name == OUTSIDE_NAME:
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", OUTSIDE_ADDRESS))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.udp.sendto(reply.to_wire(), addr)

    def close(self) -> None:
        for sock in (self.http, self.udp):
            sock.close()


@pytest.fixture(scope="module")
def lab():
    with module_lab(3, "dns") as lab:
        address = "198.51.100.66"  # the outsider's (lab.outsider's default)
        lab.outside = Outsider(lab.outsider(), address)
        try:
            lab.daemon_args = ("--dns", address)
            lab.start_all()
            yield lab
        finally:
            lab.outside.close()


def run(lab, n, *args, check=True):
    return lab.cli(n, "run", "--rm", *args, check=check)


def test_a_client_reaches_its_server_by_name_on_another_host(lab):
    lab.cli(1, "run", "-d", "--name", "web", "busybox", "sh", "-c", WEB)
    ip = ps(lab, 1)["web"]["ip"]
    client = run(lab, 2, "busybox", "sh", "-c",
                 "nslookup web; for i in $(seq 50); do wget -qO- http://web/ && exit 0; "
                 "sleep 0.1; done; exit 1")
    assert ip in client.stdout and "hello-from-web" in client.stdout, client
    # Its own name, from /etc/hosts; the name server, its host's on the network's .1.
    own = run(lab, 3, "--name", "me", "busybox", "sh", "-c",
              "cat /etc/resolv.conf; ping -c 1 -W 2 me >/dev/null && echo own-name-ok")
    assert "nameserver 198.19.128.1" in own.stdout and "own-name-ok" in own.stdout, own


def test_names_belong_to_their_network_and_go_with_their_container(lab):
    lab.cli(1, "network", "create", "--name", "other", OTHER)
    lab.cli(1, "run", "-d", "--name", "soon-gone", "busybox", "sleep", "600")
    ip = ps(lab, 1)["soon-gone"]["ip"]
    assert ip in run(lab, 3, "busybox", "nslookup", "soon-gone").stdout
    other = run(lab, 3, "-n", "other", "busybox", "nslookup", "soon-gone", check=False)
    assert other.returncode != 0 and ip not in other.stdout, other
    assert "soon-gone." in lab.outside.questions, "another network's asks upstream"
    lab.cli(2, "rm", "-f", "soon-gone")
    gone = run(lab, 3, "busybox", "nslookup", "soon-gone", check=False)
    assert gone.returncode != 0 and ip not in gone.stdout, gone


def test_other_names_go_to_the_hosts_resolvers_unless_the_network_is_internal(lab):
    out = run(lab, 2, "busybox", "nslookup", "outside.example")
    assert OUTSIDE_ADDRESS in out.stdout, out
    lab.cli(1, "network", "create", "--internal", "--name", "quiet", QUIET)
    asked = len(lab.outside.questions)
    quiet = run(lab, 2, "-n", "quiet", "busybox", "nslookup", "outside.example", check=False)
    assert quiet.returncode != 0 and OUTSIDE_ADDRESS not in quiet.stdout, quiet
    assert len(lab.outside.questions) == asked, "an internal network's names stay inside"
    lab.cli(2, "run", "-d", "-n", "quiet", "--name", "hush", "busybox", "sleep", "600")
    assert ps(lab, 2)["hush"]["ip"] in \
        run(lab, 3, "-n", "quiet", "busybox", "nslookup", "hush").stdout, "its own names do"
    nets = {n["name"]: n for n in __import__("json").loads(
        lab.cli(3, "network", "ls", "--json").stdout)}
    assert nets["quiet"]["internal"] is True and nets["other"]["internal"] is False


def test_egress_through_nat_none_from_an_internal_network_and_the_host_reaches_its_own(
        lab, tmp_path):
    from tests.unit.test_images import alpine_like

    url = f"http://{lab.outside.address}:{HTTP_PORT}/"
    # An Alpine-like image (the minirootfs' layout), as the issue's user ran.
    applets = [("./usr/", "dir", None), ("./usr/bin/", "dir", None),
               *((f"./usr/bin/{name}", "sym", "/bin/busybox") for name in ("wget", "timeout"))]
    lab.cli(1, "image", "import", "alpine:3.20.3",
            str(alpine_like(tmp_path / "a.tar.gz", applets)))
    # (busybox's wget -T crashes: timeout(1) bounds it instead)
    out = run(lab, 1, "alpine:3.20.3", "timeout", "5", "wget", "-qO-", url)
    assert "hello-outside" in out.stdout, out
    assert lab.outside.peers[-1] == lab.host(1).address, "masqueraded: the host's address"
    lab.cli(1, "network", "create", "--internal", "--name", "sealed", "198.18.6.0/24")
    peers = len(lab.outside.peers)
    sealed = run(lab, 1, "-n", "sealed", "busybox", "sh", "-c",
                 f"ip route; timeout 3 wget -qO- {url}", check=False)
    assert sealed.returncode != 0 and "hello-outside" not in sealed.stdout, sealed
    assert "default" not in sealed.stdout, "no route out"
    assert len(lab.outside.peers) == peers
    # The host reaches its own container (the network's .1 is on its bridge); a
    # container of an internal network, too.
    for network, name in (("default", "near"), ("sealed", "near-sealed")):
        lab.cli(1, "run", "-d", "-n", network, "--name", name, "busybox", "sh", "-c", WEB)
        ip = ps(lab, 1)[name]["ip"]
        body = wait_for(lambda ip=ip: fetch_in(lab.host(1).netns, ip, 80), timeout=10)
        assert f"hello-from-{name}" in body, body


def fetch_in(ns, address, port):
    """An HTTP GET from namespace ``ns``: the body, or None if nothing answers."""
    def get():
        try:
            with socket.create_connection((address, port), timeout=3) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
                return data.decode(errors="replace")
        except OSError:
            return None
    return netns.run_in(ns, get)


def test_a_published_port_answers_at_its_hosts_address_from_anywhere(lab):
    lab.cli(1, "run", "-d", "-p", "8080:80", "--name", "pub", "busybox", "sh", "-c",
            WEB.replace("httpd -f", "httpd -f -v"))
    h1 = lab.host(1).address
    for ns, who in ((lab.host(2).netns, "another host"), (lab.outsider(), "the outsider"),
                    (lab.host(1).netns, "its own host")):
        body = wait_for(lambda ns=ns: fetch_in(ns, h1, 8080), timeout=10)
        assert "hello-from-pub" in body, (who, body)
    # The client's address is kept (DNAT only): httpd -v logs who asked.
    assert lab.host(2).address in lab.cli(3, "logs", "pub").stdout
    assert ps(lab, 3)["pub"]["ports"] == ["8080:80"]
    assert "8080:80" in lab.cli(2, "ps").stdout
    # One container a port a host: refused on h1 in one line, taken on h2.
    taken = lab.cli(1, "run", "-d", "-p", "8080:81", "busybox", "sleep", "60", check=False)
    assert taken.returncode != 0 and taken.stderr.count("\n") == 1, taken
    assert "port 8080/tcp is already published on h1 by container 'pub'" in taken.stderr
    lab.cli(2, "run", "-d", "-p", "8080:80", "--name", "pub2", "busybox", "sh", "-c", WEB)
    assert "hello-from-pub2" in wait_for(
        lambda: fetch_in(lab.host(3).netns, lab.host(2).address, 8080), timeout=10)
    # Bad specs, an address that is not the host's: one line each, nothing appended.
    head = len(lab.cli(1, "events", "--json").stdout.splitlines())
    for spec, says in (("80", "is not [IP:]HOSTPORT:PORT"), ("8080:80/sctp", "/tcp|/udp"),
                       ("198.51.100.99:9090:80", "is not an address of this host")):
        bad = lab.cli(1, "run", "-d", "-p", spec, "busybox", "true", check=False)
        assert bad.returncode != 0 and says in bad.stderr, bad
        assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert len(lab.cli(1, "events", "--json").stdout.splitlines()) == head
    # Removed with its container: nothing answers, and the port is free again.
    lab.cli(3, "rm", "-f", "pub")
    wait_for(lambda: fetch_in(lab.host(2).netns, h1, 8080) is None, timeout=10)
    lab.cli(1, "run", "-d", "-p", f"{h1}:8080:80", "--name", "pub3", "busybox", "sh", "-c",
            WEB)
    assert "hello-from-pub3" in wait_for(
        lambda: fetch_in(lab.host(2).netns, h1, 8080), timeout=10)
