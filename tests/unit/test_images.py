"""Images: the busybox build, safe unpacking of root filesystem tarballs."""

import hashlib
import io
import json
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


# -- image load: docker save archives and OCI image layouts --------------------------------

def _tar_bytes(entries, gz=False) -> bytes:
    """A layer: (name, kind, payload) entries as ``tarball`` writes them, in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "hard": tarfile.LNKTYPE}[kind]
            info.linkname = payload or ""
            tar.addfile(info)
    return buffer.getvalue()


def _archive(path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


LOWER = [("etc/", "dir", None), ("etc/gone", "file", "old"), ("etc/kept", "file", "kept"),
         ("opaque/", "dir", None), ("opaque/old", "file", "old"), ("bin/", "dir", None)]
UPPER = [("etc/.wh.gone", "file", ""), ("opaque/", "dir", None),
         ("opaque/.wh..wh..opq", "file", ""), ("opaque/new", "file", "new")]
CONFIG = {"config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
                     "Env": ["PATH=/bin", "GREETING=hi"], "WorkingDir": "/srv", "User": "0:0"},
          "rootfs": {"type": "layers", "diff_ids": []}}


def docker_save(path, lower=LOWER, upper=UPPER, spoil=False, config=CONFIG,
                name="example.org/team/demo:1.0") -> str:
    """A ``docker save`` archive of two layers (either may be a layer's bytes)."""
    layers = [x if isinstance(x, bytes) else _tar_bytes(x) for x in (lower, upper)]
    ids = [hashlib.sha256(x).hexdigest() for x in layers]
    config = json.dumps({**config, "rootfs": {"type": "layers",
                                             "diff_ids": [f"sha256:{i}" for i in ids]}}).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    if spoil:
        layers[1] = layers[1][:-1024] + b"x" * 1024
    manifest = [{"Config": config_name, "RepoTags": [name],
                 "Layers": [f"{i}/layer.tar" for i in ids]}]
    return _archive(path, {"manifest.json": json.dumps(manifest).encode(), config_name: config,
                           **{f"{i}/layer.tar": x for i, x in zip(ids, layers)}})


def oci_layout(path, spoil=False) -> str:
    layers = [_tar_bytes(LOWER, gz=True), _tar_bytes(UPPER, gz=True)]
    config = json.dumps(CONFIG).encode()
    digest = lambda x: f"sha256:{hashlib.sha256(x).hexdigest()}"  # noqa: E731
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": digest(config)},
                           "layers": [{"digest": digest(x)} for x in layers]}).encode()
    index = {"schemaVersion": 2, "manifests": [{"digest": digest(manifest)}]}
    blobs = {f"blobs/sha256/{digest(x)[7:]}": x for x in (config, manifest, *layers)}
    if spoil:
        blobs[f"blobs/sha256/{digest(config)[7:]}"] = config.replace(b"hi", b"ho")
    return _archive(path, {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                           "index.json": json.dumps(index).encode(), **blobs})


@pytest.mark.parametrize("make", [docker_save, oci_layout])
def test_load_applies_layers_in_order_with_their_whiteouts_and_keeps_the_config(tmp_path, make):
    store = ImageStore(str(tmp_path / "store"))
    archive = make(tmp_path / "image.tar")
    ref = None if make is docker_save else "demo:1.0"  # docker save names it
    meta = store.load_archive(archive, ref)
    assert (meta["name"], meta["tag"]) == ("demo", "1.0")
    root = store.rootfs("demo:1.0")
    assert open(os.path.join(root, "etc/kept")).read() == "kept"
    assert not os.path.lexists(os.path.join(root, "etc/gone")), "a whiteout removes it"
    assert not any(".wh." in f for _, _, files in os.walk(root) for f in files)
    assert os.listdir(os.path.join(root, "opaque")) == ["new"], "an opaque dir is emptied"
    assert store.config("demo:1.0") == {"entrypoint": ["/bin/sh", "-c"], "cmd": ["echo hi"],
                                        "env": ["PATH=/bin", "GREETING=hi"],
                                        "workdir": "/srv", "user": "0:0"}
    assert store.config("busybox") == {}


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: docker_save(p, spoil=True), "does not match its digest"),
    (lambda p: oci_layout(p, spoil=True), "does not match its digest"),
    (lambda p: docker_save(p, upper=[("../escape", "file", "x")]), "contains '..'"),
    (lambda p: docker_save(p, lower=[("bin", "sym", "/")],
                           upper=[("bin/.wh.x", "file", "")]), "goes through"),
    (lambda p: docker_save(p, lower=[("bin", "sym", "/")],
                           upper=[("bin/evil", "file", "x")]), "goes through 'bin'"),
    # a hard link made through a link of the layer below, or to a file out of the root
    (lambda p: docker_save(p, lower=[("etc", "sym", "/etc"), ("x", "file", "x")],
                           upper=[("etc/passwd", "hard", "x")]), "goes through 'etc'"),
    (lambda p: docker_save(p, lower=[("etc", "sym", "/etc")],
                           upper=[("mine", "hard", "etc/passwd")]), "goes through 'etc'"),
    (lambda p: docker_save(p, lower=[("lnk", "sym", "/etc/passwd")],
                           upper=[("mine", "hard", "lnk")]), "no regular file"),
    (lambda p: docker_save(p, upper=[("/abs", "file", "x")]), "absolute"),
    # a layer cut short, a layer that is no tar
    (lambda p: docker_save(p, upper=b"not a tar at all" * 64), "not a tar archive"),
    (lambda p: _archive(p, {"hello": b"x"}), "neither an OCI image layout"),
    (lambda p: _archive(p, {"manifest.json": b"[{}]"}), "manifest is not one"),
])
def test_unsafe_or_spoilt_archives_are_refused_whole(tmp_path, make, message):
    store = ImageStore(str(tmp_path / "store"))
    with pytest.raises(ImageError, match=message):
        store.load_archive(make(tmp_path / "image.tar"), "demo:2")
    images = tmp_path / "store" / "images"
    assert store.list() == [] and (not images.exists() or not os.listdir(images))


