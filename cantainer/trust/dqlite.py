"""dqlite over mutual TLS, as go-dqlite's ``app`` does it: libdqlite itself speaks plain.

    its own node     bound to an abstract unix socket, ``@cantainer-PORT`` (libdqlite
                     accepts connections there from its own process only)
    a listener       on the member's address (TCP): the TLS handshake, the gate
                     (``Gate.admits``), then the bytes relayed to the abstract socket
    Raft to a peer   ``connect``, libdqlite's connect function: one end of a socket
                     pair at once, while a thread dials the peer over TLS and relays
                     (a peer that is down shows up as an end of file: Raft retries)
    SQL clients      ``dial``, dqlite-client's dial function: this member's own address
                     goes to the abstract socket, any other over TLS

Each relay is one thread with non-blocking sockets (OpenSSL forbids a read and a
write on one connection at once from two threads).  The connections of a member
that leaves are cut when the gate learns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import ssl
import threading
import time

from cantainer.trust.tls import Gate, peer_fingerprint, tune

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0
DIAL_TIMEOUT = 2.0
HIGH_WATER = 1 << 20  # bytes buffered one way before reading that way stops
CHUNK = 1 << 18


def abstract_address(port: int) -> str:
    return f"@cantainer-{port}"


class DqliteTls:
    def __init__(self, address: str, server: ssl.SSLContext, client: ssl.SSLContext,
                 gate: Gate) -> None:
        self.address = address
        host, port = address.rsplit(":", 1)
        self.bind_address = abstract_address(int(port))
        self._public = (host, int(port))
        self._server, self._client, self._gate = server, client, gate
        self._relays: dict[threading.Thread, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.stopping = False

    # -- the listener ---------------------------------------------------------------------

    def start(self) -> None:
        self._listener = socket.create_server(self._public)
        self._acceptor = threading.Thread(target=self._accept, name="dqlite-tls-accept",
                                          daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self._listener.accept()
            except OSError:
                return  # closed
            tune(conn)
            self._spawn(lambda c=conn, p=peer: self._serve(c, p), conn)

    def _serve(self, conn: socket.socket, peer) -> None:
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            remote = self._server.wrap_socket(conn, server_side=True,
                                              do_handshake_on_connect=False)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        self._own(remote)  # before the handshake, so close() can cut it
        try:
            remote.do_handshake()
            fingerprint = peer_fingerprint(remote)
            if not self._gate.admits(fingerprint):
                log.warning("dqlite: refused %s: its certificate is no live member's", peer[0])
                _shut(remote)
                return
            remote.settimeout(None)
            local = _abstract(self.bind_address)
        except (OSError, ssl.SSLError) as exc:
            log.debug("dqlite: refused %s: %s", peer[0], exc)
            _shut(remote)
            return
        self._own(local)
        self._relay(remote, local, fingerprint, incoming=True)

    # -- dialing -------------------------------------------------------------------------------

    def connect(self, address: str) -> int:
        """libdqlite's connect function: a file descriptor for Raft to ``address``."""
        mine, theirs = socket.socketpair()

        def run() -> None:
            try:
                remote = self._open(address)
            except (OSError, ssl.SSLError, PermissionError) as exc:
                log.debug("dqlite: cannot reach %s: %s", address, exc)
                mine.close()
                return
            self._relay(remote, mine, peer_fingerprint(remote), incoming=False)

        self._spawn(run, mine)
        return theirs.detach()  # libdqlite owns it now

    def _open(self, address: str) -> ssl.SSLSocket:
        host, port = address.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=DIAL_TIMEOUT)
        remote = None
        try:
            tune(raw)
            remote = self._client.wrap_socket(raw, do_handshake_on_connect=False)
            self._own(remote)  # before the handshake, so close() can cut it
            remote.do_handshake()
            if not self._gate.reaches(peer_fingerprint(remote)):
                raise PermissionError(f"{address}'s certificate was revoked")
            remote.settimeout(None)
            return remote
        except BaseException:
            (remote or raw).close()
            raise

    async def dial(self, address: str):
        """dqlite-client's dial function: (reader, writer) to ``address``."""
        if address == self.address:  # this member's own node: no TLS to itself
            return await asyncio.open_unix_connection("\0" + self.bind_address[1:])
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, int(port), ssl=self._client, server_hostname=None,
            ssl_handshake_timeout=DIAL_TIMEOUT), DIAL_TIMEOUT + 1)
        if not self._gate.reaches(peer_fingerprint(writer.get_extra_info("ssl_object"))):
            writer.close()
            raise ConnectionRefusedError(f"{address}'s certificate was revoked")
        tune(writer.get_extra_info("socket"))
        return reader, writer

    # -- relays -------------------------------------------------------------------------------

    def _spawn(self, target, *socks: socket.socket) -> None:
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._relays.pop(threading.current_thread(), None)

        thread = threading.Thread(target=run, name="dqlite-tls", daemon=True)
        with self._lock:
            if self.stopping:
                for s in socks:
                    s.close()
                return
            self._relays[thread] = list(socks)
        thread.start()

    def _own(self, sock: socket.socket) -> None:
        """A socket made on a relay's thread: closed with the proxy."""
        with self._lock:
            if threading.current_thread() in self._relays:
                self._relays[threading.current_thread()].append(sock)

    def _relay(self, remote: ssl.SSLSocket, local: socket.socket, fingerprint: str | None,
               incoming: bool) -> None:
        key = threading.current_thread()
        self._gate.track(key, fingerprint, incoming, lambda: _shut(remote, local))
        try:
            pump(remote, local)
        finally:
            self._gate.untrack(key)

    def close(self, timeout: float = 2.0) -> None:
        """Stop accepting, cut every relay, wait for their threads."""
        with self._lock:
            self.stopping = True
            threads = list(self._relays)
            socks = [s for owned in self._relays.values() for s in owned]
        if self._listener is not None:
            _shut(self._listener)  # wakes accept(): close() alone does not
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        _shut(*socks)  # wakes select() in each relay
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _abstract(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("\0" + name[1:])
    return sock


def _shut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def pump(remote: ssl.SSLSocket, local: socket.socket) -> None:
    """Relay both ways on this one thread, with non-blocking sockets, until a side is
    gone and what it sent is delivered."""
    remote.setblocking(False)
    local.setblocking(False)
    to_local, to_remote = bytearray(), bytearray()
    pending: bytes | None = None  # an SSL write that wanted to be retried with these bytes
    remote_open = local_open = True
    try:
        while True:
            while remote_open and len(to_local) < HIGH_WATER:
                try:
                    data = remote.recv(CHUNK)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    break
                except (ssl.SSLError, OSError):
                    data = b""
                if not data:
                    remote_open = False
                else:
                    to_local += data
            if to_local:
                try:
                    del to_local[:local.send(to_local)]
                except BlockingIOError:
                    pass
                except OSError:
                    return
            while local_open and len(to_remote) < HIGH_WATER:
                try:
                    data = local.recv(CHUNK)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    local_open = False
                else:
                    to_remote += data
            while pending or to_remote:
                if pending is None:
                    pending = bytes(to_remote[:CHUNK])
                    del to_remote[:len(pending)]
                try:
                    sent = remote.send(pending)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    break
                except OSError:
                    return
                pending = pending[sent:] or None
            if (not remote_open and not to_local) or \
                    (not local_open and not to_remote and not pending):
                return
            if remote.pending():
                continue  # decrypted bytes select() cannot see
            readable, writable = [], []
            if remote_open and len(to_local) < HIGH_WATER:
                readable.append(remote)
            if local_open and len(to_remote) < HIGH_WATER:
                readable.append(local)
            if to_local:
                writable.append(local)
            if pending or to_remote:
                writable.append(remote)
            select.select(readable, writable, [])
    finally:
        _shut(remote, local)
