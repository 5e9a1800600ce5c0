"""The TLS proxy in front of this member's dqlite node: a process of its own.

    python -m cantainer.trust.proxy DATA_DIR PARENT_PID CONTROL_FD LOG_LEVEL

libdqlite speaks plain; every byte it exchanges with other members passes here,
as go-dqlite's ``app`` proxy does it.  It is a process of its own, one thread
and one ``epoll``, because in the daemon's process its relays waited for the
GIL behind the daemon's own Python: a Raft round trip crosses four relays, and
each wait there was a wait in every append (bench.trust).

The daemon (``trust/dqlite.py``) starts it and talks to it over one
``SOCK_SEQPACKET`` pair (``CONTROL_FD``), JSON messages with file
descriptors attached:

    daemon -> proxy   {"listen": true}       + [the listening TCP socket]
                      {"dial": ADDRESS}      + [one end of a socket pair]: relay it to
                                               ADDRESS over TLS (Raft: libdqlite's
                                               connect function)
                      {"local": ID}          + [a connection to the node's abstract
                                               socket] for incoming connection ID, or
                                               no descriptor: the node is gone
                      {"gate": {"trusted": [...], "revoked": [...], "caught_up": B}}
    proxy -> daemon   {"local": ID}          incoming connection ID passed the gate:
                                               it needs a connection to the node

The node accepts connections on its abstract socket from the daemon's own
process only, so the daemon makes them and hands them over.  The end of the
pair (the daemon stopped or died) ends the proxy; so does the daemon's death,
through ``PR_SET_PDEATHSIG``.  Refusals are logged on stderr, the daemon's.
"""

from __future__ import annotations

import array
import ctypes
import errno
import json
import logging
import os
import select
import signal
import socket
import ssl
import sys
import time

from cantainer.trust.files import Credentials
from cantainer.trust.tls import Gate, client_context, peer_fingerprint, server_context, tune

log = logging.getLogger("cantainer.trust.proxy")

HANDSHAKE_TIMEOUT = 5.0  # seconds from accept or dial to a connection that passed the gate
HIGH_WATER = 1 << 20     # bytes buffered one way before reading that way stops
CHUNK = 1 << 16  # a read of 256 KiB costs ten times one of 64 KiB here (the allocation)
PR_SET_PDEATHSIG = 1
MAX_FDS = 4

R, W = select.EPOLLIN, select.EPOLLOUT
GONE = select.EPOLLHUP | select.EPOLLERR  # reported as readable: the read sees the end


