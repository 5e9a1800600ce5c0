"""The Linux calls Python's ``os`` module lacks, through ctypes on libc.

mount, umount2, pivot_root, prctl and capset: thin wrappers that raise
``OSError`` with errno, as ``os`` functions do; ``open_pty``, a terminal of a
given devpts instance (a container's own); and ``bound_malloc``, glibc's heap kept
to what the daemon uses.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)  # the C library this process already has

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 2

TIOCSPTLCK, TIOCGPTPEER = 0x40045431, 0x5441  # <asm-generic/ioctls.h>

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
SYS_PIVOT_ROOT = 155  # x86_64
SYS_CAPSET = 126      # x86_64
LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl {option}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks)."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(
        _CapData(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF),
        _CapData(effective >> 32, permitted >> 32, inheritable >> 32))
    _check(_libc.syscall(SYS_CAPSET, ctypes.byref(header), data), "capset")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # <malloc.h>


def bound_malloc(arenas: int = 2, threshold: int = 128 * 1024) -> bool:
    """A daemon's many threads (libdqlite's, the actors', the executor's) each got a
    glibc arena of their own, and glibc's mmap threshold grows with every large block
    freed (libdqlite's snapshots copy the database), so freed memory stayed in the
    arenas: 170 MiB RSS after 1 M events against 113 MiB with ``arenas`` arenas and a
    fixed ``threshold`` for both mmap and trimming (``bench.restart``).  Before any
    thread starts.  Whether the C library took it (one that is not glibc may not)."""
    mallopt = getattr(_libc, "mallopt", None)
    return mallopt is not None and all(
        mallopt(option, value) == 1 for option, value in (
            (M_ARENA_MAX, arenas), (M_MMAP_THRESHOLD, threshold), (M_TRIM_THRESHOLD, threshold)))


def open_pty(ptmx: str) -> tuple[int, int]:
    """(master, slave) of a new pseudo-terminal of the devpts whose ``ptmx`` this is, so
    that its name resolves where that devpts is mounted (``tty`` inside a container);
    the slave comes from the master (TIOCGPTPEER), never by path."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
        return master, fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        raise
