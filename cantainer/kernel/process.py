"""A container's first process: namespaces, its root, then exec.

``start(spec)`` forks PID 1 of a new PID namespace.  The child unshares
mount, UTS and IPC namespaces, joins the container's network namespace, and
before ``exec`` builds its world in this order:

1. every mount private, then an overlayfs (image below, the container's own
   upper layer above) as the new root;
2. a fresh ``/proc``; a minimal ``/dev`` (null, zero, full, random, urandom,
   tty, pts, shm, and the fd links); ``/sys`` read-only;
3. Docker's masked paths (``/proc/kcore``, ``/sys/firmware``...) and
   read-only paths (``/proc/sys``, ``/proc/sysrq-trigger``...);
4. with a terminal (``run -t``): a pseudo-terminal of the container's own devpts
   as its stdio, the master sent to the shim;
5. ``pivot_root`` into it (never ``chroot``) and the old root detached;
6. the host name; Docker's 14 default capabilities, bounding set included;
   ``no_new_privs``; then ``execvpe``.

The parent (the shim) puts the child in its cgroup before letting it go on.
An exec that fails exits 127 (no such command) or 126 (cannot run it).
"""

from __future__ import annotations

import collections
import fcntl
import os
import signal
import socket
import struct
import termios
import warnings  # noqa: F401 -- os.execvpe imports it lazily, after pivot_root: too late

from cantainer.kernel import syscalls as sc

# Docker's default capability set.
DEFAULT_CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
    "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18,
    "MKNOD": 27, "AUDIT_WRITE": 29, "SETFCAP": 31,
}
DEFAULT_CAP_MASK = sum(1 << bit for bit in DEFAULT_CAPS.values())  # 0xa80425fb
# Every capability, by its number in <linux/capability.h> (--cap-add, --cap-drop).
CAPS = {name: bit for bit, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"))}
assert all(CAPS[name] == bit for name, bit in DEFAULT_CAPS.items())


# run --init: this static binary (built by scripts/setup from init.c beside it) is bound
# read-only at INIT_PATH in the container and runs the command as its child.
INIT_BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cantainer-init")
INIT_PATH = "/sbin/cantainer-init"


def cap_mask(add=(), drop=()) -> int:
    """The set ``--cap-add``/``--cap-drop`` give, as Docker computes it (names without
    CAP_): add ALL, then drop some; or drop ALL, then add some; else Docker's default
    set less ``drop`` plus ``add``."""
    for name in (*add, *drop):
        if name != "ALL" and name not in CAPS:
            raise ValueError(f"unknown capability {name!r}")
    bits = lambda names: sum(1 << CAPS[n] for n in names if n != "ALL")  # noqa: E731
    if "ALL" in add:
        return (1 << len(CAPS)) - 1 & ~bits(drop)
    base = 0 if "ALL" in drop else DEFAULT_CAP_MASK & ~bits(drop)
    return base | bits(add)

MASKED = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware", "/sys/devices/virtual/powercap")
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
           "urandom": (1, 9), "tty": (5, 0)}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# What to start (a namedtuple: the shim imports this module, and every import
# costs container start-up time):
#   lower      the image's root filesystem
#   state_dir  upper/, work/, rootfs/ of this container
#   hostname, command (tuple), env (tuple of K=V)
#   netns      a name under /run/netns; None: a new, empty one
#   console    give the process a terminal of the container's own devpts (so ``tty``
#              names it inside), its master sent on this socket (an fd); None: none
#   size       that terminal's (rows, cols)
#   workdir    its working directory (made if missing); None: /
#   uid, gid   who it runs as; None: root
#   caps       its capabilities (a mask: ``cap_mask``)
#   mounts     ((host path, path inside, read-only), ...): -v
#   tmpfs      (path inside, ...): --tmpfs
#   read_only  the root file system read-only (--read-only)
ProcessSpec = collections.namedtuple(
    "ProcessSpec", "lower state_dir hostname command env netns console size workdir uid gid "
    "caps mounts tmpfs read_only",
    defaults=((), None, None, None, None, None, None, DEFAULT_CAP_MASK, (), (), False))


def _mkdirs(*paths: str) -> None:
    for path in paths:
        os.makedirs(path, exist_ok=True)


