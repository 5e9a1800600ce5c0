"""Container start: ``cantainer run --rm -n CIDR busybox true``, next to runc and unshare.

    .venv/bin/python -m bench.container_start [--reps N]

On a three-host lab (so the events go through a real Raft quorum), REPS
times each, interleaved so that noise hits all three alike:

* ours: the whole command ``cantainer run --rm -n 198.18.0.0/24 busybox
  true`` on host 1 — CLI start, ContainerCreated through the log, the
  runtime actor's netns and veth, the shim, the process, ContainerExited,
  ContainerRemoved;
* ``runc run`` (Debian's runc) of a bundle whose root is the same busybox
  root filesystem, with its default spec (new PID, mount, UTS, IPC and
  network namespaces; no network configured), command ``/bin/true``;
* the floor: ``unshare --fork --pid --mount --uts --ipc --net chroot ROOT
  /bin/true``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench._util import Figure, machine, median, ms, percentile, table
from lab import Lab

NET = "198.18.0.0/24"


def runc_bundle(rootfs: str, where: str) -> str:
    bundle = os.path.join(where, "bundle")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        spec = json.load(f)
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    with open(path, "w") as f:
        json.dump(spec, f)
    return bundle


def timed(argv: list[str], env: dict | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): "
                         f"{result.stdout}{result.stderr}")
    return elapsed


def run(reps: int = 30) -> tuple[str, list[Figure]]:
    if shutil.which("runc") is None:
        raise SystemExit("runc is not installed: apt-get install runc (bench/run does)")
    times: dict[str, list[float]] = {"cantainer run": [], "runc run": [], "unshare + chroot": []}
    with Lab(3) as lab, tempfile.TemporaryDirectory(prefix="ctbench-") as tmp:
        lab.start_all()
        ours = [sys.executable, "-m", "cantainer.cli", "run", "--rm", "-n", NET, "busybox", "true"]
        env = dict(os.environ, CANTAINER_SOCKET=lab.host(1).socket)
        timed(ours, env)  # builds the busybox image on h1 and creates the network
        rootfs = os.path.join(lab.host(1).data_dir, "images", "busybox", "latest", "rootfs")
        if not os.path.isdir(rootfs):
            raise SystemExit(f"expected the busybox image at {rootfs}")
        bundle = runc_bundle(rootfs, tmp)
        state = os.path.join(tmp, "runc-state")
        for i in range(reps):
            times["cantainer run"].append(timed(ours, env))
            times["runc run"].append(timed(["runc", "--root", state, "run", "--bundle", bundle,
                                            f"ctbench-{os.getpid()}-{i}"]))
            times["unshare + chroot"].append(timed(
                ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
                 "chroot", rootfs, "/bin/true"]))
    runc = median(times["runc run"])
    rows = [[name, ms(median(ts)), ms(percentile(ts, 99)), ms(min(ts)),
             f"{median(ts) / runc:.2f}"] for name, ts in times.items()]
    text = (f"container start, {reps} runs each, interleaved; 3-host lab; {machine()}\n"
            + table(["command", "median", "p99", "min", "median / runc"], rows))
    ours_median = median(times["cantainer run"])
    figure = Figure("container start: `run --rm -n CIDR busybox true`", ms(ours_median),
                    f"runc {ms(runc)}; unshare+chroot {ms(median(times['unshare + chroot']))}",
                    f"{ours_median / runc:.2f}× runc", "≤ 1.0× runc", ours_median <= runc)
    return text, [figure]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="runs of each command")
    args = parser.parse_args()
    print(run(args.reps)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