class Relay:
    """One TLS connection to another member and its plain partner on this host.

    Its life: ``connecting`` (a dial, TCP not yet up) -> ``handshake`` -> (incoming
    only: ``waiting``, for the node's connection) -> ``relaying`` -> closed.
    """

    def __init__(self, proxy: Proxy, sock: socket.socket, incoming: bool,
                 plain: socket.socket | None = None, address: str = "") -> None:
        self.proxy, self.incoming, self.address = proxy, incoming, address
        self.raw = sock
        self.tls: ssl.SSLSocket | None = None
        self.plain = plain
        self.fingerprint: str | None = None
        self.state = "connecting" if not incoming else "handshake"
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.to_plain, self.to_tls = bytearray(), bytearray()
        self.retry: bytes | None = None  # an SSL write to be retried with these bytes
        self.tls_open = self.plain_open = True
        self.masks: tuple[int, int] | None = None  # what epoll waits for while relaying
        if incoming:
            self._wrap()

    # -- setting up ------------------------------------------------------------------

    def _wrap(self) -> None:
        self.proxy.unwatch(self.raw)  # the SSL socket takes over its descriptor
        ctx = self.proxy.server if self.incoming else self.proxy.client
        self.tls = ctx.wrap_socket(self.raw, server_side=self.incoming,
                                   do_handshake_on_connect=False)
        self.state = "handshake"

    def ready(self, sock: socket.socket, events: int) -> None:
        try:
            if self.state == "connecting":
                err = self.raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                self._wrap()
            if self.state == "handshake":
                self._handshake()
            elif self.state == "relaying":
                self._pump(sock, events)
        except (OSError, ssl.SSLError) as exc:
            self._refuse(str(exc) or type(exc).__name__, quiet=True)
            return
        self._watch()

    def _handshake(self) -> None:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.proxy.want(self.tls, R, self)
            return
        except ssl.SSLWantWriteError:
            self.proxy.want(self.tls, W, self)
            return
        self.fingerprint = peer_fingerprint(self.tls)
        gate = self.proxy.gate
        if self.incoming:
            if not gate.admits(self.fingerprint):
                self._refuse("its certificate is no live member's")
                return
            self.state = "waiting"
            self.proxy.want(self.tls, 0, self)
            self.proxy.ask_local(self)
        else:
            if not gate.reaches(self.fingerprint):
                self._refuse(f"{self.address}'s certificate was revoked")
                return
            self._start_relaying()

    def give_local(self, local: socket.socket | None) -> None:
        if self.state != "waiting":
            if local is not None:
                local.close()
            return
        if local is None:
            self._refuse("the node is not serving", quiet=True)
            return
        if not self.proxy.gate.admits(self.fingerprint):  # the gate moved meanwhile
            local.close()
            self._refuse("its member left the cluster")
            return
        self.plain = local
        try:
            self._start_relaying()
        except OSError as exc:
            self._refuse(str(exc), quiet=True)
        self._watch()

    def _start_relaying(self) -> None:
        self.state = "relaying"
        self.plain.setblocking(False)
        self.tls.setblocking(False)
        self.proxy.settled(self)
        self.proxy.gate.track(self, self.fingerprint, self.incoming,
                              lambda: self._refuse("its member left the cluster"))
        # Bytes the peer sent with its last handshake flight may be decrypted already.
        self._from_tls()

    # -- relaying ----------------------------------------------------------------------

    def _pump(self, sock: socket.socket, events: int) -> None:
        if sock is self.tls:
            if events & (R | GONE):
                self._from_tls()
            if events & W:
                self._flush_tls()
        else:
            if events & (R | GONE):
                self._from_plain()
            if events & W:
                self._flush_plain()

    def _from_tls(self) -> None:
        while self.tls_open and len(self.to_plain) < HIGH_WATER:
            try:
                data = self.tls.recv(CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (ssl.SSLError, OSError):
                data = b""
            if not data:
                self.tls_open = False
            elif not self.to_plain:  # the usual case: straight on, no copy
                try:
                    sent = self.plain.send(data)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.plain_open = self.tls_open = False
                    return
                self.to_plain += data[sent:]
            else:
                self.to_plain += data
            if not self.tls.pending():
                break  # whatever else arrives wakes epoll
        self._flush_plain()

    def _flush_plain(self) -> None:
        if self.to_plain:
            try:
                del self.to_plain[:self.plain.send(self.to_plain)]
            except BlockingIOError:
                pass
            except OSError:
                self.plain_open = self.tls_open = False
                self.to_plain.clear()
        if not self.to_plain and self.tls_open and self.tls.pending():
            self._from_tls()  # decrypted bytes epoll cannot see

    def _from_plain(self) -> None:
        if self.plain_open and len(self.to_tls) < HIGH_WATER:
            try:
                data = self.plain.recv(CHUNK)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.plain_open = False
            elif data:
                if self.retry is None and not self.to_tls:
                    self.retry = data  # the usual case: sent as it is, no copy
                else:
                    self.to_tls += data
        self._flush_tls()

    def _flush_tls(self) -> None:
        while self.retry is not None or self.to_tls:
            if self.retry is None:
                self.retry = bytes(self.to_tls[:CHUNK])
                del self.to_tls[:len(self.retry)]
            try:
                sent = self.tls.send(self.retry)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except OSError:
                self.tls_open = self.plain_open = False
                self.retry = None
                self.to_tls.clear()
                return
            self.retry = self.retry[sent:] or None

    def _watch(self) -> None:
        """Tell the proxy what to wait for next, or end when a side is gone and what it
        sent is delivered."""
        if self.state == "closed":
            return
        if self.state == "relaying" and (
                (not self.tls_open and not self.to_plain) or
                (not self.plain_open and not self.to_tls and self.retry is None)):
            self.close()
            return
        if self.state == "connecting":
            self.proxy.want(self.raw, W, self)
        elif self.state == "relaying":
            masks = ((R if self.tls_open and len(self.to_plain) < HIGH_WATER else 0)
                     | (W if self.retry is not None or self.to_tls else 0),
                     (R if self.plain_open and len(self.to_tls) < HIGH_WATER else 0)
                     | (W if self.to_plain else 0))
            if masks != self.masks:  # usually the same: nothing to tell epoll
                self.masks = masks
                self.proxy.want(self.tls, masks[0], self)
                self.proxy.want(self.plain, masks[1], self)

    # -- ending ----------------------------------------------------------------------------

    def _refuse(self, why: str, quiet: bool = False) -> None:
        where = f"from {self._peer()}" if self.incoming else f"to {self.address}"
        if quiet:
            log.debug("dqlite: connection %s ended: %s", where, why)
        else:
            log.warning("dqlite: refused a connection %s: %s", where, why)
        self.close()

    def _peer(self) -> str:
        try:
            return self.raw.getpeername()[0]
        except OSError:
            return "a peer"

    def close(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.proxy.forget(self)
        self.proxy.gate.untrack(self)
        for sock in (self.tls or self.raw, self.plain):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class Proxy:
    def __init__(self, data_dir: str, control_fd: int) -> None:
        creds = Credentials(data_dir).load()
        self.server = server_context(creds)
        self.client = client_context(creds, creds.ca)
        self.gate = Gate(creds.fingerprint)  # the daemon's, as it last sent it
        self.control = socket.socket(fileno=control_fd)
        self.control.setblocking(False)
        self.listener: socket.socket | None = None
        self.epoll = select.epoll()
        # file descriptor -> (what it belongs to, the socket, the events waited for)
        self.watched: dict[int, tuple[object, socket.socket, int]] = {}
        self._add(self.control, R, "control")
        self.relays: set[Relay] = set()
        self.setting_up: set[Relay] = set()  # with a deadline: dialing, handshake, waiting
        self.waiting: dict[int, Relay] = {}
        self._next_id = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            # Nothing to time out: sleep until something happens (the daemon's end too).
            for fd, events in self.epoll.poll(1.0 if self.setting_up else -1):
                watched = self.watched.get(fd)
                if watched is None:
                    continue  # closed by an earlier event of this round
                owner, sock, _ = watched
                if owner == "control":
                    self._control()
                elif owner == "listener":
                    self._accept()
                else:
                    owner.ready(sock, events)
            if self.setting_up:
                self._expire()
        for relay in list(self.relays):
            relay.close()

    # -- epoll -----------------------------------------------------------------------------

    def _add(self, sock: socket.socket, events: int, owner: object) -> None:
        self.epoll.register(sock.fileno(), events)
        self.watched[sock.fileno()] = (owner, sock, events)

    def want(self, sock: socket.socket, events: int, relay: Relay) -> None:
        """Wait for ``events`` on ``sock`` (none: stop watching it)."""
        fd = sock.fileno()
        watched = self.watched.get(fd)
        if watched is not None and watched[1] is sock:
            if watched[2] == events:
                return
            if events:
                self.epoll.modify(fd, events)
                self.watched[fd] = (relay, sock, events)
            else:
                self.unwatch(sock)
        elif events:
            self._add(sock, events, relay)

    def unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        watched = self.watched.get(fd)
        if fd >= 0 and watched is not None and watched[1] is sock:
            del self.watched[fd]
            self.epoll.unregister(fd)

    def settled(self, relay: Relay) -> None:
        self.setting_up.discard(relay)

    def forget(self, relay: Relay) -> None:
        for sock in (relay.raw, relay.tls, relay.plain):
            if sock is not None:
                self.unwatch(sock)
        self.relays.discard(relay)
        self.setting_up.discard(relay)
        for key, waiting in list(self.waiting.items()):
            if waiting is relay:
                del self.waiting[key]

    def _expire(self) -> None:
        now = time.monotonic()
        for relay in [r for r in self.setting_up if now > r.deadline]:
            relay._refuse("no handshake in time", quiet=True)

    # -- connections -------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        sock.setblocking(False)
        tune(sock)
        try:
            relay = Relay(self, sock, incoming=True)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        self.relays.add(relay)
        self.setting_up.add(relay)
        relay.ready(relay.tls, R)

    def _dial(self, address: str, plain: socket.socket) -> None:
        host, port = address.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        relay = Relay(self, sock, incoming=False, plain=plain, address=address)
        self.relays.add(relay)
        self.setting_up.add(relay)
        try:
            tune(sock)
            err = sock.connect_ex((host.strip("[]"), int(port)))
        except OSError as exc:
            err = exc.errno or errno.EINVAL
        if err not in (0, errno.EINPROGRESS):
            relay._refuse(os.strerror(err), quiet=True)
            return
        relay._watch()

    def ask_local(self, relay: Relay) -> None:
        self._next_id += 1
        self.waiting[self._next_id] = relay
        self._send({"local": self._next_id})

    # -- the daemon --------------------------------------------------------------------------

    def _send(self, message: dict) -> None:
        try:
            self.control.send(json.dumps(message).encode())
        except OSError:
            self.running = False

    def _control(self) -> None:
        while True:
            fds = array.array("i")
            try:
                data, ancdata, _, _ = self.control.recvmsg(
                    1 << 16, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
            except BlockingIOError:
                return
            except OSError:
                data, ancdata = b"", []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            if not data:
                self.running = False  # the daemon is gone
                return
            socks = [socket.socket(fileno=fd) for fd in fds]
            self._message(json.loads(data), socks)

    def _message(self, message: dict, socks: list[socket.socket]) -> None:
        if "listen" in message:
            self.listener = socks[0]
            self.listener.setblocking(False)
            self._add(self.listener, R, "listener")
        elif "dial" in message:
            self._dial(message["dial"], socks[0])
        elif "local" in message:
            relay = self.waiting.pop(message["local"], None)
            local = socks[0] if socks else None
            if relay is None:
                if local is not None:
                    local.close()
            else:
                relay.give_local(local)
        elif "gate" in message:  # cuts the connections it no longer allows
            self.gate.update(frozenset(message["gate"]["trusted"]),
                             frozenset(message["gate"]["revoked"]),
                             message["gate"]["caught_up"])


def _die_with(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def main() -> int:
    data_dir, parent, control_fd, level = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        sys.argv[4]
    _die_with(parent)
    # Ctrl-C reaches the whole process group: the daemon stops, then closes the pair.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Proxy(data_dir, control_fd).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
