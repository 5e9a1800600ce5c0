"""--cap-add and --cap-drop: the mask a container's process keeps (kernel/process.py)."""

import pytest

from cantainer.kernel.process import CAPS, DEFAULT_CAP_MASK, cap_mask


def test_the_default_set_is_dockers_and_flags_change_it_as_dockers_do():
    assert DEFAULT_CAP_MASK == 0xA80425FB and cap_mask() == DEFAULT_CAP_MASK
    assert cap_mask(add=["NET_ADMIN"]) == DEFAULT_CAP_MASK | 1 << 12
    assert cap_mask(drop=["NET_RAW", "CHOWN"]) == DEFAULT_CAP_MASK & ~(1 << 13 | 1 << 0)
    assert cap_mask(add=["NET_BIND_SERVICE"], drop=["ALL"]) == 1 << 10, "drop ALL, add back"
    assert cap_mask(add=["ALL"]) == (1 << 41) - 1 and len(CAPS) == 41
    assert cap_mask(add=["ALL"], drop=["SYS_ADMIN"]) == (1 << 41) - 1 & ~(1 << 21), \
        "all but SYS_ADMIN, as Docker"


def test_an_unknown_capability_is_named():
    with pytest.raises(ValueError, match="unknown capability 'NET_ADMINS'"):
        cap_mask(add=["NET_ADMINS"])


def test_mount_targets_resolve_inside_the_root_whatever_the_images_links(tmp_path):
    """An image's symbolic links are followed as inside the container: a mount, or a
    directory made for one, never lands on the host's files."""
    import os

    from cantainer.kernel.process import resolve_in

    root = tmp_path / "rootfs"
    (root / "srv").mkdir(parents=True)
    os.symlink("/etc", root / "abs")          # absolute: the container's /etc
    os.symlink("../../../../..", root / "srv" / "up")  # climbs: stops at the root
    os.symlink("loop", root / "loop")
    r = str(root)
    assert resolve_in(r, "/abs/new") == f"{r}/etc/new"
    assert resolve_in(r, "/srv/up/etc/passwd") == f"{r}/etc/passwd"
    assert resolve_in(r, "/../../x") == f"{r}/x"
    assert resolve_in(r, "/srv/./data/") == f"{r}/srv/data"
    with pytest.raises(OSError, match="too many symbolic links"):
        resolve_in(r, "/loop/x")
