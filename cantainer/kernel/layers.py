"""Applying an image's layer to a root directory, entry by entry, never through a link.

Every path of a layer is walked from the root one directory at a time, each opened
relative to the one before with ``O_NOFOLLOW | O_DIRECTORY`` (``openat``): a
component that is a symbolic link — this layer's or one below's — refuses the layer,
so nothing is ever written, linked, removed or changed outside the root, whatever the
layers below hold.  An entry replaces whatever its path held (a file over a directory,
a link over a file: the old one is removed first, never written through); a hard
link's target is walked the same way and must be a regular file of the root.  Modes
are kept whole (setuid, setgid, sticky: an image's ``su`` stays one), owners are the
numbers the layer gives, times are kept.  Whiteouts (OCI, as Docker writes them):
``.wh.NAME`` removes NAME of the layers below, ``.wh..wh..opq`` empties its
directory of what the layers below put there.  Device nodes are skipped (a container
gets its own minimal ``/dev``); FIFOs are made.  Every refusal is one
``ImageError`` naming the entry.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile

from cantainer.errors import ImageError

WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Owners as the layer gives them when this process may give files away (the daemon is
# root); else this user's, as tar does.
_OWNERS = os.geteuid() == 0


def _parts(name: str) -> list[str]:
    """A layer's path as components below the root; refused if absolute or climbing."""
    if name.startswith("/"):
        raise ImageError(f"layer entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"layer entry {name!r} contains '..'")
    return parts


class _Root:
    """A root directory, held open; paths inside it walked without following links."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, _DIR)

    def close(self) -> None:
        os.close(self.fd)

    def parent(self, parts: list[str], name: str, create: bool = True) -> int | None:
        """An fd of the directory holding ``parts[-1]`` (directories made as needed when
        ``create``; None if one is missing and not ``create``).  The caller closes it."""
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise ImageError(
                            f"layer entry {name!r} goes through {'/'.join(parts[:i + 1])!r}"
                            ", which is no directory (a symbolic link or a file)") from None
                    raise
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int) -> None:
    """Whatever ``name`` is in that directory, gone (a directory with all it holds; a
    link itself, never what it points to)."""
    st = _lstat(name, dir_fd)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def apply_layer(layer: tarfile.TarFile, rootfs: str) -> None:
    """One layer over what ``rootfs`` holds (the layers below, applied before)."""
    root = _Root(rootfs)
    try:
        members = layer.getmembers()
        for m in members:  # whiteouts act on the layers below: first
            parts = _parts(m.name)
            if not parts or not parts[-1].startswith(WHITEOUT):
                continue
            fd = root.parent(parts, m.name, create=False)
            if fd is None:
                continue
            try:
                if parts[-1] == OPAQUE:
                    for child in os.listdir(fd):
                        _remove(child, fd)
                else:
                    target = parts[-1][len(WHITEOUT):]
                    if target in ("", ".", ".."):
                        raise ImageError(f"layer entry {m.name!r} is no whiteout")
                    _remove(target, fd)
            finally:
                os.close(fd)
        for m in members:
            parts = _parts(m.name)
            if not parts or parts[-1].startswith(WHITEOUT):
                continue
            fd = root.parent(parts, m.name)
            try:
                _entry(layer, m, parts, fd, root)
            finally:
                os.close(fd)
    except OSError as exc:
        raise ImageError(f"cannot apply the layer: {exc.strerror or exc}") from None
    except (OverflowError, ValueError) as exc:  # an owner or a time no system has
        raise ImageError(f"the layer has an entry this system cannot hold: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise ImageError(f"the layer is not a whole tar archive: {exc}") from None
    finally:
        root.close()


def _entry(layer: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str], fd: int,
           root: _Root) -> None:
    name = parts[-1]
    old = _lstat(name, fd)
    mode = stat.S_IMODE(m.mode)
    if m.isdir():
        if old is None or not stat.S_ISDIR(old.st_mode):
            _remove(name, fd)
            os.mkdir(name, 0o700, dir_fd=fd)
        _finish(name, fd, m, mode)
        return
    if old is not None:
        _remove(name, fd)
    if m.isreg():
        source = layer.extractfile(m)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                      os.O_CLOEXEC, 0o600, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            shutil.copyfileobj(source, f, 1 << 20)
        _finish(name, fd, m, mode)
    elif m.issym():
        os.symlink(m.linkname, name, dir_fd=fd)
        if _OWNERS:
            os.chown(name, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
    elif m.islnk():
        target = _parts(m.linkname)
        if not target:
            raise ImageError(f"layer entry {m.name!r} is a hard link to the root")
        tfd = root.parent(target, m.name, create=False)
        if tfd is None:
            raise ImageError(f"layer entry {m.name!r} links to {m.linkname!r}, which is "
                             "not there")
        try:
            st = _lstat(target[-1], tfd)
            if st is None or not stat.S_ISREG(st.st_mode):
                raise ImageError(f"layer entry {m.name!r} links to {m.linkname!r}, which "
                                 "is no regular file of the image")
            os.link(target[-1], name, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(tfd)
    elif m.isfifo():
        os.mkfifo(name, 0o600, dir_fd=fd)
        _finish(name, fd, m, mode)
    # character and block devices: skipped (the container's /dev is its own)


def _finish(name: str, fd: int, m: tarfile.TarInfo, mode: int) -> None:
    """Owner, then mode (chown clears setuid), then times.  ``name`` is no link: this
    layer just made it, or found it a directory (Linux has no chmod that refuses a
    link; nothing else writes in a root being built)."""
    if _OWNERS:
        os.chown(name, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
    os.chmod(name, mode, dir_fd=fd)
    os.utime(name, (m.mtime, m.mtime), dir_fd=fd, follow_symlinks=False)
