"""Kernel settings Cantainer writes as files, on trees laid out as the kernel's are."""

import os

import pytest

from cantainer.kernel.cgroups import Cgroup, available, unenforceable
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


def test_limits_no_controller_can_enforce_are_refused_not_dropped(tmp_path):
    """Where /sys was mounted anew (``ip netns exec``), /sys/fs/cgroup is an empty
    directory: a limit asked for must stop the container, never run it without."""
    assert available(str(tmp_path)) == frozenset()
    with pytest.raises(OSError, match=r"--memory, --cpus cannot be enforced on this host"):
        Cgroup("c0ffee", root=str(tmp_path)).create(memory=32 << 20, pids=None, cpus=0.5)
    assert os.listdir(tmp_path) == [], "nothing made"
    Cgroup("c0ffee", root=str(tmp_path)).create(None, None, None)  # no limits: fine
    (tmp_path / "pids").mkdir()  # one v1 hierarchy only
    assert unenforceable(None, 10, 1.0, str(tmp_path)) == ["--cpus"]
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")  # v2 without cpu
    assert available(str(tmp_path)) == {"memory", "pids"}
    assert unenforceable(1 << 30, 10, 1.0, str(tmp_path)) == ["--cpus"]
