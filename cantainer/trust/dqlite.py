"""dqlite over mutual TLS, as go-dqlite's ``app`` does it: libdqlite itself speaks plain.

    its own node     bound to an abstract unix socket, ``@cantainer-PORT`` (libdqlite
                     accepts connections there from its own process only)
    the relay        a compiled process of its own (``trust/relay.c``, OpenSSL)
                     holding the listener on the member's address (TCP): the TLS
                     handshake, the gate, then the bytes relayed to a connection to
                     the node that this process makes and hands over
    Raft to a peer   ``connect``, libdqlite's connect function: one end of a socket
                     pair at once, the other to the relay, which dials the peer over
                     TLS (a peer that is down shows up as an end of file: Raft retries)
    SQL clients      ``dial``, dqlite-client's dial function: this member's own address
                     goes to the abstract socket; any other over TLS from this
                     process's event loop, straight to that member (its relay): the
                     relay here would cost two more hops a round trip, and the
                     loop does that I/O anyway (bench.append_paths)

This side owns the relay's life: started before the node, ended after it (the
end of their socket pair ends it; ``PR_SET_PDEATHSIG`` if this process dies).
The gate's sets go to the relay whenever they change; it cuts the connections
of a member that leaves.  The messages on the pair are the relay's (its header).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import ssl
import subprocess
import threading
import weakref

from cantainer.errors import CantainerError
from cantainer.trust.tls import Gate, peer_fingerprint, tune

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0
DIAL_TIMEOUT = 5.0  # seconds to a member's TLS handshake
# Built from relay.c beside it by scripts/setup (gcc, OpenSSL).
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cantainer-relay")


def abstract_address(port: int) -> str:
    return f"@cantainer-{port}"


class DqliteTls:
    def __init__(self, address: str, data_dir: str, gate: Gate,
                 client_tls: ssl.SSLContext) -> None:
        self.address = address
        host, port = address.rsplit(":", 1)
        self.bind_address = abstract_address(int(port))
        self._public = (host, int(port))
        self._data_dir = data_dir
        self._gate = gate
        self._client_tls = client_tls
        self._control: socket.socket | None = None
        self._relay: subprocess.Popen | None = None
        self._send_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Listen on the member's address and start the relay behind it.  On the event
        loop's thread: the relay dies with the thread that started it."""
        if not os.access(RELAY, os.X_OK):
            raise CantainerError(f"the TLS relay {RELAY} is not built: run scripts/setup")
        listener = socket.create_server(self._public)  # OSError: the address is taken
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        try:
            self._relay = subprocess.Popen(
                [RELAY, self._data_dir, str(os.getpid()), str(theirs.fileno()), level],
                pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
        self._control = mine
        self._send("listen", listener)
        listener.close()
        self._gate.on_update = self._send_gate  # first: an update meanwhile is not lost
        self._send_gate()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(mine, self._requests)

    # -- what the relay asks -----------------------------------------------------------

    def _requests(self) -> None:
        """Incoming connections that passed the gate: each wants one to the node."""
        while True:
            try:
                data = self._control.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                log.error("the dqlite TLS relay is gone")
                self._loop.remove_reader(self._control)
                return
            wanted = data.decode()  # "local ID"
            try:
                local = _abstract(self.bind_address)
            except OSError:
                self._send(wanted)  # the node is not serving: the relay hangs up
                continue
            with contextlib.closing(local):
                self._send(wanted, local)

    # -- dialing -------------------------------------------------------------------------------

    def connect(self, address: str) -> int:
        """libdqlite's connect function: a file descriptor for Raft to ``address``."""
        mine, theirs = socket.socketpair()
        with contextlib.closing(theirs):
            if not self._send(f"dial {address}", theirs):
                mine.close()
                return -1
        return mine.detach()  # libdqlite owns it now

    async def dial(self, address: str):
        """dqlite-client's dial function: (reader, writer) to ``address``."""
        if address == self.address:  # this member's own node: no TLS to itself
            return await asyncio.open_unix_connection("\0" + self.bind_address[1:])
        host, port = address.rsplit(":", 1)
        async with asyncio.timeout(DIAL_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=self._client_tls,
                                                           server_hostname=None)
        tune(writer.get_extra_info("socket"))
        fingerprint = peer_fingerprint(writer.get_extra_info("ssl_object"))
        if not self._gate.reaches(fingerprint):
            writer.close()
            raise ConnectionRefusedError(f"{address}'s certificate is no member's")
        # Cut if that member leaves; forgotten once dqlite-client drops the connection.
        ref = weakref.ref(writer)
        self._gate.track(writer, fingerprint, False, lambda: (w := ref()) and w.close())
        return reader, writer

    # -- the pair ---------------------------------------------------------------------------------

    def _send_gate(self) -> None:
        message = (f"gate {int(self._gate.caught_up)}\n{' '.join(sorted(self._gate.trusted))}"
                   f"\n{' '.join(sorted(self._gate.revoked))}")
        if not self._send(message):
            log.error("cannot give the TLS relay the gate's sets: it keeps its last ones")

    def _send(self, message: str, sock: socket.socket | None = None) -> bool:
        control = self._control
        if control is None:
            return False
        fds = [sock.fileno()] if sock is not None else []
        ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            with self._send_lock:  # from the loop and from libdqlite's thread
                control.sendmsg([message.encode()], ancdata)
                return True
        except OSError:
            return False

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """End the relay (the end of the pair) and wait for it."""
        self._gate.on_update = None
        control, self._control = self._control, None
        if control is not None:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.call_soon_threadsafe(self._loop.remove_reader, control)
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)
            control.close()
        if self._relay is not None:
            try:
                self._relay.wait(timeout)
            except subprocess.TimeoutExpired:
                self._relay.kill()
                self._relay.wait()


def _abstract(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("\0" + name[1:])
    return sock
