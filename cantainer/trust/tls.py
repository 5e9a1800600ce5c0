"""TLS between members: the contexts (Python's ``ssl``), and the gate that names who may
connect.

Every channel between daemons is TLS 1.3 with certificates from the cluster CA
on both sides.  A certificate that chains to the CA is necessary, not enough:

* a connection *to* this member (dqlite, the peer API) is accepted only if the
  peer's certificate is one the log records for a live member (``Gate``);
* a connection *from* this member is made only to a certificate the log records
  for a live member, too — once this member has caught up with the log since
  it started.  Until then (``caught_up`` false) any certificate of the CA that
  the log does not record as revoked will do: a member whose state is behind
  (just restarted) must still reach members that joined while it was away.

The gate's sets come from the state: the runner publishes them after every
batch of records (``Membership.trusted``, ``revoked``).  Connections of a
member that leaves are cut when the gate learns it.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import weakref
from collections.abc import Callable

from cantainer.trust.files import Credentials


def _context(purpose: int, creds: Credentials | None, ca: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if creds is not None:
        ctx.load_cert_chain(creds.path("node.crt"), creds.path("node.key"))
    if ca is not None:
        ctx.load_verify_locations(cadata=ca)
    return ctx


def server_context(creds: Credentials, require_client_cert: bool = True) -> ssl.SSLContext:
    """A member's listener.  ``require_client_cert=False`` (the peer API): a client
    may come without one, for the two things a joiner asks (``ca``, ``join``)."""
    ctx = _context(ssl.PROTOCOL_TLS_SERVER, creds, creds.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(creds: Credentials | None, ca: str | None) -> ssl.SSLContext:
    """A member dialing a member (``creds``), or a joiner without any yet.  ``ca`` None:
    no server verification at all — only to fetch the CA certificate, which the joiner
    then checks against its token."""
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, creds, ca)
    ctx.check_hostname = False  # members are named by their certificate's fingerprint
    ctx.verify_mode = ssl.CERT_REQUIRED if ca is not None else ssl.CERT_NONE
    return ctx


def peer_fingerprint(tls) -> str | None:
    """The SHA-256 of the peer's certificate (an SSLSocket or SSLObject), if it sent one."""
    der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def tune(sock: socket.socket) -> None:
    """TCP for Raft and requests: no Nagle (with delayed ACKs it costs 40 ms a round
    trip), keepalives, and a bound on unacknowledged data to a dead peer."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000)


class Gate:
    """Who may connect (live members) and who may not be dialed (members that left),
    by certificate fingerprint; and the open connections of each, to cut on leaving.
    Thread-safe: the sets are swapped whole, the registry is locked."""

    def __init__(self, own: str) -> None:
        self.own = own
        self.trusted: frozenset[str] = frozenset({own})
        self.revoked: frozenset[str] = frozenset()
        self.caught_up = False  # this member's state has reached the log's head once
        # Weakly: a connection its owner dropped (a dqlite-client's) leaves by itself.
        self._open: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.on_update: Callable[[], None] | None = None  # the dqlite relay's copy

    def admits(self, fingerprint: str | None) -> bool:
        """A connection to this member from the holder of this certificate."""
        return fingerprint is not None and fingerprint in self.trusted

    def reaches(self, fingerprint: str | None) -> bool:
        """A connection from this member to the holder of this certificate."""
        if fingerprint is None:
            return False
        return fingerprint in self.trusted if self.caught_up else fingerprint not in self.revoked

    def update(self, trusted: frozenset[str], revoked: frozenset[str],
               caught_up: bool | None = None) -> None:
        """The state moved: cut every open connection it no longer allows."""
        self.trusted, self.revoked = trusted | {self.own}, revoked - {self.own}
        if caught_up is not None:
            self.caught_up = caught_up
        with self._lock:
            cut = [(key, close) for key, (fp, incoming, close) in self._open.items()
                   if not (self.admits(fp) if incoming else self.reaches(fp))]
            for key, _ in cut:
                del self._open[key]
        for _, close in cut:
            close()
        if self.on_update is not None:
            self.on_update()

    def track(self, key: object, fingerprint: str, incoming: bool,
              close: Callable[[], None]) -> None:
        with self._lock:
            self._open[key] = (fingerprint, incoming, close)

    def untrack(self, key: object) -> None:
        with self._lock:
            self._open.pop(key, None)
