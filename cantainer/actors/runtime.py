"""The runtime actor: the containers the log places on this host, as processes.

Its plan is ``projections.runtime.plan(state, this host)``: container id ->
ContainerPlan.  For each container in it, the actor makes sure it has a state
directory (``kernel/statedir.py``) with a started shim, after building its
network namespace and veth with the address and MAC the log decided; and it
reports what the shim records: ``ContainerStarted`` once the pid is there,
``ContainerExited`` once the exit code is.  An exited container's restart
policy is carried out here (``_restart_if_due``): the start is recorded in the
log, and the next run begins in the same state directory.  A stop asked for gets SIGTERM,
then SIGKILL after its timeout (a daemon restarted meanwhile sends SIGTERM
again).  A container the plan no longer has is killed if it still runs, and
its namespace, veth and state directory go.  The shims outlive the daemon, so
a restarted daemon adopts what it finds in the state directories.  Event ids
are derived from the container id, so a repeated report appends nothing.

Nothing here waits on the actor's thread: a watcher thread per container
waits for its start and its end, a removal finishes on a thread of its own,
and each tells the actor when it is done.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time

import attrs

from cantainer.actors.base import KernelActor, Reconcile
from cantainer.events import ContainerExited, ContainerStarted, ContainerStartRequested
from cantainer.events.validate import parse_restart
from cantainer.kernel import container_net, names, process, supervise
from cantainer.kernel.cgroups import Cgroup
from cantainer.kernel.images import ImageStore
from cantainer.kernel.overlay import VXLAN_OVERHEAD
from cantainer.kernel.statedir import StateDir
from cantainer.kernel.volumes import VolumeStore
from cantainer.kernel.watch import Removals
from cantainer.projections import runtime
from cantainer.projections.runtime import ContainerPlan

log = logging.getLogger(__name__)

REMOVE_WAIT = 5.0  # seconds for a killed container's shim to record its end
REPLICA_STOP = 10.0  # seconds a replica scaled down or removed has after SIGTERM
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 60.0  # seconds before a restart (Docker's)
FOLLOWED_START = 0.1  # seconds a followed container's start waits for its run's end
FOLLOWED_END = 1.0  # seconds its exit, once on disk, waits for the run call to record it
STEADY = 10.0  # seconds a run must last for the back-off to start again from the first


def _event_id(kind: str, c: ContainerPlan) -> str:
    """One report of each kind per run (the first run's ids as they always were)."""
    return runtime.report_id(kind, c.id, c.run)


@attrs.frozen
class Started:
    """A container's process runs (its pid file is there), or its shim gave up."""

    container: str


@attrs.frozen
class Followed:
    """A foreground ``run`` records this container's run itself (``on``), or no longer
    does.  While it does, the runtime leaves the run's end to the ``run`` call (which
    appends it, with ``ContainerRemoved`` for ``--rm``, as one batch) for
    ``FOLLOWED_END`` seconds after the exit code is on disk (a CLI that stopped
    reading holds the call), and its start for its first ``FOLLOWED_START`` seconds:
    a short run's start goes in that batch too, so ``run --rm`` costs two appends,
    not four, and nothing competes with them.  When the call is over, however it
    ended, the runtime records whatever is left."""

    container: str
    on: bool


@attrs.frozen
class Fenced:
    """This host has heard fewer than a majority of the members for ``--suspect-after``
    seconds (``on``), or hears them again.  While it is cut off, the others may record it
    down and start its service replicas elsewhere, so its own are killed and none starts
    here: two copies of a replica never run longer than it takes to kill them (the
    others wait ``--reschedule-after`` seconds more)."""

    on: bool


@attrs.frozen
class ShimGone:
    """A run's shim ended; whether it recorded the exit code is for the actor to see."""

    container: str
    run: int


@attrs.frozen
class Removed:
    """A removal finished on its thread: namespace, veth and state are gone."""

    container: str


class RuntimeActor(KernelActor):
    name = "runtime"
    derive = staticmethod(runtime.plan)

    def __init__(self, context) -> None:
        super().__init__(context)
        self.images = ImageStore(context.data_dir)
        self.volumes = VolumeStore(context.data_dir)
        self._kill_at: dict[str, float] = {}  # container -> when SIGTERM turns to SIGKILL
        self._restart_at: dict[str, tuple[int, float]] = {}  # container -> (run, when due)
        self._streak: dict[str, int] = {}  # container -> its runs in a row shorter than STEADY
        self._watched: set[str] = set()  # containers whose end a thread waits for
        self._removing: set[str] = set()  # containers a thread is removing
        # container -> [when its start, when its exit may be reported] (inf: not yet seen)
        self._followed: dict[str, list[float]] = {}
        self._removals_running: list[threading.Thread] = []
        self._warm = supervise.WarmShim()
        self._removals: Removals | None = None
        self._fenced = False  # Fenced: no service replica runs here
        self._replicas: set[str] = set()  # the service replicas of the last plan looked at
        self._ips: dict[str, str] = {}  # container -> its address, in that plan
        self._removing_ips: dict[str, str] = {}  # a container being removed -> its address

    def on_start(self) -> None:
        self._warm.ensure()
        self._removals = Removals(self.tell_vanished,
                                  links=(names.VETH_PREFIX, names.BRIDGE_PREFIX))

    def on_stop(self) -> None:
        if self._removals is not None:
            self._removals.close()
            self._removals = None
        self._warm.close()
        for thread in self._removals_running:  # a leaving host's last removals finish
            thread.join(timeout=REMOVE_WAIT + 1)

    def on_failure(self, exception_type, exception_value, traceback) -> None:
        super().on_failure(exception_type, exception_value, traceback)
        self.on_stop()

    def receive(self, message) -> None:
        if isinstance(message, Fenced):
            if message.on != self._fenced:
                self._fenced = message.on
                self.reconcile(changed_only=True)
        elif isinstance(message, Followed):
            if message.on:
                self._followed[message.container] = [math.inf, math.inf]
            elif self._followed.pop(message.container, None) is not None:
                self.reconcile(changed_only=True)  # whatever the call left unrecorded
        elif isinstance(message, Started):
            if (held := self._followed.get(message.container)) is not None:
                held[0] = self._look_again_in(FOLLOWED_START)
            self._warm.ensure()  # the next container's shim, now that this one runs
            self.reconcile(changed_only=True)
        elif isinstance(message, ShimGone):
            self._shim_gone(message)
        elif isinstance(message, Removed):
            self._removing.discard(message.container)
            self._removing_ips.pop(message.container, None)
            self.reconcile(changed_only=True)  # a container that waited for its names
        else:
            super().receive(message)

    def state(self, cid: str) -> StateDir:
        return StateDir(self.context.data_dir, cid)

    # -- reconciling ---------------------------------------------------------------------

    def reconcile(self, changed_only: bool = False) -> None:
        local: dict[str, ContainerPlan] = self.plan
        # Gone ones first: a new container may take over a removed one's address.
        for cid in StateDir.ids(self.context.data_dir):
            if cid not in local and cid not in self._removing:
                self._remove(cid, grace=REPLICA_STOP if cid in self._replicas else 0)
        self._replicas = {cid for cid, c in local.items() if c.service}
        self._ips = {cid: c.ip for cid, c in local.items()}
        if not changed_only:
            self._repair(local)
        for cid, c in local.items():
            state = self.state(cid)
            if self._fenced and c.service:
                self._fence(c, state)
                continue
            if c.state == "created" and state.run() != c.run and state.exists():
                state.next_run(c.run)  # started again after an exit: the same directory
                self._watched.discard(cid)
                self._kill_at.pop(cid, None)
            if c.state == "created" and not state.has_spec() and not self._names_busy(c) \
                    and not self._image_coming(c):
                self._start(c, state)
            if state.run() != c.run:
                continue  # the files are of another run than the log's (not begun yet)
            pid, code = state.pid(), state.exit_code()
            held = self._followed.get(cid)  # [start, exit]: when each may be reported
            if held is not None and code is not None and held[1] == math.inf:
                held[1] = self._look_again_in(FOLLOWED_END)
            now = time.monotonic()
            if c.state == "created" and pid is not None and (held is None or now >= held[0]):
                self.context.listener.report(ContainerStarted(container=cid, pid=pid),
                                             _event_id("ContainerStarted", c))
            if c.state != "exited" and code is not None and (held is None or now >= held[1]):
                self.context.listener.report(ContainerExited(container=cid, exit_code=code),
                                             _event_id("ContainerExited", c))
            if c.state == "exited" and code is not None:
                self._restart_if_due(c, state)
            if pid is not None and code is None and cid not in self._watched:
                self._watched.add(cid)  # adopted after a restart: no shim of ours to wait on
                threading.Thread(target=self._watch_adopted, args=(pid, state),
                                 daemon=True).start()
            if c.stop_timeout is not None and pid is not None and code is None:
                self._stop_container(cid, pid, c.stop_timeout)
            elif code is not None:
                self._kill_at.pop(cid, None)

    def _image_coming(self, c: ContainerPlan) -> bool:
        """Its image is not here but another host holds it: the daemon fetches it and
        tells this actor to look again (daemon/images.py)."""
        if not c.image_elsewhere:
            return False
        try:
            return not self.images.has(c.image)
        except Exception:  # a bad name: the start says why
            return False

    def _fence(self, c: ContainerPlan, state: StateDir) -> None:
        """Cut off: the replica's process is killed, and nothing of it starts; its end is
        reported once the log can be reached (and it runs again then, if it has not
        moved: its restart policy)."""
        pid = state.pid()
        if pid is not None and state.exit_code() is None and state.run() == c.run:
            log.warning("container %s: killed, this host is cut off", c.name)
            supervise.kill(pid)

    def _look_again_in(self, delay: float) -> float:
        """A reconcile ``delay`` seconds from now; that moment."""
        timer = threading.Timer(delay, self.tell_self, (Reconcile(full=False),))
        timer.daemon = True
        timer.start()
        return time.monotonic() + delay

    def _restart_if_due(self, c: ContainerPlan, state: StateDir) -> None:
        """Its restart policy, Docker's way: not after a stop asked for; on-failure only
        for a non-zero code and up to its count; after a back-off of 100 ms doubling
        with each run shorter than ``STEADY`` (at most ``BACKOFF_MAX``).  Decided here,
        recorded in the log (``ContainerStartRequested`` with ``policy``), counted there."""
        policy, most = parse_restart(c.restart)
        if policy == "no" or c.stop_timeout is not None:
            return
        if policy == "on-failure" and (c.exit_code == 0 or
                                       (most is not None and c.restarts >= most)):
            return
        due = self._restart_at.get(c.id)
        if due is None or due[0] != c.run:
            times = state.times()
            steady = times is not None and times[1] - times[0] >= STEADY
            streak = 0 if steady else self._streak.get(c.id, -1) + 1
            self._streak[c.id] = streak
            delay = min(BACKOFF_FIRST * 2 ** min(streak, 20), BACKOFF_MAX)
            self._restart_at[c.id] = (c.run, time.monotonic() + delay)
            log.info("container %s exited (%d): restart %d in %.1f s (--restart %s)", c.name,
                     c.exit_code, c.restarts + 1, delay, c.restart)
            timer = threading.Timer(delay, self.tell_self, (Reconcile(full=False),))
            timer.daemon = True
            timer.start()
        elif time.monotonic() >= due[1]:
            self.context.listener.report(ContainerStartRequested(container=c.id, policy=True),
                                         f"ContainerStartRequested-{c.id}-{c.run + 1}")

    def _names_busy(self, c: ContainerPlan) -> bool:
        """A container being removed has the same kernel names (its first 12 digits), or
        the same address (a replica in its stop's grace whose address the log gave
        again): this one starts once that removal is done."""
        return c.ip in self._removing_ips.values() or \
            any(names.netns(other) == names.netns(c.id) for other in self._removing)

    def _start(self, c: ContainerPlan, state: StateDir) -> None:
        """The shim is handed the container before its network is made, and told ``go``
        after: its cgroup (and the kernel's wait to move a process into one) is made
        meanwhile."""
        began = time.perf_counter()
        state.create()
        try:
            caps = process.cap_mask(c.cap_add, c.cap_drop)
            mounts = [(source if source.startswith("/") else self.volumes.data(source),
                       target, read_only) for source, target, read_only in c.volumes]
            lower = self.images.rootfs(c.image)
            # Names: this host's name server on the network's .1 (daemon/dns.py); a
            # volume the user put on either file comes later and wins (as in Docker).
            mounts = [(state.write_resolv_conf(c.gateway), "/etc/resolv.conf", False),
                      (state.write_hosts(c.hostname, c.ip), "/etc/hosts", False), *mounts]
            command = list(c.command)
            if c.init:
                mounts.append((process.INIT_BINARY, process.INIT_PATH, True))
                command = [process.INIT_PATH, *command]
            attach = state.attach_marked()  # run -i/-t: the shim waits for the CLI's terminal
            state.write_spec({"id": c.id, "lower": lower, "hostname": c.hostname,
                              "command": command, "env": list(c.env),
                              "netns": names.netns(c.id), "memory": c.memory,
                              "pids_limit": c.pids_limit, "cpus": c.cpus,
                              "workdir": c.workdir, "uid": c.uid, "gid": c.gid, "caps": caps,
                              "mounts": mounts, "tmpfs": list(c.tmpfs),
                              "read_only": c.read_only, "attach": attach,
                              "lease": list(self.context.lease) if c.service and
                              self.context.lease else None})
            if attach:
                state.unmark_attach()
            shim = self._warm.start(state)
        except Exception as exc:  # the container cannot start: record why, as an exit
            self._cannot_start(c, state, exc)
            state.write_spec({})
            state.write_exit_code(125)
            return
        self._watched.add(c.id)
        threading.Thread(target=self._watch, args=(shim, state), daemon=True).start()
        try:
            self._network(c)
        except Exception as exc:
            self._cannot_start(c, state, exc)  # and the shim records the exit, 125
            supervise.tell(shim, go=False)
            return
        supervise.tell(shim, go=True)
        log.info("container %s: spec and network %.0f ms", c.name,
                 (time.perf_counter() - began) * 1000)

    @staticmethod
    def _cannot_start(c: ContainerPlan, state: StateDir, exc: Exception) -> None:
        log.error("container %s cannot start: %s", c.name, exc)
        state.say(f"cantainer: cannot start the container: {exc}")

    def _network(self, c: ContainerPlan) -> str:
        """Its namespace, veth and eth0 (with its route out, unless internal): at its
        start, and again when a veth was lost (a new eth0 has no route yet)."""
        return container_net.ensure(c.id, names.bridge(c.vni), c.ip, c.prefixlen, c.mac,
                                    self.context.underlay_mtu - VXLAN_OVERHEAD,
                                    c.gateway if c.egress else None)

    def _stop_container(self, cid: str, pid: int, timeout: int) -> None:
        """SIGTERM once, SIGKILL once the timeout has passed (docker stop)."""
        now = time.monotonic()
        if cid not in self._kill_at:
            self._kill_at[cid] = now + timeout
            supervise.send(pid, signal.SIGTERM)
            timer = threading.Timer(timeout, self.tell_self, (Reconcile(full=False),))
            timer.daemon = True
            timer.start()
        elif now >= self._kill_at[cid]:
            self._kill_at[cid] = float("inf")
            supervise.kill(pid)

    def _remove(self, cid: str, grace: float = 0) -> None:
        """Kill it if it runs (a replica scaled down or removed: SIGTERM first, SIGKILL
        after ``grace`` seconds, as swarm stops a task); a thread waits for its end and
        removes the rest."""
        state = self.state(cid)
        self._kill_at.pop(cid, None)
        self._restart_at.pop(cid, None)
        self._streak.pop(cid, None)
        self._watched.discard(cid)
        self._removing.add(cid)
        if cid in self._ips:
            self._removing_ips[cid] = self._ips[cid]
        pid = state.pid()
        if pid is not None and not state.ended():
            if grace:
                supervise.send(pid, signal.SIGTERM)
            else:
                supervise.kill(pid)
        thread = threading.Thread(target=self._finish_removal, args=(state, pid, grace),
                                  daemon=True)
        thread.start()
        self._removals_running = [t for t in self._removals_running if t.is_alive()] + [thread]

    def _finish_removal(self, state: StateDir, pid: int | None, grace: float = 0) -> None:
        if pid is not None and grace and not supervise.wait_for(state.ended, grace, 0.05):
            supervise.kill(pid)
        if pid is not None:  # the shim records the end and frees the cgroup
            supervise.wait_for(state.ended, REMOVE_WAIT)
        container_net.remove(state.id)
        Cgroup(state.id).remove()  # if its shim died before it could
        state.remove()
        log.info("removed container %s", state.id[:12])
        self.tell_self(Removed(state.id))

    # -- watching, off the actor's thread ----------------------------------------------------

    def _watch(self, shim, state: StateDir) -> None:
        """Start and end are worth a look at once, not at the next tick."""
        run = state.run()
        supervise.wait_for(lambda: state.pid() is not None or shim.poll() is not None,
                           timeout=float("inf"), interval=0.002)
        self.context.listener.noticed()  # a foreground run waits for the pid, not the log
        self.tell_self(Started(state.id))  # an attached container starts when its CLI connects
        if (pid := state.pid()) is not None:
            # Its end as soon as the shim has recorded it, not once the shim itself has
            # gone (its cgroup removed, its interpreter ended: milliseconds later).
            supervise.wait_for_end(pid)
            supervise.wait_for(lambda: state.ended() or shim.poll() is not None,
                               timeout=float("inf"), interval=0.002)
            self.context.listener.noticed()
            self.tell_self(Reconcile(full=False))
        shim.wait()
        if not state.ended():  # the actor looks: the next run may have begun meanwhile
            self.tell_self(ShimGone(state.id, run))
        self.tell_self(Reconcile(full=False))

    def _shim_gone(self, message: ShimGone) -> None:
        """A run's shim ended without its exit code: it failed, and the container never
        ran; said where logs look.  On the actor's thread, which alone begins runs."""
        state = self.state(message.container)
        if state.run() != message.run or state.ended() or not state.exists():
            return  # the next run has begun, or it was removed
        try:
            with open(state.shim_log, errors="replace") as f:
                reason = f.read()[-2000:]
        except OSError:
            reason = "(no shim.log)"
        state.say(f"cantainer: the container's shim failed:\n{reason}")
        state.write_exit_code(125)
        self.context.listener.noticed()  # a foreground run waits for a pid or this

    def _watch_adopted(self, pid: int, state: StateDir) -> None:
        """Wait for an adopted container's process to end, then for its shim to record
        the code."""
        supervise.wait_for_end(pid)
        supervise.wait_for(state.ended, REMOVE_WAIT)
        self.tell_self(Reconcile(full=False))

    def wants_back(self, items: tuple) -> bool:
        """A bridge, or the veth of a container of this host still running."""
        running = {names.veth(cid) for cid in self._running(self.plan)}
        return any(item[0] == "link" and (item[1].startswith(names.BRIDGE_PREFIX)
                                          or item[1] in running) for item in items)

    # -- drift: the kernel against the plan ---------------------------------------------------

    def _running(self, local: dict[str, ContainerPlan]) -> dict[str, ContainerPlan]:
        """Containers the log says run here whose shim has not recorded an exit."""
        return {cid: c for cid, c in local.items()
                if c.state == "running" and not self.state(cid).ended()}

    def _drift(self, local: dict[str, ContainerPlan]) -> list[tuple[str, str, str]]:
        """How this host's containers differ from the plan: (what, kind, subject) with
        kind one of state, start, process, netns, veth, stray-veth."""
        found = []
        for cid in StateDir.ids(self.context.data_dir):
            if cid not in local and cid not in self._removing:
                found.append((f"remove the state of container {cid[:12]} (not in the "
                              "log)", "state", cid))
        for cid, c in sorted(local.items()):
            if c.state == "created" and not self.state(cid).has_spec():
                found.append((f"start container {c.name}", "start", cid))
        veths = container_net.veths()
        for cid, c in sorted(self._running(local).items()):
            bridge = names.bridge(c.vni)
            if not supervise.alive(c.pid):
                found.append((f"container {c.name}: its process {c.pid} is gone", "process",
                              cid))
                continue
            if not container_net.has_netns(cid):
                found.append((f"container {c.name}: name its network namespace "
                              f"{names.netns(cid)} again", "netns", cid))
            if veths.get(names.veth(cid)) != (bridge, True):
                found.append((f"container {c.name}: attach its veth {names.veth(cid)} to "
                              f"{bridge}, up", "veth", cid))
        ours = {names.veth(cid) for cid in (*local, *self._removing)}
        for veth in sorted(set(veths) - ours):
            found.append((f"remove veth {veth} (no container of this host)", "stray-veth",
                          veth))
        return found

    def _repair(self, local: dict[str, ContainerPlan]) -> None:
        """Put back what a running container lost (its veth in the bridge, removed by
        hand or by the overlay actor racing this one; the name of its namespace), and
        remove veths of containers the log no longer has."""
        for what, kind, subject in self._drift(local):
            if kind not in ("netns", "veth", "stray-veth"):
                continue  # state and start: reconcile's own loop; process: the shim's
            log.warning("runtime: %s", what)
            if kind == "stray-veth":
                container_net.remove_veth(subject)
            elif kind == "netns":
                container_net.restore_netns(subject, local[subject].pid)
            else:
                self._network(local[subject])

    def differences(self) -> list[str]:
        return [what for what, _, _ in self._drift(self.plan)]
