"""Container images: root filesystems unpacked once into this host's store.

    DATA_DIR/images/<name>/<tag>/rootfs/     the unpacked root (containers get an overlayfs on top)
    DATA_DIR/images/<name>/<tag>/image.json  name, tag, source, sha256 (of the archive),
                                             kind (rootfs | image), size, created, and
                                             for a loaded image its config (run's defaults)
    DATA_DIR/images/<name>/<tag>/archive     the archive it was made from: what another
                                             host fetches (its digest is in the log)

``busybox`` is built from the host's static busybox (Debian ``busybox-static``):
``/bin/busybox``, a link per applet, and the few files under ``/etc`` that
programs expect.  ``import_tarball`` takes any root filesystem tarball (the
Alpine minirootfs, say) and refuses entries that would land outside the
root: absolute paths, ``..``, hard links out, symbolic links whose relative
target climbs out, and entries that pass through a symbolic link.
``load_archive`` (``image load``) takes a ``docker save`` archive or an OCI image
layout tarball: every blob named by its digest is checked against it, the layers
are applied in order with the same refusals, whiteouts honoured (``.wh.NAME``
removes NAME of the layers below, ``.wh..wh..opq`` empties its directory), and the
image's config (entrypoint, cmd, env, working directory, user) is kept as ``run``'s
defaults.
Downloads (``image pull``) are ``cantainer/pull.py``'s: this is the store only.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time

from cantainer.errors import ImageError, NotFound
from cantainer.kernel.layers import apply_layer

DEFAULT_IMAGE = "busybox"
BUSYBOX = "/bin/busybox"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "# no resolver configured by cantainer\n",
    "etc/os-release": 'NAME="Cantainer busybox"\nID=busybox\nPRETTY_NAME="busybox (cantainer)"\n',
}


def parse_ref(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag); the tag defaults to ``latest``."""
    name, colon, tag = ref.partition(":")
    tag = tag if colon else "latest"
    if not NAME_RE.match(name) or not TAG_RE.match(tag):
        raise ImageError(f"{ref!r} is not an image name (NAME[:TAG], lowercase name)")
    return name, tag


_LOCKS: dict[str, threading.RLock] = {}


