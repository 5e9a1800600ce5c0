"""The name server of this host's containers: UDP port 53 on each local network's .1.

Every container's ``/etc/resolv.conf`` names its network's .1, which every
host's bridge of that network holds (``projections/overlay.py``): a container
asks its own host.  Answers come from the state alone, on the daemon's event
loop where the runner applies the log (no copies, no locks):

* a name of a container of the asking network, created or running, on any
  host -> its address (A; other types: no data).  Names are looked up as
  given, then in lower case (DNS ignores case; container names do not);
* a service's name -> the addresses of its replicas on the asking network that
  are created or running, on any host, in a new random order each answer
  (dnspython shuffles a set's records, as Docker's DNS round robin does);
  ``NAME.N`` is replica N's container's name;
* any other name -> the host's own resolvers (``cantainerd --dns``, else its
  ``/etc/resolv.conf``) if the network has egress; NXDOMAIN if it is internal.

A container of another network, a removed or an exited one, does not resolve.
TTL 0: the log may move at any moment, and nothing between here and the
container caches.  dnspython does the wire format.  One socket a network,
bound with ``IP_FREEBIND`` so it can wait for the overlay actor to put the
address on the bridge; sockets follow the state after every batch.
"""

from __future__ import annotations

import asyncio
import logging
import socket

log = logging.getLogger(__name__)

PORT = 53
IP_FREEBIND = 15
UPSTREAM_TIMEOUT = 2.0  # seconds each of the host's resolvers gets

_dns = None


def _dnspython():
    """The ``dns`` package with the modules used here, imported on first use: 90 modules
    and 5 MiB of a daemon's memory, which a host without containers never needs."""
    global _dns
    if _dns is None:
        import dns.asyncquery
        import dns.exception
        import dns.flags
        import dns.message
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.resolver
        import dns.rrset
        _dns = dns
    return _dns


class NameServer:
    def __init__(self, node: str, state_of, upstreams: tuple[str, ...] = ()) -> None:
        self.node = node
        self._configured = upstreams  # cantainerd --dns; none: the host's resolv.conf
        self._state_of = state_of  # () -> the runner's ClusterState
        self._servers: dict[str, tuple[str, _Protocol]] = {}  # network -> (its .1, server)
        self._failed: dict[str, str] = {}  # network -> the gateway it could not bind
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: set[asyncio.Task] = set()
        self.upstreams: list[str] | None = None  # read when the first server starts
        self.upstream_port, self.upstream_timeout = PORT, UPSTREAM_TIMEOUT
        self._folded_at, self._folded_names = -1, {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _read_upstreams(self) -> None:
        """Where other names go, read when the first server starts."""
        dns = _dnspython()
        try:
            self.upstreams = list(self._configured or
                                  dns.resolver.Resolver(configure=True).nameservers)
        except dns.resolver.NoResolverConfiguration:
            self.upstreams = []
        log.info("names: other names go to %s", ", ".join(self.upstreams) or "no resolver")

    def close(self) -> None:
        for _, server in self._servers.values():
            server.close()
        self._servers.clear()
        self._loop = None

    # -- the sockets follow the state -----------------------------------------------------

    def update(self, state) -> None:
        """After every batch: one server for each network with a container here."""
        if self._loop is None:
            return
        networks = state.ipam.networks
        wanted = {c.network: str(networks[c.network].gateway)
                  for c in state.ipam.containers.values() if c.host == self.node}
        for network, (ip, server) in list(self._servers.items()):
            if wanted.get(network) != ip:
                server.close()
                del self._servers[network]
        for network in list(self._failed):
            if wanted.get(network) != self._failed[network]:
                del self._failed[network]  # tried again if it comes back
        for network, ip in wanted.items():
            if network not in self._servers and network not in self._failed:
                self._serve(network, ip)

    def _serve(self, network: str, ip: str) -> None:
        if self.upstreams is None:
            self._read_upstreams()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.setblocking(False)
            sock.bind((ip, PORT))
        except OSError as exc:
            sock.close()
            self._failed[network] = ip
            log.warning("names: no name server for network %s: cannot bind %s:%d: %s",
                        network, ip, PORT, exc.strerror or exc)
            return
        protocol = _Protocol(self, network)
        self._servers[network] = (ip, protocol)
        task = self._loop.create_task(
            self._loop.create_datagram_endpoint(lambda: protocol, sock=sock))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    # -- answers ----------------------------------------------------------------------------

    def lookup(self, network: str, name: str) -> list[str]:
        """The addresses of container or service ``name`` that the asking network may
        resolve (none: it does not)."""
        state = self._state_of()
        ipam = state.ipam
        cid = ipam.names.get(name) or self._folded(state).get(name.lower())
        if cid is None:
            services = state.services.services
            service = services.get(name) or next(
                (s for n, s in services.items() if n.lower() == name.lower()), None)
            if service is None:
                return []
            found = [ipam.containers[c] for _, c in sorted(service.slots.items())]
            return [str(c.ip) for c in found if c.network == network and c.state != "exited"]
        c = ipam.containers.get(cid)
        if c is None or c.network != network or c.state == "exited":
            return []
        return [str(c.ip)]

    def _folded(self, state) -> dict[str, str]:
        """Container names in lower case -> ids, made again once the state has moved."""
        if self._folded_at != state.applied:
            self._folded_names = {n.lower(): cid for n, cid in state.ipam.names.items()}
            self._folded_at = state.applied
        return self._folded_names

    def answer(self, network: str, data: bytes) -> tuple[bytes | None, object]:
        """(the reply, None), or (None, the query) to go to the host's resolvers, or
        (None, None): not a DNS query, no answer at all."""
        dns = _dnspython()
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None, None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        if len(query.question) != 1 or query.question[0].rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.FORMERR if len(query.question) != 1
                               else dns.rcode.REFUSED)
            return response.to_wire(), None
        question = query.question[0]
        ips = self.lookup(network, question.name.to_text(omit_final_dot=True))
        if ips:
            if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
                response.answer.append(dns.rrset.from_text_list(question.name, 0, "IN", "A",
                                                                ips))
            return response.to_wire(), None  # other types of a known name: no data
        net = self._state_of().ipam.networks.get(network)
        if net is None or net.internal or not self.upstreams:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire(), None
        return None, query

    async def forward(self, query) -> bytes:
        """The first answer of the host's resolvers; SERVFAIL if none answers."""
        dns = _dnspython()
        for upstream in self.upstreams or ():
            try:
                answer = await dns.asyncquery.udp(query, upstream, port=self.upstream_port,
                                                  timeout=self.upstream_timeout)
                return answer.to_wire()
            except (dns.exception.DNSException, OSError):
                continue
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    """One network's server; closed perhaps before the loop has given it its transport."""

    def __init__(self, server: NameServer, network: str) -> None:
        self.server, self.network = server, network
        self.transport: asyncio.DatagramTransport | None = None
        self.closed = False
        self.forwarding: set[asyncio.Task] = set()  # queries at the host's resolvers

    def close(self) -> None:
        self.closed = True
        for task in self.forwarding:
            task.cancel()
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed:
            transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            reply, query = self.server.answer(self.network, data)
        except Exception as exc:  # a bad query costs its answer, never the server
            log.debug("names: no answer to %s: %s", addr, exc)
            return
        if reply is not None:
            self._send(reply, addr)
        elif query is not None:
            task = asyncio.get_running_loop().create_task(self._forward(query, addr))
            self.forwarding.add(task)
            task.add_done_callback(self.forwarding.discard)

    async def _forward(self, query, addr) -> None:
        self._send(await self.server.forward(query), addr)

    def _send(self, reply: bytes, addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)
