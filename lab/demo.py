"""The demo: containers on three hosts, joined by an overlay built from one log.

Run it with ``scripts/demo`` (as root).  It builds a lab of three hosts made
of network namespaces, starts a daemon on each (the first bootstraps, the
others join through ``--seeds``), appends events from different hosts, runs
a server container on one host and reaches it by ping and TCP from a
container on another, shows that a container on a second subnet cannot,
shows every host's kernel following the log (VXLAN devices, FDB and
neighbour entries), kills the Raft leader and keeps going, prints the event
log that made it all, and tears everything down — printing each command as
a user would type it.
"""

from __future__ import annotations

import json
import sys
import time

from cantainer.errors import CantainerError
from cantainer.kernel import netns
from cantainer.kernel.overlay import OverlayKernel
from lab import Lab


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def run(lab: Lab, host: int, *args: str, input: str | None = None) -> str:
    print(f"[h{host}]$ cantainer {' '.join(args)}", flush=True)
    result = lab.cli(host, *args, input=input, check=False)
    out = (result.stdout + result.stderr).rstrip()
    if out:
        print("    " + out.replace("\n", "\n    "), flush=True)
    return result.stdout


def leader_of(lab: Lab, host: int) -> int:
    address = json.loads(lab.cli(host, "status", "--json").stdout)["leader"]
    return next(h.number for h in lab.hosts if h.dqlite_address == address)


def show_kernel(lab: Lab, host: int) -> None:
    """Print a host's overlay as the kernel holds it (read inside its namespace)."""
    h = lab.host(host)

    def read():
        return OverlayKernel(h.address).actual()

    print(f"[h{host}] kernel:", flush=True)
    networks = netns.run_in(h.netns, read)
    if not networks:
        print("    no overlay devices")
    for vni, net in sorted(networks.items()):
        vx = net.vxlan or {}
        print(f"    ctbr{vni} + ctvx{vni}: vni {vx.get('vni')}, learning {vx.get('learning')}, "
              f"proxy {vx.get('proxy')}, mtu {vx.get('mtu')}")
        for mac, dst in sorted(net.fdb.items()):
            print(f"    fdb   {mac} dst {dst}")
        for ip, mac in sorted(net.neigh.items()):
            print(f"    neigh {ip} lladdr {mac} PERMANENT")


def outsider(lab: Lab) -> None:
    """Tried from a namespace on the underlay that is no member."""
    import asyncio

    from dqliteclient import connect

    async def write() -> str:
        try:
            conn = await asyncio.wait_for(connect(lab.host(1).dqlite_address,
                                                  database="cantainer", timeout=2), 5)
        except Exception as exc:  # noqa: BLE001 - what it gets is what we show
            return f"refused: {type(exc).__name__}: {exc}"
        await conn.close()
        return "connected (this should not happen)"

    name = lab.outsider()
    print(f"[outsider]$ dqlite-client INSERT into {lab.host(1).dqlite_address}")
    print("    " + netns.run_in(name, lambda: asyncio.run(write())))


