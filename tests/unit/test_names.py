"""The containers' name server's answers (daemon/dns.py), the firewall's plan and the
gateway every network's plans name: pure, from states built from events."""

import asyncio
import socket

import dns.flags
import dns.message
import dns.rcode

from cantainer import events as ev
from cantainer.actors.firewall import allowed
from cantainer.daemon.dns import NameServer
from cantainer.events.codec import decode_fields
from cantainer.events.validate import InvalidEvent
from cantainer.projections import overlay, runtime
from cantainer.projections.state import ClusterState
from tests.unit.test_projections import Log, created, joined

NET, OTHER, QUIET = "198.18.0.0/24", "198.18.1.0/24", "198.18.2.0/24"


def cluster():
    state = ClusterState()
    log = Log(state)
    joined(log, "h1", "h2")
    log(ev.NetworkCreated(name="net", cidr=NET))
    log(ev.NetworkCreated(name="other", cidr=OTHER))
    log(ev.NetworkCreated(name="quiet", cidr=QUIET, internal=True))
    log(created("a", "web", "h1", "net"))
    log(created("b", "Db", "h2", "net"))
    log(created("c", "elsewhere", "h2", "other"))
    log(created("d", "hush", "h2", "quiet"))
    return state, log


def ask(server, network, name, rdtype="A"):
    reply, forward = server.answer(network, dns.message.make_query(name, rdtype).to_wire())
    return (dns.message.from_wire(reply) if reply is not None else None), forward


def addresses(message):
    return sorted(item.address for rrset in message.answer for item in rrset)


def test_a_container_resolves_on_its_own_network_only_from_any_host():
    state, _ = cluster()
    server = NameServer("h2", lambda: state)
    server.upstreams = ["192.0.2.53"]
    answer, _ = ask(server, "net", "web")
    assert addresses(answer) == ["198.18.0.2"] and answer.rcode() == dns.rcode.NOERROR
    assert answer.flags & dns.flags.QR and answer.answer[0].ttl == 0
    assert addresses(ask(server, "net", "web.")[0]) == ["198.18.0.2"]
    assert addresses(ask(server, "net", "DB")[0]) == ["198.18.0.3"], "DNS ignores case"
    assert addresses(ask(server, "net", "WEB")[0]) == ["198.18.0.2"]
    no_data, _ = ask(server, "net", "web", "AAAA")
    assert no_data.rcode() == dns.rcode.NOERROR and not no_data.answer
    # Another network's container is another network's name: asked upstream.
    reply, forward = ask(server, "other", "web")
    assert reply is None and forward is not None
    assert forward.question[0].name.to_text() == "web."


def test_a_names_answer_follows_the_log():
    state, log = cluster()
    server = NameServer("h1", lambda: state)
    server.upstreams = []
    log(ev.ContainerExited(container="a" * 12, exit_code=0))
    assert ask(server, "net", "web")[0].rcode() == dns.rcode.NXDOMAIN, "an exited one"
    log(ev.ContainerRemoved(container="a" * 12))
    assert ask(server, "net", "web")[0].rcode() == dns.rcode.NXDOMAIN
    log(created("e", "web", "h2", "net"))
    assert addresses(ask(server, "net", "web")[0]) == ["198.18.0.2"], "the name's new holder"


def test_other_names_go_upstream_unless_the_network_is_internal():
    state, _ = cluster()
    server = NameServer("h2", lambda: state)
    server.upstreams = ["192.0.2.53"]
    assert ask(server, "net", "example.org")[1] is not None
    internal, forward = ask(server, "quiet", "example.org")
    assert forward is None and internal.rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(server, "quiet", "hush")[0]) == ["198.18.2.2"], "its own names do"
    server.upstreams = []
    assert ask(server, "net", "example.org")[0].rcode() == dns.rcode.NXDOMAIN, "no resolver"


def test_what_is_not_a_query_gets_no_answer_and_odd_queries_an_error():
    state, _ = cluster()
    server = NameServer("h1", lambda: state)
    assert server.answer("net", b"\x00\x01garbage") == (None, None)
    query = dns.message.make_query("web", "A")
    query.question.append(query.question[0])
    reply, _ = server.answer("net", query.to_wire())
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_the_upstreams_answer_is_passed_on_and_none_is_servfail():
    state, _ = cluster()
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    server = NameServer("h1", lambda: state)
    server.upstreams, server.upstream_port = ["127.0.0.1"], upstream.getsockname()[1]
    server.upstream_timeout = 0.5
    _, query = ask(server, "net", "example.org")

    def answer_once():
        data, addr = upstream.recvfrom(512)
        reply = dns.message.make_response(dns.message.from_wire(data))
        reply.set_rcode(dns.rcode.REFUSED)
        upstream.sendto(reply.to_wire(), addr)

    async def go():
        served = asyncio.get_running_loop().run_in_executor(None, answer_once)
        answered = dns.message.from_wire(await server.forward(query))
        await served
        assert answered.rcode() == dns.rcode.REFUSED and answered.id == query.id
        upstream.close()  # nobody answers now
        assert dns.message.from_wire(await server.forward(query)).rcode() == dns.rcode.SERVFAIL

    asyncio.run(go())