class ImageStore:
    def __init__(self, data_dir: str) -> None:
        self.root = os.path.join(data_dir, "images")
        # One lock per store directory, shared by every ImageStore of it in this process.
        self._lock = _LOCKS.setdefault(os.path.abspath(self.root), threading.RLock())

    def _dir(self, name: str, tag: str) -> str:
        return os.path.join(self.root, name, tag)

    def rootfs(self, ref: str) -> str:
        """The unpacked root of an image; ``busybox`` is built on first use (once: the
        API and the runtime actor may both ask first)."""
        name, tag = parse_ref(ref)
        path = os.path.join(self._dir(name, tag), "rootfs")
        if not os.path.isdir(path):
            if (name, tag) == (DEFAULT_IMAGE, "latest"):
                with self._lock:
                    if not os.path.isdir(path):
                        self.build_busybox()
            else:
                raise NotFound(f"no image {name}:{tag} on this host "
                                 "(see 'cantainer image ls', 'image import', 'image pull')")
        return path

    def list(self) -> list[dict]:
        found = []
        if not os.path.isdir(self.root):
            return found
        for name in sorted(os.listdir(self.root)):
            for tag in sorted(os.listdir(os.path.join(self.root, name))):
                try:
                    with open(os.path.join(self._dir(name, tag), "image.json")) as f:
                        found.append(json.load(f))
                except (OSError, ValueError):
                    continue  # half-written: not an image (yet)
        return found

    def remove(self, ref: str) -> str:
        name, tag = parse_ref(ref)
        path = self._dir(name, tag)
        if not os.path.isdir(path):
            raise NotFound(f"no image {name}:{tag} on this host")
        shutil.rmtree(path)
        try:
            os.rmdir(os.path.join(self.root, name))
        except OSError:
            pass
        return f"{name}:{tag}"

    # -- adding images ----------------------------------------------------------------

    def _install(self, name: str, tag: str, build, meta: dict,
                 archive: str | None = None) -> dict:
        """Build a root in a scratch directory, then move it into place whole; the
        ``archive`` it was made from is kept beside it (another host may fetch it)."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=f".{name}-", dir=self.root)
        try:
            rootfs = os.path.join(scratch, "rootfs")
            os.mkdir(rootfs, 0o755)
            build(rootfs)
            if archive is not None:
                shutil.copyfile(archive, os.path.join(scratch, "archive"))
                meta = {**meta, "archive_size": os.path.getsize(archive)}
            size = sum(os.lstat(os.path.join(d, f)).st_size
                       for d, _, files in os.walk(rootfs) for f in files)
            meta = {"name": name, "tag": tag, "size": size, "created": time.time(), **meta}
            with open(os.path.join(scratch, "image.json"), "w") as f:
                json.dump(meta, f)
            target = self._dir(name, tag)
            with self._lock:
                if os.path.isdir(target):
                    shutil.rmtree(target)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(scratch, target)
            return meta
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def has(self, ref: str) -> bool:
        name, tag = parse_ref(ref)
        return os.path.isdir(os.path.join(self._dir(name, tag), "rootfs"))

    def archive(self, ref: str) -> tuple[str, dict]:
        """The archive an image was made from, and its metadata (``sha256``, ``kind``)."""
        name, tag = parse_ref(ref)
        path = os.path.join(self._dir(name, tag), "archive")
        try:
            with open(os.path.join(self._dir(name, tag), "image.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            raise NotFound(f"no image {name}:{tag} on this host") from None
        if not os.path.isfile(path):
            raise NotFound(f"image {name}:{tag} on this host keeps no archive (made before "
                           "images were shared: import it again)")
        return path, meta

    def add(self, ref: str, kind: str, path: str, source: str) -> dict:
        """An image from an archive another host made it from: made the same way."""
        if kind == "image":
            return self.load_archive(path, ref, source=source)
        return self.import_tarball(ref, path, source=source)

    def config(self, ref: str) -> dict:
        """A loaded image's config, ``run``'s defaults (empty for other images)."""
        name, tag = parse_ref(ref)
        try:
            with open(os.path.join(self._dir(name, tag), "image.json")) as f:
                return json.load(f).get("config") or {}
        except (OSError, ValueError):
            return {}

    def numeric_user(self, ref: str, user: str) -> str:
        """An image's ``USER`` as UID[:GID]: names looked up in the image's own
        ``/etc/passwd`` and ``/etc/group`` (read as the container would see them)."""
        name, _, group = user.partition(":")
        root = self.rootfs(ref)
        entry = _entry_in(root, "etc/passwd", name)
        uid = str(int(name)) if name.isdigit() else entry[2] if entry else None
        if uid is None:
            raise ImageError(f"the image's user {name!r} is not in its /etc/passwd")
        if group:  # its primary group otherwise, as Docker takes it
            found = _entry_in(root, "etc/group", group)
            gid = str(int(group)) if group.isdigit() else found[2] if found else None
            if gid is None:
                raise ImageError(f"the image's group {group!r} is not in its /etc/group")
        else:
            gid = entry[3] if entry and len(entry) > 3 and entry[3].isdigit() else None
        return uid if gid is None else f"{uid}:{gid}"

    def load_archive(self, archive_path: str, ref: str | None = None,
                     source: str | None = None) -> dict:
        """``image load``: a ``docker save`` archive or an OCI image layout tarball, under
        ``ref`` or the name the archive gives (its last path part: ``nginx:1.25``)."""
        try:
            outer = tarfile.open(archive_path, "r:*")
        except (OSError, tarfile.TarError) as exc:
            raise ImageError(f"{archive_path} is not a readable tar archive: {exc}") from None
        with outer:
            members = {m.name.removeprefix("./"): m for m in outer.getmembers()}
            check_members(list(members.values()))
            named, config, layers = _read_archive(outer, members)
            if ref is None and named is None:
                raise ImageError(f"{archive_path} names no image: give it one, NAME[:TAG]")
            name, tag = parse_ref(ref or named.rsplit("/", 1)[-1])

            def build(rootfs: str) -> None:
                for layer in layers:
                    try:
                        with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as t:
                            apply_layer(t, rootfs)
                    except ImageError as exc:
                        raise ImageError(f"layer {layer.name}: {exc}") from None
                    except (tarfile.TarError, EOFError, OSError) as exc:
                        raise ImageError(f"layer {layer.name} is not a tar archive: {exc}") \
                            from None
                for d in ("proc", "sys", "dev", "tmp", "etc"):
                    os.makedirs(os.path.join(rootfs, d), exist_ok=True)

            return self._install(name, tag, build, {
                "source": source or os.path.abspath(archive_path),
                "sha256": file_sha256(archive_path), "kind": "image", "config": _run_defaults(config)}, archive_path)

    def build_busybox(self) -> dict:
        if not os.path.exists(BUSYBOX):
            raise ImageError(f"{BUSYBOX} is missing: install the Debian package busybox-static")

        def build(rootfs: str) -> None:
            for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc",
                      "sys", "dev", "var/log", "run"):
                os.makedirs(os.path.join(rootfs, d), exist_ok=True)
            os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
            shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin/busybox"))
            applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                                     check=True).stdout.split()
            for applet in applets:
                link = os.path.join(rootfs, applet)
                if applet != "bin/busybox" and not os.path.lexists(link):
                    os.makedirs(os.path.dirname(link), exist_ok=True)
                    os.symlink("/bin/busybox", link)
            for path, text in ETC_FILES.items():
                with open(os.path.join(rootfs, path), "w") as f:
                    f.write(text)

        return self._install(DEFAULT_IMAGE, "latest", build, {"source": BUSYBOX})

    def import_tarball(self, ref: str, tarball: str, *, source: str | None = None,
                       sha256: str | None = None) -> dict:
        name, tag = parse_ref(ref)
        try:
            archive = tarfile.open(tarball, "r:*")
        except (OSError, tarfile.TarError) as exc:
            raise ImageError(f"{tarball} is not a readable tar archive: {exc}") from None
        with archive:
            members = archive.getmembers()
            check_members(members)
            self_digest = sha256 or file_sha256(tarball)

            def build(rootfs: str) -> None:
                archive.extractall(rootfs, members=[m for m in members if m.isfile() or
                                                    m.isdir() or m.issym() or m.islnk()],
                                   filter="tar")
                for d in ("proc", "sys", "dev", "tmp", "etc"):
                    os.makedirs(os.path.join(rootfs, d), exist_ok=True)

            return self._install(name, tag, build, {"source": source or os.path.abspath(tarball),
                                                    "sha256": self_digest, "kind": "rootfs"},
                                 tarball)


def check_members(members: list[tarfile.TarInfo]) -> None:
    """Refuse a tarball any entry of which would escape the root it is unpacked into."""
    links: set[str] = set()
    for m in members:
        path = m.name
        if path.startswith("/"):
            raise ImageError(f"tar entry {path!r} is an absolute path")
        norm = posixpath.normpath(path)
        if norm == ".." or norm.startswith("../") or "/../" in f"/{path}/":
            raise ImageError(f"tar entry {path!r} contains '..'")
        parts = norm.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise ImageError(f"tar entry {path!r} goes through the symbolic link "
                                 f"{'/'.join(parts[:i])!r}")
        if m.islnk():
            target = posixpath.normpath(m.linkname)
            if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise ImageError(f"tar entry {path!r} is a hard link out of the root "
                                 f"({m.linkname!r})")
        if m.issym():
            links.add(norm)
            if not m.linkname.startswith("/"):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(norm), m.linkname))
                if target == ".." or target.startswith("../"):
                    raise ImageError(f"tar entry {path!r} is a symbolic link out of the root "
                                     f"({m.linkname!r})")


def _read_archive(outer: tarfile.TarFile, members: dict) -> tuple[str | None, dict, list]:
    """(the name it gives or None, the image's config, its layers' members, in order) of
    an OCI layout (``index.json``) or a ``docker save`` archive (``manifest.json``)."""
    def blob(path: str, digest: str | None = None) -> bytes:
        member = members.get(path)
        if member is None or not member.isfile():
            raise ImageError(f"the archive has no {path}")
        data = outer.extractfile(member).read()
        _check_digest(path, data, digest)
        return data

    def document(path: str, digest: str | None = None):
        try:
            return json.loads(blob(path, digest))
        except ValueError as exc:
            raise ImageError(f"{path} is not JSON: {exc}") from None

    try:
        if "index.json" in members:
            index = document("index.json")
            entry = index["manifests"][0]
            manifest = document(_blob_path(entry["digest"]), entry["digest"])
            if "layers" not in manifest:
                raise ImageError("the archive's image is an index of several (a multi-"
                                 "platform image): save one platform's")
            config = document(_blob_path(manifest["config"]["digest"]),
                              manifest["config"]["digest"])
            layers = [_checked_member(outer, members, _blob_path(d["digest"]), d["digest"])
                      for d in manifest["layers"]]
            named = (entry.get("annotations") or {}).get("io.containerd.image.name")
            if named is None and "manifest.json" in members:
                named = (document("manifest.json")[0].get("RepoTags") or [None])[0]
        elif "manifest.json" in members:
            manifest = document("manifest.json")[0]
            config_path = manifest["Config"]
            config = document(config_path, _digest_in_name(config_path))
            diff_ids = config.get("rootfs", {}).get("diff_ids") or []
            layers = [_checked_member(outer, members, path, _digest_in_name(path) or
                                      (diff_ids[i] if i < len(diff_ids) else None))
                      for i, path in enumerate(manifest["Layers"])]
            named = (manifest.get("RepoTags") or [None])[0]
        else:
            raise ImageError("the archive is neither an OCI image layout (index.json) nor "
                             "a 'docker save' archive (manifest.json)")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ImageError(f"the archive's manifest is not one: missing {exc}") from None
    return named, config, layers


def _blob_path(digest: str) -> str:
    algorithm, _, hexdigest = str(digest).partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ImageError(f"{digest!r} is not a sha256 digest")
    return f"blobs/sha256/{hexdigest}"


def _digest_in_name(path: str) -> str | None:
    """A ``docker save`` name that is its own digest (``<hex>.json``, blobs/sha256/<hex>)."""
    found = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", path)
    return f"sha256:{found.group(1)}" if found else None


def _check_digest(path: str, data: bytes, digest: str | None) -> None:
    if digest is not None and f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        raise ImageError(f"{path} does not match its digest {digest}")


def _checked_member(outer, members: dict, path: str, digest: str | None):
    member = members.get(path)
    if member is None or not member.isfile():
        raise ImageError(f"the archive has no layer {path}")
    if digest is not None:
        sha = hashlib.sha256()
        with outer.extractfile(member) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        if f"sha256:{sha.hexdigest()}" != digest:
            raise ImageError(f"layer {path} does not match its digest {digest}")
    return member


def _entry_in(root: str, table: str, name: str) -> list[str] | None:
    """The line of an image's passwd or group file for ``name`` (or that number, in the
    third field), split on ``:``; None if there is none."""
    from cantainer.kernel.process import resolve_in  # the image's links, inside its root
    try:
        with open(resolve_in(root, table)) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[2].isdigit() and (
                        fields[0] == name or (name.isdigit() and int(fields[2]) == int(name))):
                    return fields
    except (OSError, ImageError, ValueError):
        pass
    return None


def _run_defaults(config: dict) -> dict:
    """What ``run`` takes from an image's config when not told otherwise."""
    c = config.get("config") or {}
    def strings(value):
        return [str(x) for x in value] if isinstance(value, list) else None
    return {"entrypoint": strings(c.get("Entrypoint")), "cmd": strings(c.get("Cmd")),
            "env": strings(c.get("Env")) or [], "workdir": c.get("WorkingDir") or None,
            "user": c.get("User") or None}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
