"""Runtime: the containers the log places on this host, as processes.

For each container of this host the projection (IPAM's) says exists, the
actor makes sure it has, in ``DATA_DIR/containers/<id>/``, a started shim
(``cantainer/shim.py``) — after building its network namespace and veth
with the address and MAC the log decided — and records what the shim
reports: ``ContainerStarted`` once its ``pid`` file appears,
``ContainerExited`` once its ``exit_code`` file does.  A
``ContainerStopRequested`` gets SIGTERM, then SIGKILL after its timeout
(a daemon restarted meanwhile sends SIGTERM again).  A container the log
no longer has is killed if still running and its namespace, veth and state
removed.  The shims outlive the daemon, so a restarted daemon adopts what
it finds in those files.  Event ids are derived from the container id, so
a repeated report appends nothing.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

from pykka import ActorDeadError

from cantainer.actors._base import ProjectionActor, Reconcile
from cantainer.actors.ipam import Container, Ipam
from cantainer.events import ContainerExited, ContainerStarted
from cantainer.kernel import container_net, names
from cantainer.kernel.images import ImageStore
from cantainer.kernel.overlay import VXLAN_OVERHEAD

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0


def attach_marker(data_dir: str, cid: str) -> str:
    """Where the API marks a container whose CLI will attach (run -i/-t).

    Outside the state directories, which the actor removes when the log has
    no such container: the marker is written before the event is applied.
    """
    return os.path.join(data_dir, "attach", cid)


class RuntimeActor(ProjectionActor):
    name = "runtime"

    def __init__(self, context) -> None:
        super().__init__(context, Ipam())
        self.state_root = os.path.join(context.data_dir, "containers")
        self.images = ImageStore(context.data_dir)
        self._kill_at: dict[str, float] = {}  # container -> when SIGTERM turns to SIGKILL
        self._watched: set[str] = set()  # containers whose end a thread waits for
        self._warm: subprocess.Popen | None = None
        self._removals = None

    def _dir(self, cid: str) -> str:
        return os.path.join(self.state_root, cid)

    def reconcile(self, changed_only: bool = False) -> None:
        local = self._local()
        # Gone ones first: a new container may take over a removed one's address.
        if os.path.isdir(self.state_root):
            for cid in os.listdir(self.state_root):
                if cid not in local:
                    self._remove(cid)
        if not changed_only:
            self._repair(local)
        for cid, c in local.items():
            state = self._dir(cid)
            if c.state == "created" and not os.path.exists(os.path.join(state, "spec.json")):
                self._start(c)
            pid = _read_int(os.path.join(state, "pid"))
            code = _read_int(os.path.join(state, "exit_code"))
            if c.state == "created" and pid is not None:
                self.context.append(ContainerStarted(container=cid, pid=pid),
                                    f"ContainerStarted-{cid}")
            if c.state != "exited" and code is not None:
                self.context.append(ContainerExited(container=cid, exit_code=code),
                                    f"ContainerExited-{cid}")
            if pid is not None and code is None and cid not in self._watched:
                self._watched.add(cid)  # adopted after a restart: no shim of ours to wait on
                threading.Thread(target=self._watch_adopted, args=(pid, state),
                                 daemon=True).start()
            if c.stop_timeout is not None and pid is not None and code is None:
                self._stop_container(cid, pid, c.stop_timeout)
            elif code is not None:
                self._kill_at.pop(cid, None)

    def _local(self) -> dict[str, Container]:
        return {cid: c for cid, c in self.projection.containers.items()
                if c.host == self.context.node}

    def _running(self, local: dict[str, Container]) -> dict[str, Container]:
        """Containers the log says run here whose shim has not recorded an exit."""
        return {cid: c for cid, c in local.items() if c.state == "running"
                and not os.path.exists(os.path.join(self._dir(cid), "exit_code"))}

    def _drift(self, local: dict[str, Container]) -> list[tuple[str, str, str]]:
        """How this host's containers differ from the log: (what, kind, subject) with
        kind one of state, start, process, netns, veth, stray-veth."""
        found = []
        if os.path.isdir(self.state_root):
            for cid in sorted(os.listdir(self.state_root)):
                if cid not in local:
                    found.append((f"remove the state of container {cid[:12]} (not in the "
                                  "log)", "state", cid))
        for cid, c in sorted(local.items()):
            if c.state == "created" and not os.path.exists(
                    os.path.join(self._dir(cid), "spec.json")):
                found.append((f"start container {c.name}", "start", cid))
        running = self._running(local)
        veths = container_net.veths()
        for cid, c in sorted(running.items()):
            bridge = names.bridge(self.projection.networks[c.network].vni)
            if not os.path.exists(f"/proc/{c.pid}"):
                found.append((f"container {c.name}: its process {c.pid} is gone", "process",
                              cid))
                continue
            if not container_net.has_netns(cid):
                found.append((f"container {c.name}: name its network namespace "
                              f"{container_net.netns_name(cid)} again", "netns", cid))
            if veths.get(container_net.host_veth(cid)) != (bridge, True):
                found.append((f"container {c.name}: attach its veth "
                              f"{container_net.host_veth(cid)} to {bridge}, up", "veth", cid))
        ours = {container_net.host_veth(cid) for cid in local}
        for veth in sorted(set(veths) - ours):
            found.append((f"remove veth {veth} (no container of this host)", "stray-veth",
                          veth))
        return found

    def _repair(self, local: dict[str, Container]) -> None:
        """Put back what a running container lost (its veth in the bridge, removed by
        hand or by the overlay actor racing this one; the name of its namespace), and
        remove veths of containers the log no longer has."""
        for what, kind, subject in self._drift(local):
            if kind not in ("netns", "veth", "stray-veth"):
                continue  # state and start: reconcile's own loop; process: the shim's
            log.warning("runtime: %s", what)
            if kind == "stray-veth":
                container_net.remove_veth(subject)
                continue
            c = local[subject]
            if kind == "netns":
                container_net.restore_netns(subject, c.pid)
            else:
                net = self.projection.networks[c.network]
                container_net.ensure(subject, names.bridge(net.vni), str(c.ip),
                                     net.cidr.prefixlen, c.mac,
                                     self.context.underlay_mtu - VXLAN_OVERHEAD)

    def differences(self) -> list[str]:
        """How this host's containers differ from the log, without changing anything."""
        return [what for what, _, _ in self._drift(self._local())]

    def _start(self, c: Container) -> None:
        began = time.perf_counter()
        state = self._dir(c.id)
        os.makedirs(state, mode=0o700, exist_ok=True)
        try:
            lower = self.images.rootfs(c.created.image)
            net = self.projection.networks[c.network]
            ns = container_net.ensure(c.id, f"ctbr{net.vni}", str(c.ip), net.cidr.prefixlen,
                                      c.mac, self.context.underlay_mtu - VXLAN_OVERHEAD)
        except Exception as exc:  # the container cannot start: record why, as an exit
            log.error("container %s cannot start: %s", c.name, exc)
            with open(os.path.join(state, "output.log"), "a") as f:
                f.write(f"cantainer: cannot start the container: {exc}\n")
            _write(os.path.join(state, "spec.json"), "{}")
            _write(os.path.join(state, "exit_code"), "125")
            return
        spec = {"id": c.id, "lower": lower, "hostname": c.created.hostname or c.name,
                "command": list(c.created.command), "env": list(c.created.env), "netns": ns,
                "memory": c.created.memory, "pids_limit": c.created.pids_limit,
                "cpus": c.created.cpus,
                # run -i/-t: the API marked it; the shim waits for the CLI's terminal.
                "attach": os.path.exists(attach_marker(self.context.data_dir, c.id))}
        _write(os.path.join(state, "spec.json"), json.dumps(spec))
        networked = time.perf_counter()
        if spec["attach"]:
            os.unlink(attach_marker(self.context.data_dir, c.id))
        shim = self._take_warm_shim()
        try:
            shim.stdin.write(state.encode() + b"\n")
            shim.stdin.close()
        except OSError:  # it died waiting: start one the slow way
            with open(os.path.join(state, "shim.log"), "ab") as shim_log:
                shim = subprocess.Popen([sys.executable, "-m", "cantainer.shim", state],
                                        stdin=subprocess.DEVNULL, stdout=shim_log,
                                        stderr=shim_log, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        ready = ("attach.sock", "pid")
        while not any(os.path.exists(os.path.join(state, f)) for f in ready) and \
                shim.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        log.info("container %s: network %.0f ms, shim to process %.0f ms", c.name,
                 (networked - began) * 1000, (time.perf_counter() - networked) * 1000)
        self._warm = _warm_shim()
        self._watched.add(c.id)
        threading.Thread(target=self._watch, args=(shim, state), daemon=True).start()

    def _take_warm_shim(self) -> subprocess.Popen:
        """The shim started ahead of time, waiting for its state directory (the
        next one starts once this container runs: see ``_start``)."""
        shim = self._warm if self._warm is not None and self._warm.poll() is None \
            else _warm_shim()
        self._warm = None
        return shim

    def on_start(self) -> None:
        from cantainer.kernel.watch import Removals
        self._warm = _warm_shim()
        self._removals = Removals(self.tell_vanished, links=("vh", "ctbr"))  # a veth, a bridge

    def on_stop(self) -> None:
        if self._removals is not None:
            self._removals.close()
            self._removals = None
        if self._warm is not None:
            self._warm.stdin.close()  # end of input: it exits
            self._warm.wait()
            self._warm = None

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        super().on_failure(exception_type, exception_value, traceback)
        self.on_stop()

    def _stop_container(self, cid: str, pid: int, timeout: int) -> None:
        """SIGTERM once, SIGKILL once the timeout has passed (docker stop)."""
        now = time.monotonic()
        if cid not in self._kill_at:
            self._kill_at[cid] = now + timeout
            _signal(pid, signal.SIGTERM)
            timer = threading.Timer(timeout, self._tell_reconcile)
            timer.daemon = True
            timer.start()
        elif now >= self._kill_at[cid]:
            self._kill_at[cid] = float("inf")
            _signal(pid, signal.SIGKILL)

    def _watch(self, shim: subprocess.Popen, state: str) -> None:
        """Start and exit are worth a look at once, not at the next tick."""
        pid_file = os.path.join(state, "pid")
        while not os.path.exists(pid_file) and shim.poll() is None:
            time.sleep(0.01)  # an attached container starts when its CLI connects
        self._tell_reconcile()
        shim.wait()
        if not os.path.exists(os.path.join(state, "exit_code")):
            # The shim itself failed: the container never ran; say so where logs look.
            with open(os.path.join(state, "shim.log"), errors="replace") as f:
                reason = f.read()[-2000:]
            with open(os.path.join(state, "output.log"), "a") as f:
                f.write(f"cantainer: the container's shim failed:\n{reason}")
            _write(os.path.join(state, "exit_code"), "125")
        self._tell_reconcile()

    def _watch_adopted(self, pid: int, state: str) -> None:
        """Wait for an adopted container's process to end (pidfd), then for its shim
        to record the code."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None  # already gone
        if pidfd is not None:
            try:
                select.select([pidfd], [], [])
            finally:
                os.close(pidfd)
        deadline = time.monotonic() + 5
        while not os.path.exists(os.path.join(state, "exit_code")) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        self._tell_reconcile()

    def wants_back(self, items: tuple) -> bool:
        """A bridge, or the veth of a container of this host still running."""
        running = {container_net.host_veth(cid) for cid, c in self.projection.containers.items()
                   if c.host == self.context.node and c.state == "running"
                   and not os.path.exists(os.path.join(self._dir(cid), "exit_code"))}
        return any(item[0] == "link" and (item[1].startswith("ctbr") or item[1] in running)
                   for item in items)

    def _tell_reconcile(self) -> None:
        """A container of this host started or ended, or a stop timed out: look at
        the containers (their state files), not at the kernel's links."""
        try:
            self.actor_ref.tell(Reconcile(full=False))
        except ActorDeadError:
            pass  # a fresh actor reconciles on its own

    def _remove(self, cid: str) -> None:
        state = self._dir(cid)
        pid = _read_int(os.path.join(state, "pid"))
        self._kill_at.pop(cid, None)
        self._watched.discard(cid)
        if pid is not None and not os.path.exists(os.path.join(state, "exit_code")):
            _signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not os.path.exists(os.path.join(state, "exit_code")) and \
                    time.monotonic() < deadline:
                time.sleep(0.01)  # the shim writes the code and frees the cgroup
        container_net.remove(cid)
        shutil.rmtree(state, ignore_errors=True)
        log.info("removed container %s", cid[:12])

    # -- asked by the API -----------------------------------------------------------

    def local_state(self, cid: str) -> dict:
        state = self._dir(cid)
        return {"pid": _read_int(os.path.join(state, "pid")),
                "exit_code": _read_int(os.path.join(state, "exit_code")),
                "log": os.path.join(state, "output.log")}


def _warm_shim() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cantainer.shim", "-"],
                            stdin=subprocess.PIPE, start_new_session=True)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it has just exited; the shim records that


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
