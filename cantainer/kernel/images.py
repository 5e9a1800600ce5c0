"""Container images: root filesystems unpacked once into this host's store.

    DATA_DIR/images/<name>/<tag>/rootfs/     the unpacked root (containers get an overlayfs on top)
    DATA_DIR/images/<name>/<tag>/image.json  name, tag, source, sha256, size, created

``busybox`` is built from the host's static busybox (Debian ``busybox-static``):
``/bin/busybox``, a link per applet, and the few files under ``/etc`` that
programs expect.  ``import_tarball`` takes any root filesystem tarball (the
Alpine minirootfs, say) and refuses entries that would land outside the
root: absolute paths, ``..``, hard links out, symbolic links whose relative
target climbs out, and entries that pass through a symbolic link.
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

    def _install(self, name: str, tag: str, build, meta: dict) -> dict:
        """Build a root in a scratch directory, then move it into place whole."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=f".{name}-", dir=self.root)
        try:
            rootfs = os.path.join(scratch, "rootfs")
            os.mkdir(rootfs, 0o755)
            build(rootfs)
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
                                                    "sha256": self_digest})


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


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