def test_nothing_outside_the_root_is_touched_whatever_the_layers_say(tmp_path):
    """Links of a lower layer pointing at a directory of the host: a later layer's
    files, hard links and whiteouts through them are refused, and the host's files
    stay as they were."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "victim").write_text("mine")
    store = ImageStore(str(tmp_path / "store"))
    for upper in ([("d/victim", "file", "overwritten")], [("d/.wh.victim", "file", "")],
                  [("d/victim", "hard", "ok")], [("d/.wh..wh..opq", "file", "")]):
        archive = docker_save(tmp_path / "evil.tar", lower=[("d", "sym", str(host)),
                                                            ("ok", "file", "x")], upper=upper)
        with pytest.raises(ImageError):
            store.load_archive(archive, "evil:1")
        assert os.listdir(host) == ["victim"] and (host / "victim").read_text() == "mine"


def _layer(entries) -> bytes:
    """A layer with modes and owners: (name, kind, payload, mode, uid)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, payload, mode, uid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 1_000_000
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE}[kind]
                info.linkname = payload or ""
                tar.addfile(info)
    return buffer.getvalue()


def test_layers_keep_modes_and_owners_and_may_change_a_path_s_type(tmp_path):
    lower = _layer([("bin/", "dir", None, 0o755, 0), ("bin/su", "file", b"su", 0o4755, 0),
                    ("tmp/", "dir", None, 0o1777, 0), ("a/", "dir", None, 0o755, 0),
                    ("a/inner", "file", b"x", 0o644, 0), ("b", "file", b"b", 0o644, 0),
                    ("c", "sym", "/nowhere", 0o777, 0)])
    upper = _layer([("a", "file", b"now a file", 0o600, 1000),
                    ("b/", "dir", None, 0o750, 1000), ("b/c", "file", b"in b", 0o640, 1000),
                    ("c/", "dir", None, 0o755, 0), ("c/d", "file", b"d", 0o644, 0)])
    store = ImageStore(str(tmp_path / "store"))
    store.load_archive(docker_save(tmp_path / "i.tar", lower=lower, upper=upper), "modes:1")
    root = store.rootfs("modes:1")
    su = os.stat(os.path.join(root, "bin/su"))
    assert su.st_mode & 0o7777 == 0o4755, "setuid kept"
    assert os.stat(os.path.join(root, "tmp")).st_mode & 0o7777 == 0o1777, "sticky kept"
    a = os.lstat(os.path.join(root, "a"))
    assert os.path.isfile(os.path.join(root, "a")) and \
        a.st_mode & 0o777 == 0o600 and a.st_mtime == 1_000_000
    assert open(os.path.join(root, "b/c")).read() == "in b"
    assert os.path.isdir(os.path.join(root, "c")) and not os.path.islink(os.path.join(root, "c"))


def test_a_named_user_takes_its_uid_and_primary_group_from_the_image(tmp_path):
    lower = _layer([("etc/", "dir", None, 0o755, 0),
                    ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"
                     b"app:x:1001:2002::/srv:/bin/sh\n", 0o644, 0),
                    ("etc/group", "file", b"root:x:0:\nstaff:x:50:\n", 0o644, 0)])
    store = ImageStore(str(tmp_path / "store"))
    store.load_archive(docker_save(tmp_path / "u.tar", lower=lower, upper=_layer([])), "u:1")
    assert store.numeric_user("u:1", "app") == "1001:2002"
    assert store.numeric_user("u:1", "app:staff") == "1001:50"
    assert store.numeric_user("u:1", "1001") == "1001:2002"
    assert store.numeric_user("u:1", "7") == "7"
    with pytest.raises(ImageError, match="'ghost' is not in its /etc/passwd"):
        store.numeric_user("u:1", "ghost")


@pytest.mark.root
@pytest.mark.slow
def test_layers_keep_their_owners_as_root(tmp_path):
    lower = _layer([("bin/", "dir", None, 0o755, 0), ("bin/su", "file", b"su", 0o4755, 0),
                    ("home/", "dir", None, 0o755, 0), ("home/app", "file", b"x", 0o600, 1000),
                    ("home/link", "sym", "app", 0o777, 1000)])
    store = ImageStore(str(tmp_path / "store"))
    store.load_archive(docker_save(tmp_path / "o.tar", lower=lower, upper=_layer([])), "o:1")
    root = store.rootfs("o:1")
    su = os.stat(os.path.join(root, "bin/su"))
    assert (su.st_uid, su.st_mode & 0o7777) == (0, 0o4755), "chown first: setuid kept"
    assert os.lstat(os.path.join(root, "home/app")).st_uid == 1000
    assert os.lstat(os.path.join(root, "home/link")).st_uid == 1000, "the link itself"


@pytest.mark.root
@pytest.mark.slow
def test_an_owner_no_system_holds_is_refused_as_bad_input(tmp_path):
    store = ImageStore(str(tmp_path / "store"))
    layer = _layer([("f", "file", b"x", 0o644, 1 << 40)])
    with pytest.raises(ImageError, match="cannot hold"):
        store.load_archive(docker_save(tmp_path / "h.tar", lower=layer, upper=_layer([])), "h:1")
    assert store.list() == []