def _build_root(spec: ProcessSpec) -> str:
    upper, work, root = (os.path.join(spec.state_dir, d) for d in ("upper", "work", "rootfs"))
    _mkdirs(upper, work, root)
    sc.mount("none", "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("overlay", root, "overlay", 0,
             f"lowerdir={spec.lower},upperdir={upper},workdir={work}")
    for d in ("proc", "dev", "sys", "tmp"):
        _mkdirs(os.path.join(root, d))
    sc.mount("proc", f"{root}/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    sc.mount("tmpfs", f"{root}/dev", "tmpfs", sc.MS_NOSUID, "mode=755,size=65536k")
    for name, (major, minor) in DEVICES.items():
        os.mknod(f"{root}/dev/{name}", 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(f"{root}/dev/{name}", 0o666)
    _mkdirs(f"{root}/dev/pts", f"{root}/dev/shm")
    sc.mount("devpts", f"{root}/dev/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", f"{root}/dev/ptmx")
    sc.mount("shm", f"{root}/dev/shm", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
             "mode=1777,size=65536k")
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{link}")
    sc.mount("sysfs", f"{root}/sys", "sysfs",
             sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    for path in MASKED:
        target = root + path
        if os.path.isdir(target):
            sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY)
        elif os.path.exists(target):
            sc.mount(f"{root}/dev/null", target, None, sc.MS_BIND)
    for path in READ_ONLY:
        target = root + path
        if os.path.exists(target):
            sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(target, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)
    for source, path, read_only in spec.mounts:
        target = resolve_in(root, path)
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                open(target, "a").close()
        sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
        if read_only:
            sc.mount(source, target, None,
                     sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)
    for path in spec.tmpfs:
        target = resolve_in(root, path)
        os.makedirs(target, exist_ok=True)
        sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 "mode=1777")
    if spec.workdir:  # made while the root is still writable
        os.makedirs(resolve_in(root, spec.workdir), exist_ok=True)
    if spec.read_only:  # the root mount only: /dev, /proc, volumes and tmpfs stay as they are
        sc.mount(root, root, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
    return root


def resolve_in(root: str, path: str, hops: int = 40) -> str:
    """``path`` as the container will see it, below ``root``: symbolic links on the way
    are followed as inside the container (an absolute one from ``root``, ``..`` never
    above it), so an image's link cannot send a mount, or a directory made for one,
    to the host's files (what runc's securejoin does)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    here: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == "..":
            if here:
                here.pop()
            continue
        candidate = os.path.join(root, *here, part)
        if os.path.islink(candidate):
            hops -= 1
            if hops < 0:
                raise OSError(f"too many symbolic links in {path}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                here = []
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        here.append(part)
    return os.path.join(root, *here)


def _enter_root(root: str) -> None:
    """pivot_root(".", ".") then detach the old root stacked beneath (runc's way)."""
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")


def _take_terminal(root: str, console: int, size) -> None:
    """A terminal of the container's devpts as stdin, stdout, stderr and controlling
    terminal; its master goes to the shim on ``console`` (runc's console socket)."""
    master, slave = sc.open_pty(f"{root}/dev/pts/ptmx")
    if size:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    with socket.socket(fileno=console) as sock:
        socket.send_fds(sock, [b"T"], [master])
    os.close(master)
    os.setsid()
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def drop_privileges(mask: int = DEFAULT_CAP_MASK, uid: int | None = None,
                    gid: int | None = None) -> None:
    """The capabilities of ``mask`` (bounding set too), the user, then ``no_new_privs``.
    A user other than root keeps none in effect (the kernel clears them on setuid), as
    under Docker."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    mask &= (1 << last + 1) - 1  # ALL is what this kernel knows
    for cap in range(last + 1):
        if not mask >> cap & 1:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    if uid is not None:
        os.setgroups([])
        os.setgid(gid or 0)
        os.setuid(uid)
    if not uid:
        sc.capset(mask, mask, 0)
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def _child(spec: ProcessSpec, go: int, stdio: tuple[int, int, int]) -> None:
    """In the forked child, PID 1 of its namespace. Never returns."""
    try:
        for fd, target in zip(stdio, (0, 1, 2), strict=True):
            os.dup2(fd, target)
        if os.read(go, 1) != b"g":  # in our cgroup, our network made; or not to start
            os._exit(125)
        os.unshare(os.CLONE_NEWNS | os.CLONE_NEWUTS | os.CLONE_NEWIPC)
        if spec.netns:
            fd = os.open(f"/run/netns/{spec.netns}", os.O_RDONLY)
            os.setns(fd, os.CLONE_NEWNET)
            os.close(fd)
        else:
            os.unshare(os.CLONE_NEWNET)
        root = _build_root(spec)
        if spec.console is not None:
            _take_terminal(root, spec.console, spec.size)
        socket.sethostname(spec.hostname)
        _enter_root(root)
        if spec.workdir:
            os.chdir(spec.workdir)
        drop_privileges(spec.caps, spec.uid, spec.gid)
        os.closerange(3, 65536)
        for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        env = dict(e.split("=", 1) for e in spec.env)
        env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOSTNAME", spec.hostname)
        env.setdefault("HOME", "/root" if not spec.uid else "/")
        try:
            os.execvpe(spec.command[0], list(spec.command), env)
        except FileNotFoundError:  # the command, or the interpreter its #! line names
            os.write(2, f"cantainer: {spec.command[0]}: no such file or directory\n".encode())
            os._exit(127)
        except PermissionError as exc:
            os.write(2, f"cantainer: {spec.command[0]}: {exc.strerror}\n".encode())
            os._exit(126)
    except BaseException as exc:  # the container never started: say why, exit like Docker
        os.write(2, f"cantainer: cannot start the container: {exc}\n".encode())
        os._exit(125)
    os._exit(125)


def start(spec: ProcessSpec, stdio: tuple[int, int, int], before_exec=lambda pid: None) -> int:
    """Fork the container's PID 1; ``before_exec(pid)`` runs in the parent first (the
    child waits for it: it does nothing before).  If that raises, the child is killed
    before it has done anything, and the exception goes on.

    Returns the child's host pid.
    """
    go_read, go_write = os.pipe()
    os.unshare(os.CLONE_NEWPID)  # for children of this process only
    pid = os.fork()
    if pid == 0:
        os.close(go_write)
        _child(spec, go_read, stdio)
    os.close(go_read)
    try:
        before_exec(pid)
    except BaseException:
        os.close(go_write)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.write(go_write, b"g")
    os.close(go_write)
    return pid


def exit_code(status: int) -> int:
    """128 + signal for a killed process, as shells and Docker report it."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else \
        128 + os.WTERMSIG(status)