def test_every_plan_names_the_networks_gateway_and_egress():
    state, _ = cluster()
    plans = overlay.plan(state, "h2")
    assert sorted(p.gateway for p in plans.values()) == \
        ["198.18.0.1/24", "198.18.1.1/24", "198.18.2.1/24"]
    containers = {c.name: c for c in runtime.plan(state, "h2").values()}
    assert containers["Db"].gateway == "198.18.0.1" and containers["Db"].egress
    assert containers["hush"].gateway == "198.18.2.1" and not containers["hush"].egress


def test_the_firewall_masquerades_local_networks_with_egress_and_closes_internal_ones():
    state, log = cluster()
    h2 = allowed(state, "h2")
    assert h2.members == {"192.0.2.1", "192.0.2.2"}
    assert h2.egress == {NET, OTHER}
    vni = state.ipam.networks["quiet"].vni
    assert h2.internal == {f"ctbr{vni}"}
    assert h2.within == {f"ctbr{n.vni}" for n in state.ipam.networks.values()}, \
        "every local bridge may carry its own traffic (br_netfilter shows it to the hooks)"
    h1 = allowed(state, "h1")
    assert h1.egress == {NET} and h1.internal == frozenset(), "only networks with a container here"
    log(ev.NodeLeft(name="h1"))
    assert allowed(state, "h1") is None


def test_network_created_version_1_has_egress():
    old = decode_fields("NetworkCreated", 1, {"name": "n", "cidr": NET})
    assert isinstance(old, ev.NetworkCreated) and old.internal is False
    assert ev.NetworkCreated.VERSION == 2
    bad = decode_fields("NetworkCreated", 2, {"name": "n", "cidr": NET, "internal": "yes"})
    assert not isinstance(bad, ev.NetworkCreated)


# -- published ports ------------------------------------------------------------------------

def test_port_specs_are_parsed_or_refused_by_name():
    from cantainer.events.validate import InvalidEvent, parse_port
    assert parse_port("8080:80") == (None, 8080, 80, "tcp")
    assert parse_port("198.51.100.11:53:5353/udp") == ("198.51.100.11", 53, 5353, "udp")
    for bad, says in (("80", "is not [IP:]HOSTPORT:PORT"), ("8080:80/sctp", "/tcp|/udp"),
                      ("0:80", "is not a port"), ("8080:70000", "is not a port"),
                      ("a.b.c.d:1:2", "is not an IPv4 address"), ("1:2:3:4", "HOSTPORT")):
        try:
            parse_port(bad)
        except InvalidEvent as exc:
            assert says in str(exc), exc
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        created("f", "twice", "h1", "net", ports=("8080:80", "8080:81"))
    except InvalidEvent as exc:
        assert "twice" in str(exc)
    else:
        raise AssertionError("one port published twice by one container")


def test_a_port_is_one_containers_per_host_by_log_order_until_it_is_removed():
    state, log = cluster()
    first = log(created("1", "pub1", "h1", "net", ports=("8080:80",)))
    assert state.verdict(first) is None
    again = log(created("2", "pub2", "h1", "net", ports=("198.51.100.1:8080:81",)))
    assert state.verdict(again) == "port 8080/tcp is already published on h1 by container 'pub1'"
    assert "pub2" not in state.ipam.names, "nothing of it was applied"
    assert state.verdict(log(created("3", "pub3", "h1", "net", ports=("8080:80/udp",)))) is None
    assert state.verdict(log(created("4", "pub4", "h2", "net", ports=("8080:80",)))) is None
    plan = allowed(state, "h1").published
    assert {(p.proto, p.host_ip, p.host_port, p.port) for p in plan} == \
        {("tcp", None, 8080, 80), ("udp", None, 8080, 80)}
    log(ev.ContainerRemoved(container="1" * 12))
    assert state.verdict(log(created("5", "pub5", "h1", "net", ports=("8080:80",)))) is None
    assert {p.ip for p in allowed(state, "h1").published if p.proto == "tcp"} == \
        {str(state.ipam.containers["5" * 12].ip)}
