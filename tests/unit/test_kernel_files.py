"""Kernel settings Cantainer writes as files, on trees laid out as the kernel's are."""

import os

from cantainer.kernel.cgroups import Cgroup
from cantainer.kernel.net import ensure_neighbour_table


def test_the_neighbour_table_limits_are_raised_never_lowered(tmp_path):
    for name, value in (("gc_thresh1", 128), ("gc_thresh2", 512), ("gc_thresh3", 100000)):
        (tmp_path / name).write_text(f"{value}\n")
    changed = ensure_neighbour_table(str(tmp_path))
    assert changed == ["net.ipv4.neigh.default.gc_thresh1 128 -> 4096",
                       "net.ipv4.neigh.default.gc_thresh2 512 -> 16384"]
    values = {n: int((tmp_path / n).read_text()) for n in ("gc_thresh1", "gc_thresh2",
                                                           "gc_thresh3")}
    assert values == {"gc_thresh1": 4096, "gc_thresh2": 16384, "gc_thresh3": 100000}
    assert ensure_neighbour_table(str(tmp_path)) == [], "a second start changes nothing"
    assert ensure_neighbour_table(str(tmp_path / "missing")) == [], "not the initial namespace"


def v1_tree(root):
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        (root / controller).mkdir(parents=True)


def test_limits_go_to_each_v1_hierarchy(tmp_path):
    v1_tree(tmp_path)
    cgroup = Cgroup("c0ffee", root=str(tmp_path))
    assert not cgroup.v2
    cgroup.create(memory=64 << 20, pids=32, cpus=0.5)
    read = lambda path: (tmp_path / path).read_text()  # noqa: E731
    assert read("memory/cantainer/c0ffee/memory.limit_in_bytes") == str(64 << 20)
    assert read("memory/cantainer/c0ffee/memory.memsw.limit_in_bytes") == str(64 << 20)
    assert read("pids/cantainer/c0ffee/pids.max") == "32"
    assert read("cpu/cantainer/c0ffee/cpu.cfs_quota_us") == "50000"
    assert read("cpu/cantainer/c0ffee/cpu.cfs_period_us") == "100000"
    cgroup.add(4242)
    for controller in ("memory", "pids", "cpu"):
        assert read(f"{controller}/cantainer/c0ffee/cgroup.procs") == "4242"


def test_limits_go_to_the_one_v2_group(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    cgroup = Cgroup("c0ffee", root=str(tmp_path))
    assert cgroup.v2
    cgroup.create(memory=64 << 20, pids=32, cpus=1.5)
    group = tmp_path / "cantainer" / "c0ffee"
    assert (group / "memory.max").read_text() == str(64 << 20)
    assert (group / "memory.swap.max").read_text() == "0"
    assert (group / "pids.max").read_text() == "32"
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (tmp_path / "cantainer" / "cgroup.subtree_control").read_text() == \
        "+memory +pids +cpu"
    assert sorted(os.listdir(group)) == ["cpu.max", "memory.max", "memory.swap.max",
                                         "pids.max"]


def test_no_limits_write_no_limit_files(tmp_path):
    v1_tree(tmp_path)
    Cgroup("c0ffee", root=str(tmp_path)).create(None, None, None)
    for controller in ("memory", "pids", "cpu"):
        assert os.listdir(tmp_path / controller / "cantainer" / "c0ffee") == []
