"""A lab of N hosts built from network namespaces on one machine (a development tool:
not part of the installed package).

    netns <prefix>ul    the underlay: a bridge ``ul0`` with one port per host
    netns <prefix>h1..  one per host: ``eth0`` with an address from ``subnet``,
                        and a ``cantainerd`` started inside it

Nothing is created in the root namespace.  Every name carries the lab's
tag, so concurrent labs never collide, and :meth:`Lab.close` removes all of
it (daemons, namespaces, directories) whatever state a test left it in.
Tests, benchmarks and the demo all use it::

    with Lab(3) as lab:
        lab.start_all()
        lab.cli(1, "submit-event", "NodeSuspected", "name=x")
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time

from cantainer.cli.client import call
from cantainer.config import SOCKET_NAME
from cantainer.errors import CantainerError
from cantainer.kernel import netns, supervise
from cantainer.kernel.net import ensure_neighbour_table
from cantainer.kernel.statedir import StateDir
from cantainer.trust.files import Credentials
from cantainer.trust.tls import client_context
from lab import plumbing

_counter = itertools.count(1)
DAEMON_PORT = 9000
# The labs' clusters' default network: inside the overlays' test range (198.18.0.0/15),
# apart from what tests and benchmarks create by hand (198.18.x, 198.19.0-75.x).
DEFAULT_NETWORK = "198.19.128.0/18"


class LabHost:
    def __init__(self, lab: Lab, number: int, address: str) -> None:
        self.number = number
        self.name = f"h{number}"
        self.netns = f"{lab.prefix}h{number}"
        self.address = address
        self.dqlite_address = f"{address}:{DAEMON_PORT}"
        self.dir = os.path.join(lab.workdir, self.name)
        self.data_dir = os.path.join(self.dir, "data")
        self.run_dir = os.path.join(self.dir, "run")
        self.socket = os.path.join(self.run_dir, SOCKET_NAME)
        self.log_path = os.path.join(self.dir, "cantainerd.log")
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Lab:
    def __init__(self, hosts: int = 3, *, subnet: str = "198.51.100.0/24",
                 tag: str | None = None, daemon_args: tuple[str, ...] = ()) -> None:
        self.tag = tag or f"{os.getpid() % 100000}-{next(_counter)}"
        self.prefix = f"ctl{self.tag}-"
        self.workdir = tempfile.mkdtemp(prefix=f"ctlab-{self.tag}-")
        self.underlay = f"{self.prefix}ul"
        self.daemon_args = daemon_args
        net = ipaddress.IPv4Network(subnet)
        self.prefixlen = net.prefixlen
        self.hosts = [LabHost(self, i, str(net.network_address + 10 + i))
                      for i in range(1, hosts + 1)]

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, number: int) -> LabHost:
        return self.hosts[number - 1]

    # -- network --------------------------------------------------------------------

    def build(self) -> None:
        # N hosts' containers share this one kernel's neighbour table, which a real
        # host's cantainerd raises for its own: the lab does it for all of them.
        ensure_neighbour_table()
        netns.create(self.underlay)
        plumbing.ensure_bridge(self.underlay, "ul0")
        for h in self.hosts:
            netns.create(h.netns)
            plumbing.ensure_uplink(self.underlay, "ul0", f"p{h.number}", h.netns, "eth0",
                                   h.address, self.prefixlen)
            os.makedirs(h.run_dir, exist_ok=True)

    def outsider(self, address: str | None = None) -> str:
        """A machine on the underlay that is no member (no credentials): a namespace
        plugged into the underlay bridge; its name.  Removed with the lab."""
        name = f"{self.prefix}out"
        if not netns.exists(name):
            net = ipaddress.IPv4Network(f"{self.hosts[0].address}/{self.prefixlen}",
                                        strict=False)
            address = address or str(net.network_address + 66)
            netns.create(name)
            plumbing.ensure_uplink(self.underlay, "ul0", "pout", name, "eth0", address,
                                   self.prefixlen)
        return name

    def cut(self, number: int) -> None:
        """Unplug a host's underlay link (a partition)."""
        plumbing.set_link_state(self.underlay, f"p{number}", up=False)

    def heal(self, number: int) -> None:
        plumbing.set_link_state(self.underlay, f"p{number}", up=True)

    # -- daemons --------------------------------------------------------------------

    def start(self, number: int, seeds: list[int] | None = None, wait: bool = True,
              extra: tuple[str, ...] = (), token: str | None = None,
              ip_netns_exec: bool = False) -> LabHost:
        """Start ``cantainerd`` on a host; it joins through ``seeds`` (default: host 1).
        A host without credentials gets the seed's join token, or ``token`` ("": none).
        ``ip_netns_exec``: started as users often do, under ``ip netns exec`` (which
        mounts ``/sys`` anew: no cgroup filesystem), instead of entering the namespace."""
        h = self.host(number)
        if h.running:
            raise CantainerError(f"{h.name} is already running")
        if seeds is None:
            seeds = [] if number == 1 else [1]
        seed_arg = ",".join(self.host(s).dqlite_address for s in seeds)
        if token is None and seeds and not Credentials(h.data_dir).exist():
            token = self.join_token(seeds[0])  # a new member's; a member needs none
        token = ["--join-token", token] if token else []
        creating = [] if seeds or Credentials(h.data_dir).exist() else \
            ["--default-network", DEFAULT_NETWORK]  # this host creates a cluster
        cmd = [sys.executable, "-m", "cantainer.daemon", "--address", h.dqlite_address,
               "--name", h.name, "--data-dir", h.data_dir, "--run-dir", h.run_dir,
               *(["--seeds", seed_arg] if seed_arg else []), *token, *creating,
               *self.daemon_args,
               *extra]
        log = open(h.log_path, "ab")
        if ip_netns_exec:  # ip execs the daemon: the same pid
            h.proc = subprocess.Popen(["ip", "netns", "exec", h.netns, *cmd],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        else:
            h.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      preexec_fn=lambda: netns.enter(h.netns))
        log.close()
        if wait:
            self.wait_ready(number)
        return h

    def start_all(self) -> None:
        """Host 1 bootstraps the cluster; the others join through it, at once."""
        self.start(1)
        for h in self.hosts[1:]:
            self.start(h.number, wait=False)
        for h in self.hosts[1:]:
            self.wait_ready(h.number)
        self.wait_formed()

    def join_token(self, number: int = 1) -> str:
        """The cluster's join token, as host ``number`` prints it."""
        return self.cli(number, "join-token").stdout.strip()

    def tls(self, number: int) -> ssl.SSLContext:
        """A client context with host ``number``'s member credentials."""
        creds = Credentials(self.host(number).data_dir).load()
        return client_context(creds, creds.ca)

    def wait_formed(self, timeout: float = 30.0, hosts: int | None = None) -> None:
        """Wait until the Raft group has its voters (up to 3) and stand-bys, as every
        running node itself sees them.

        The leader reports a promotion once it has committed it; the promoted node
        hears of it a moment later, and until then would not stand for election: a
        test that kills the leader must kill it in a group every member knows.  A
        spare is sent no Raft log, so its own copy is empty or stale: only the voters
        and stand-bys (as the others see them) are asked to agree.
        """
        count = hosts or len(self.hosts)
        args = list(self.daemon_args)
        standbys = int(args[args.index("--standbys") + 1]) if "--standbys" in args else 1
        want = sorted(["voter"] * min(3, count) +
                      ["standby"] * min(standbys, max(0, count - 3)))

        def formed() -> bool:
            views = {h.dqlite_address: self._roles_seen_by(h) for h in self.hosts
                     if h.running}
            agreed = [v for v in views.values() if sorted(r for r in v.values()
                                                          if r != "spare") == want]
            if not agreed:
                return False
            seats = [a for a, role in agreed[0].items() if role != "spare"]
            return all(views.get(a) == agreed[0] for a in seats)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if formed():
                return
            time.sleep(0.1)
        raise CantainerError(f"the Raft group did not form within {timeout:g}s")

    def _roles_seen_by(self, h: LabHost) -> dict[str, str]:
        """Address -> Raft role in node ``h``'s own copy of the configuration ({} if it
        does not answer)."""
        import asyncio

        from dqliteclient import ClusterClient, MemoryNodeStore

        try:
            tls = self.tls(h.number)
        except OSError:
            return []  # no credentials yet: not joined yet

        async def dial(address: str):
            host, port = address.rsplit(":", 1)
            return await asyncio.open_connection(host, int(port), ssl=tls,
                                                 server_hostname=None)

        async def ask() -> dict[str, str]:
            client = ClusterClient(MemoryNodeStore([h.dqlite_address]), timeout=1.0,
                                   dial_func=dial)
            async with client.open_admin_connection(h.dqlite_address) as p:
                return {n.address: n.role.name.lower() for n in await p.cluster()}

        try:
            return netns.run_in(h.netns, lambda: asyncio.run(ask()))
        except Exception:  # noqa: BLE001 - not answering yet is "not formed yet"
            return {}

    def wait_ready(self, number: int, timeout: float = 60.0) -> None:
        h = self.host(number)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not h.running:
                raise CantainerError(f"cantainerd on {h.name} exited:\n{self.log(number)}")
            if os.path.exists(h.socket):
                try:
                    call(h.socket, {"op": "status"})
                    return
                except CantainerError:
                    pass
            time.sleep(0.1)
        raise CantainerError(f"cantainerd on {h.name} not ready after {timeout:g}s:\n"
                             f"{self.log(number)}")

    def stop(self, number: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the daemon and wait for it; SIGKILL if it outlives ``timeout``."""
        h = self.host(number)
        if h.proc is None:
            return None
        if h.proc.poll() is None:
            h.proc.send_signal(sig)
            try:
                h.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait()
        code, h.proc = h.proc.returncode, None
        return code

    def kill(self, number: int) -> None:
        self.stop(number, signal.SIGKILL)

    def log(self, number: int, since: int | None = None) -> str:
        """The end of a host's daemon log; with ``since`` (a ``log_size``), all of it
        written after that."""
        try:
            with open(self.host(number).log_path, "rb") as f:
                if since is not None:
                    f.seek(since)
                    return f.read().decode(errors="replace")
                return f.read().decode(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def log_size(self, number: int) -> int:
        try:
            return os.path.getsize(self.host(number).log_path)
        except FileNotFoundError:
            return 0

    def cli(self, number: int, *args: str, check: bool = True, input: str | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``cantainer`` against a host's daemon (the socket is reachable from here)."""
        env = dict(os.environ, CANTAINER_SOCKET=self.host(number).socket)
        result = subprocess.run([sys.executable, "-m", "cantainer.cli", *args], env=env,
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise CantainerError(f"cantainer {' '.join(args)} on h{number} exited "
                                 f"{result.returncode}: {result.stderr.strip()}")
        return result

    def call(self, number: int, message: dict) -> dict:
        return call(self.host(number).socket, message)

    # -- tear-down ------------------------------------------------------------------

    def close(self) -> None:
        for h in self.hosts:  # all at once: a lone last member waits for no quorum
            if h.running:
                h.proc.terminate()
        for h in self.hosts:
            try:
                self.stop(h.number, timeout=15)
            except Exception:  # keep tearing down whatever one host does
                if h.proc is not None:
                    h.proc.kill()
        for h in self.hosts:
            self._kill_containers(h)
        for name in netns.existing(self.prefix):
            netns.remove(name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _kill_containers(h: LabHost) -> None:
        """Containers outlive their daemon on purpose; a lab's must not outlive the lab."""
        from cantainer.kernel import names

        for cid in StateDir.ids(h.data_dir):
            state = StateDir(h.data_dir, cid)
            pid = state.pid()
            if pid is not None and not state.ended():
                supervise.kill(pid)
                # the shim records the exit and frees the cgroup
                supervise.wait_for(state.ended, timeout=5, interval=0.02)
            netns.remove(names.netns(cid))