def main() -> int:
    try:
        with Lab(3) as lab:
            say(f"three hosts: {', '.join(f'{h.name}={h.address}' for h in lab.hosts)} "
                f"(namespaces {lab.prefix}*)")
            say("h1 bootstraps the cluster and its CA; h2 and h3 join with --seeds "
                f"{lab.host(1).dqlite_address} and the join token h1 prints")
            lab.start(1)
            token = run(lab, 1, "join-token").strip()
            lab.start(2, token=token, wait=False)
            lab.start(3, token=token, wait=False)
            lab.wait_ready(2)
            lab.wait_ready(3)
            lab.wait_formed()
            run(lab, 2, "status")
            say("an outsider on the underlay, with no certificate, cannot reach the log "
                "(tests/integration/test_trust.py tries every door)")
            outsider(lab)

            say("events appended on different hosts")
            run(lab, 1, "submit-event", "NetworkCreated", "name=blue", "cidr=198.18.0.0/24")
            run(lab, 2, "submit-event", "NetworkCreated", "--data",
                '{"name": "green", "cidr": "198.18.1.0/24"}')
            run(lab, 3, "network", "create", "198.18.2.0/24", "--name", "red")
            run(lab, 3, "submit-event", "NetworkRemoved", "name=red", "--id", "demo-1")
            say("the same id again appends nothing: the original seq comes back")
            run(lab, 1, "submit-event", "NetworkRemoved", "name=red", "--id", "demo-1")
            say("bad input is refused with one line, and nothing is appended")
            run(lab, 2, "submit-event", "NetworkCreated", "name=red", "cidr=198.18.2.7/24")
            run(lab, 2, "network", "create", "198.18.0.0/16")

            say("every host reads the same log, in the same order")
            logs = [lab.cli(n, "events", "--json").stdout for n in (1, 2, 3)]
            run(lab, 3, "events")
            print(f"    identical on h1, h2, h3: {logs[0] == logs[1] == logs[2]}")

            say("a container on h1 serves TCP on the blue network (detached)")
            run(lab, 1, "run", "-d", "-n", "blue", "--name", "web", "busybox", "sh", "-c",
                "while true; do nc -l -p 80 -e echo hello from $(hostname); done")
            say("a container on h2 reaches it across hosts, by name: ping and TCP over the "
                "VXLAN overlay (h2's daemon answers 'web' from the log)")
            run(lab, 2, "run", "--rm", "-n", "blue", "--name", "client", "busybox", "sh", "-c",
                "ping -c 2 web; echo | nc -w 2 web 80")
            say("a container on another subnet (green, on h3) cannot reach it")
            run(lab, 3, "run", "--rm", "-n", "green", "busybox", "sh", "-c",
                "ping -c 1 -W 1 198.18.0.2 || echo 'unreachable, as it should be'")
            say("any host manages any container: exec in h1's web from h3")
            run(lab, 3, "exec", "web", "sh", "-c", "hostname; ip -o -4 addr show eth0")
            say("the container sees only its own processes")
            run(lab, 3, "exec", "web", "ps")
            say("a second container named web is refused by log order")
            run(lab, 2, "run", "-n", "blue", "--name", "web", "busybox", "true")
            run(lab, 3, "ps", "-a")
            run(lab, 3, "replay", "--node", "h1")
            for n in (1, 2, 3):
                show_kernel(lab, n)
            run(lab, 1, "replay", "--check")
            run(lab, 2, "nodes")

            dead = leader_of(lab, 1)
            say(f"SIGKILL the leader, h{dead}")
            lab.kill(dead)
            survivor = next(n for n in (1, 2, 3) if n != dead)
            started = time.monotonic()
            run(lab, survivor, "network", "create", "198.18.3.0/24", "--name", "yellow")
            print(f"    appended {time.monotonic() - started:.1f}s after the kill, "
                  f"new leader h{leader_of(lab, survivor)}")

            say(f"h{dead} restarts, rejoins as itself, catches up, and its kernel is unchanged")
            lab.start(dead)
            run(lab, dead, "replay", "--check")
            run(lab, dead, "status")
            say("a service: 6 replicas placed by the log itself (every host derives the same "
                "placement), its port published on every host (the routing mesh)")
            run(lab, 2, "service", "create", "--name", "hello", "--replicas", "6", "-n", "blue",
                "-p", "8080:80", "busybox", "sh", "-c",
                "while true; do nc -l -p 80 -e echo hello from $(hostname); done")
            run(lab, 3, "service", "ps", "hello")
            say("'hello' resolves to every replica (in a random order); any host's port "
                "8080 answers")
            run(lab, 1, "run", "--rm", "-n", "blue", "busybox", "sh", "-c",
                "nslookup hello | grep -c Address:; echo | nc -w 2 hello 80")
            for h in lab.hosts:
                print(f"    {h.address}:8080 -> " + lab.cli(
                    1, "run", "--rm", "-n", "blue", "busybox", "sh", "-c",
                    f"echo | nc -w 2 {h.address} 8080", check=False).stdout.strip())
            run(lab, 1, "service", "scale", "hello=3")
            run(lab, 1, "service", "ls")
            run(lab, 1, "service", "rm", "hello")
            say("stop goes through the log (ContainerStopRequested); h1 carries it out")
            run(lab, 3, "stop", "-t", "1", "web")
            say("the event log that made all of this")
            run(lab, 2, "events")

            say("h3 leaves the cluster (NodeLeft); the others stop without leaving, then "
                "tear-down")
            run(lab, 3, "node", "leave")
            run(lab, 1, "nodes")
        say("done: no namespaces, links or daemons left")
    except CantainerError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
