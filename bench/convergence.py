"""Overlay convergence: an event appended on host A -> entries and traffic on the others.

    .venv/bin/python -m bench.convergence [--events N] [--hosts N] [--idle SECONDS]

On a lab of HOSTS hosts, every host but A (host 1) runs a container on a
shared network, so each holds that network's VXLAN device.  Then, EVENTS
times each, interleaved:

* ``cantainer submit-event ContainerCreated`` (a container on A) returns on
  A (the issue's definition; also shown from the moment it started, and
  0 when the entries were there before it returned), and the clock runs
  until the new container's FDB entry and neighbour entry are present on
  every other host (rtnetlink notifications, heard by a thread inside each
  host's namespace);
* ``cantainer run -d ... busybox nc -l -p 7000`` returns on A: the same
  clock, and a second one until a TCP connect from the network namespace of
  host 2's container to the new one succeeds (attempts every 1 ms; an
  attempt whose ARP goes unanswered is dropped with its neighbour entry, so
  the figure is when a connection could first succeed, not the kernel's 1 s
  ARP retry timer).

The same is measured on a second lab whose daemons run the original tool's
design — the tailer polls the log every 500 ms, no wake-ups, no pokes
(``cantainerd --fixed-poll 0.5``) — the anchor.  ``--idle`` also samples one
daemon's CPU and memory after the run (see bench.idle for the 60 s figure).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import struct
import threading
import time

from bench._util import Figure, machine, median, ms, percentile, table
from cantainer.projections.ipam import mac_of
from cantainer.cli import client as cli
from cantainer.kernel import netns
from lab import Lab

NET = "198.18.0.0/16"
ANCHOR_ARGS = ("--fixed-poll", "0.5")


class Watcher:
    """Records when each MAC (FDB entry with a remote) and IP (permanent neighbour)
    first appears in a host's kernel: rtnetlink notifications, read in a thread inside
    the host's namespace (polling the tables would steal the CPU being measured)."""

    def __init__(self, netns_name: str) -> None:
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=netns.run_in, args=(netns_name, self._listen))
        self._thread.start()
        self._ready.wait(5)

    def _listen(self) -> None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.bind((0, RTMGRP_NEIGH))
            sock.settimeout(0.2)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                now = time.perf_counter()
                for key in _new_entries(data):
                    self.seen.setdefault(key, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


RTMGRP_NEIGH, RTM_NEWNEIGH, NUD_PERMANENT = 0x4, 28, 0x80
NLMSG = struct.Struct("=LHHLL")
NDMSG = struct.Struct("=BxxxiHBB")
RTATTR = struct.Struct("=HH")


def _new_entries(data: bytes):
    """From a batch of rtnetlink messages: the MAC of each new FDB entry that has a
    remote, and the IP of each new permanent IPv4 neighbour entry."""
    offset = 0
    while offset + NLMSG.size <= len(data):
        length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size:
            return
        if kind == RTM_NEWNEIGH:
            family, _, state, _, _ = NDMSG.unpack_from(data, offset + NLMSG.size)
            attrs, at = {}, offset + NLMSG.size + NDMSG.size
            while at + RTATTR.size <= offset + length:
                alen, atype = RTATTR.unpack_from(data, at)
                if alen < RTATTR.size:
                    break
                attrs[atype] = data[at + RTATTR.size:at + alen]
                at += (alen + 3) & ~3
            dst, lladdr = attrs.get(1), attrs.get(2)  # NDA_DST, NDA_LLADDR
            if family == socket.AF_BRIDGE and dst and lladdr:
                yield ":".join(f"{b:02x}" for b in lladdr)
            elif family == socket.AF_INET and state & NUD_PERMANENT and dst:
                yield socket.inet_ntoa(dst)
        offset += (length + 3) & ~3


def first_connect(netns_name: str, ip: str, port: int, deadline: float) -> float | None:
    """When a TCP connect from ``netns_name`` to ``ip:port`` first succeeds."""
    def probe() -> float | None:
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            while time.perf_counter() < deadline:
                with socket.socket() as s:
                    s.settimeout(0.05)
                    try:
                        s.connect((ip, port))
                        return time.perf_counter()
                    except ConnectionRefusedError:
                        pass  # reached; not listening yet
                    except OSError:  # no ARP answer yet: forget it, so the next asks again
                        try:
                            ipr.neigh("del", dst=ip, ifindex=eth0)
                        except Exception:
                            pass
                time.sleep(0.001)
        return None
    return netns.run_in(netns_name, probe)


def ip_of(lab: Lab, cid: str) -> str:
    return cli.call(lab.host(1).socket, {"op": "inspect", "ref": cid})["container"]["ip"]


def container_id(i: int) -> str:
    return f"{i:012x}"


def measure(lab: Lab, events: int) -> dict[str, list[float]]:
    others = [h for h in lab.hosts if h.number != 1]
    base = {}
    for h in others:
        cid = lab.cli(h.number, "run", "-d", "-n", NET, "--name", f"base{h.number}", "busybox",
                      "sleep", "100000").stdout.strip()
        base[h.number] = f"ct{cid[:12]}"
    time.sleep(1.0)
    watchers = [Watcher(h.netns) for h in others]
    out: dict[str, list[float]] = {
        "submit-event returned → entries": [], "submit-event started → entries": [],
        "run -d returned → entries": [], "run -d returned → TCP connect": [],
        "run -d started → TCP connect": []}

    def entries_everywhere(ip: str) -> float:
        """When the last of ``ip``'s entries appeared on the other hosts."""
        mac, deadline = mac_of(ipaddress.IPv4Address(ip)), time.perf_counter() + 20
        while not all(mac in w.seen and ip in w.seen for w in watchers):
            if time.perf_counter() > deadline:
                raise SystemExit(f"entries for {ip} not everywhere in 20 s")
            time.sleep(0.001)
        return max(max(w.seen[mac], w.seen[ip]) for w in watchers)

    try:
        for i in range(events):
            started = time.perf_counter()
            lab.cli(1, "submit-event", "ContainerCreated", f"container={container_id(5000 + i)}",
                    f"name=ev{i}", "host=h1", f"network={NET}")
            returned = time.perf_counter()
            done = entries_everywhere(ip_of(lab, container_id(5000 + i)))
            out["submit-event returned → entries"].append(max(0.0, done - returned))
            out["submit-event started → entries"].append(done - started)
            time.sleep(0.05)
            started = time.perf_counter()
            cid = lab.cli(1, "run", "-d", "-n", NET, "--name", f"srv{i}", "busybox",
                          "nc", "-l", "-p", "7000").stdout.strip()
            returned = time.perf_counter()
            ip = ip_of(lab, cid)  # through the API: a millisecond or two
            connected = first_connect(base[2], ip, 7000, returned + 20)
            if connected is None:
                raise SystemExit(f"no TCP connect to {ip} from h2 in 20 s")
            out["run -d returned → TCP connect"].append(connected - returned)
            out["run -d started → TCP connect"].append(connected - started)
            # run -d returns once the process runs; the peers often have the entries by then.
            out["run -d returned → entries"].append(max(0.0, entries_everywhere(ip) - returned))
            time.sleep(0.05)
    finally:
        for w in watchers:
            w.close()
    return out


def ratio_of(ours: float, anchor: float) -> str:
    return f"{ours / anchor:.2f}" if anchor > 0 else "-"


def daemon_pids(pid: int) -> list[int]:
    """A daemon and its dqlite TLS relay (a process of its own): one daemon's cost.
    Container shims are the containers', not counted."""
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[0].endswith(b"/cantainer-relay"):
                        pids.append(child)
            except OSError:
                pass
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a daemon and its relay."""
    total = 0
    for p in daemon_pids(pid):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a daemon and its TLS relay."""
    total = 0
    for p in daemon_pids(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def run(hosts: int = 3, events: int = 50, idle: float = 0.0) -> tuple[str, list[Figure]]:
    results = {}
    for mode, args in (("ours", ()), ("anchor: fixed 500 ms poll", ANCHOR_ARGS)):
        with Lab(hosts, daemon_args=args) as lab:
            lab.start_all()
            results[mode] = measure(lab, events)
            if idle and mode == "ours":
                time.sleep(2.0)
                pid = lab.host(2).proc.pid
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                time.sleep(idle)
                idle_cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
                idle_line = (f"\nidle daemon (h2) over {idle:.0f}s after the run: "
                             f"{idle_cpu:.2f}% of one core, RSS {rss_mib(pid):.1f} MiB")
    rows, figures = [], []
    target = 0.100 if hosts <= 3 else 0.250
    for path in results["ours"]:
        ours, anchor = results["ours"][path], results["anchor: fixed 500 ms poll"][path]
        ratio = ratio_of(percentile(ours, 99), percentile(anchor, 99))
        rows.append([path, ms(median(ours)), ms(percentile(ours, 99)), ms(max(ours)),
                     ms(median(anchor)), ms(percentile(anchor, 99)), ratio])
        if "started" in path:
            continue  # context for the table; the targets are from the command's return
        figures.append(Figure(f"convergence, {hosts} hosts: {path} (p99)",
                              ms(percentile(ours, 99)),
                              f"fixed 500 ms poll {ms(percentile(anchor, 99))}",
                              f"{ratio}× anchor",
                              f"p99 ≤ {target * 1000:.0f} ms",
                              percentile(ours, 99) <= target))
    text = (f"overlay convergence on {hosts} hosts, {events} events per path and mode; "
            f"{machine()}\n"
            + table(["path", "p50", "p99", "max", "anchor p50", "anchor p99", "p99 / anchor"],
                    rows) + (idle_line if idle else ""))
    return text, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle CPU sampling")
    args = parser.parse_args()
    print(run(args.hosts, args.events, args.idle)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
