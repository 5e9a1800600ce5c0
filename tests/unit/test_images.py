"""Images: the busybox build, safe unpacking of root filesystem tarballs."""

import io
import os
import tarfile
import threading

import pytest

from cantainer.errors import ImageError, NotFound
from cantainer.kernel.images import ImageStore, file_sha256, parse_ref


def tarball(path, entries):
    """Write a .tar.gz of (name, kind, payload) entries: kind file|dir|sym|hard."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size, info.mode = len(data), 0o755
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "hard": tarfile.LNKTYPE}[kind]
            info.mode = 0o755
            if kind in ("sym", "hard"):
                info.linkname = payload
            tar.addfile(info)
    return str(path)


def alpine_like(path, extra=()):
    """Laid out like the Alpine minirootfs: busybox applets as absolute links, empty /dev;
    ``extra`` entries added."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    return tarball(path, [
        ("./", "dir", None), ("./bin/", "dir", None), ("./dev/", "dir", None),
        ("./etc/", "dir", None), ("./bin/busybox", "file", busybox),
        ("./bin/sh", "sym", "/bin/busybox"), ("./bin/ls", "sym", "/bin/busybox"),
        ("./etc/os-release", "file", 'ID=alpine\nVERSION_ID=3.20.3\n'),
        ("./etc/alpine-release", "file", "3.20.3\n"),
        ("./lib/", "dir", None), ("./lib/libc.so", "file", "x"),
        ("./lib/ld.so", "hard", "./lib/libc.so"), *extra,
    ])


def test_refs():
    assert parse_ref("alpine") == ("alpine", "latest")
    assert parse_ref("alpine:3.20.3") == ("alpine", "3.20.3")
    for bad in ("Alpine", "a/b", "x:", ":y", "../x"):
        with pytest.raises(ImageError, match="not an image name"):
            parse_ref(bad)


def test_busybox_is_built_on_first_use(tmp_path):
    store = ImageStore(str(tmp_path))
    root = store.rootfs("busybox")
    assert os.path.isfile(os.path.join(root, "bin/busybox"))
    assert os.readlink(os.path.join(root, "bin/sh")) == "/bin/busybox"
    assert os.path.islink(os.path.join(root, "usr/bin/wget"))
    for f in ("passwd", "group", "hosts", "resolv.conf", "os-release"):
        assert os.path.isfile(os.path.join(root, "etc", f))
    assert [(i["name"], i["tag"]) for i in store.list()] == [("busybox", "latest")]
    assert store.remove("busybox") == "busybox:latest" and store.list() == []


def test_import_of_an_alpine_like_tarball(tmp_path):
    store = ImageStore(str(tmp_path / "data"))
    path = alpine_like(tmp_path / "alpine.tar.gz")
    meta = store.import_tarball("alpine:3.20.3", path)
    assert meta["sha256"] == file_sha256(path)
    root = store.rootfs("alpine:3.20.3")
    assert os.readlink(os.path.join(root, "bin/sh")) == "/bin/busybox"
    assert os.path.isdir(os.path.join(root, "dev")) and os.listdir(os.path.join(root, "dev")) == []
    assert os.path.samefile(os.path.join(root, "lib/ld.so"), os.path.join(root, "lib/libc.so"))
    listed = store.list()[0]
    assert (listed["name"], listed["tag"], listed["sha256"]) == ("alpine", "3.20.3", meta["sha256"])


# Every escape aims at SENTINEL, a directory beside the store (never at the host's own
# files): were the checks broken, the test would see the sentinel change.
UP = "../../../../"  # from the scratch root (DATA/images/.bad-X/rootfs) to tmp_path


@pytest.mark.parametrize(("entries", "message"), [
    ([(f"{UP}sentinel/evil", "file", "x")], "contains '..'"),
    ([(f"a/../{UP}sentinel/evil", "file", "x")], "contains '..'"),
    ([("{sentinel}/evil", "file", "x")], "is an absolute path"),
    ([("lnk", "hard", f"{UP}sentinel/target"), ("lnk", "file", "overwritten")],
     "hard link out of the root"),
    ([("lnk", "hard", "{sentinel}/target"), ("lnk", "file", "overwritten")],
     "hard link out of the root"),
    ([("a/", "dir", None), ("a/lnk", "sym", f"../{UP}sentinel"), ("a/lnk/evil", "file", "x")],
     "symbolic link out of the root"),
    ([("lnk", "sym", "{sentinel}"), ("lnk/target", "file", "overwritten")],
     "goes through the symbolic link"),
])
def test_unsafe_tarballs_are_refused_whole(tmp_path, entries, message):
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "target").write_text("original")
    entries = [(name.format(sentinel=sentinel), kind,
                payload.format(sentinel=sentinel) if kind != "file" and payload else payload)
               for name, kind, payload in entries]
    store = ImageStore(str(tmp_path / "data"))
    path = tarball(tmp_path / "bad.tar.gz", [("ok", "file", "fine"), *entries])
    with pytest.raises(ImageError, match=message):
        store.import_tarball("bad", path)
    assert store.list() == []
    assert not os.path.exists(tmp_path / "data" / "images" / "bad")
    assert os.listdir(sentinel) == ["target"], "nothing was written beside the store"
    assert (sentinel / "target").read_text() == "original"
    assert os.stat(sentinel / "target").st_nlink == 1, "nothing links to it"


def test_unreadable_tarball_and_missing_image(tmp_path):
    store = ImageStore(str(tmp_path))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ImageError, match="is not a readable tar archive"):
        store.import_tarball("junk", str(junk))
    with pytest.raises(NotFound, match="no image nope:latest on this host"):
        store.rootfs("nope")
    with pytest.raises(NotFound, match="no image nope:latest"):
        store.remove("nope")


def test_busybox_asked_for_by_two_at_once_is_built_once(tmp_path):
    """The API and the runtime actor each have a store of the same directory, and both
    may ask for busybox first."""
    stores = [ImageStore(str(tmp_path)) for _ in range(4)]
    errors = []

    def first_use(store):
        try:
            store.rootfs("busybox")
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [(i["name"], i["tag"]) for i in stores[0].list()] == [("busybox", "latest")]
    assert [n for n in os.listdir(tmp_path / "images") if n.startswith(".")] == []
