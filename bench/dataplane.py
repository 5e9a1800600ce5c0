"""Overlay data plane: TCP throughput container ↔ container across hosts (iperf3).

    .venv/bin/python -m bench.dataplane [--seconds S] [--reps N]

On a two-host lab, REPS rounds of S-second iperf3 runs, interleaved:

* overlay: from a container's network namespace on host 2 to a container on
  host 1, over their shared network (veth → bridge → VXLAN → underlay);
* anchor: host 2 → host 1 over the underlay itself;
* anchor: a bare VXLAN device pair between the same two hosts (VNI 99, UDP
  4790, MTU 1450, static remote; no bridge, no veth) — the kernel's own
  cost of encapsulation.

iperf3 runs from the host's filesystem inside the containers' network
namespaces (the image has no iperf3; the packets' path is the container's).
The overlay is also measured with br_netfilter's ``bridge-nf-call-iptables``
switched off in both hosts' namespaces (it is on wherever the br_netfilter
module is loaded — Docker and Kubernetes load it — and sends every bridged
packet through the iptables hooks): context for where the gap comes from.

"No fragmentation": the IP fragmentation counters (FragCreates, FragOKs,
ReasmReqds in /proc/net/snmp) of both hosts and both containers do not move
during the overlay runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time

from bench._util import Figure, machine, median, table
from lab import Lab

NET = "198.18.0.0/24"
BARE = {1: "198.19.255.1", 2: "198.19.255.2"}
NO_BRNF = "overlay, bridge-nf-call-iptables=0 (context)"


def sh(netns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {netns} failed: {result.stderr.strip()}")
    return result


def iperf(server_ns: str, client_ns: str, address: str, seconds: float) -> float:
    """Gbit/s received, one TCP stream."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1",
                               "-B", address], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh(client_ns, "iperf3", "-c", address, "-t", str(seconds), "-J").stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.wait(10)


def bridge_netfilter(lab: Lab, on: bool) -> None:
    """br_netfilter's per-namespace switch: bridged packets through iptables, or not."""
    for h in lab.hosts:
        sh(h.netns, "sysctl", "-q", f"net.bridge.bridge-nf-call-iptables={int(on)}",
           check=False)


def fragments(netns: str) -> int:
    text = sh(netns, "cat", "/proc/net/snmp").stdout.splitlines()
    names, values = text[0].split(), text[1].split()
    counts = dict(zip(names[1:], map(int, values[1:])))
    return sum(counts[k] for k in ("FragCreates", "FragOKs", "ReasmReqds"))


def run(seconds: float = 5.0, reps: int = 3) -> tuple[str, list[Figure]]:
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed: apt-get install iperf3 (bench/run does)")
    results: dict[str, list[float]] = {"overlay: container ↔ container": [],
                                       NO_BRNF: [],
                                       "underlay: host ↔ host": [],
                                       "bare VXLAN: host ↔ host": []}
    with Lab(2) as lab:
        lab.start_all()
        ct = {}
        for n in (1, 2):
            cid = lab.cli(n, "run", "-d", "-n", NET, "--name", f"perf{n}", "busybox",
                          "sleep", "100000").stdout.strip()
            ct[n] = f"ct{cid[:12]}"
        server_ip = json.loads(lab.cli(2, "inspect", "perf1").stdout)["ip"]
        for n, other in ((1, 2), (2, 1)):
            ns = lab.host(n).netns
            sh(ns, "ip", "link", "add", "ctbenchvx", "type", "vxlan", "id", "99", "dstport",
               "4790", "local", lab.host(n).address, "remote", lab.host(other).address)
            sh(ns, "ip", "link", "set", "ctbenchvx", "mtu", "1450", "up")
            sh(ns, "ip", "addr", "add", f"{BARE[n]}/30", "dev", "ctbenchvx")
        watched = [lab.host(1).netns, lab.host(2).netns, ct[1], ct[2]]
        before = sum(fragments(ns) for ns in watched)
        for _ in range(reps):
            results["overlay: container ↔ container"].append(
                iperf(ct[1], ct[2], server_ip, seconds))
            bridge_netfilter(lab, False)
            results[NO_BRNF].append(iperf(ct[1], ct[2], server_ip, seconds))
            bridge_netfilter(lab, True)
            results["underlay: host ↔ host"].append(
                iperf(lab.host(1).netns, lab.host(2).netns, lab.host(1).address, seconds))
            results["bare VXLAN: host ↔ host"].append(
                iperf(lab.host(1).netns, lab.host(2).netns, BARE[1], seconds))
        fragmented = sum(fragments(ns) for ns in watched) - before
    overlay = median(results["overlay: container ↔ container"])
    bare = median(results["bare VXLAN: host ↔ host"])
    underlay = median(results["underlay: host ↔ host"])
    rows = [[name, f"{median(v):.2f}", f"{min(v):.2f}", f"{max(v):.2f}",
             f"{median(v) / bare:.2f}"] for name, v in results.items()]
    text = (f"TCP throughput (iperf3, one stream, {seconds:g} s × {reps} runs each, "
            f"interleaved; Gbit/s); 2-host lab; {machine()}\n"
            + table(["path", "median", "min", "max", "median / bare VXLAN"], rows)
            + f"\nIP fragments created or reassembled during the overlay runs: {fragmented}")
    figure = Figure("overlay TCP throughput, container ↔ container (iperf3)",
                    f"{overlay:.2f} Gbit/s",
                    f"bare VXLAN {bare:.2f}; underlay {underlay:.2f} Gbit/s",
                    f"{overlay / bare:.2f}× bare VXLAN",
                    "≥ 0.9× bare VXLAN, no fragmentation",
                    overlay >= 0.9 * bare and fragmented == 0)
    return text, [figure]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(run(args.seconds, args.reps)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
