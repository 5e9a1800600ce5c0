"""Every exception Cantainer raises on purpose, in one tree.

Each error has a *kind*, which crosses the API socket with its message and
decides the CLI's exit code (``EXIT_CODES``; README, "Exit codes"):

    CantainerError               kind "error"        1   base; its message is one line for the user
    ├── Invalid                  kind "invalid"      1   bad input: a field, a flag, a request, a file
    │   ├── InvalidEvent                                 an event (or its data) fails validation
    │   │   └── PayloadTooLarge                          an encoded event exceeds the 64 KiB limit
    │   ├── ConfigError                                  bad daemon flags or a data directory we can't use
    │   └── ImageError                                   an image tarball is unsafe or unreadable
    ├── NotFound                 kind "not_found"    3   no such container, network, image or member
    ├── Conflict                 kind "conflict"     4   the cluster's state refuses it: in use, running...
    │   └── Rejected                                     appended, but log order rejected it
    ├── Unavailable              kind "unavailable"  5   try again: no daemon, no quorum, a host that does not answer
    │   ├── LogUnavailable                               no dqlite leader answered in time
    │   └── DaemonUnreachable                            nothing listens on the API socket
    ├── Internal                 kind "internal"     70  a bug (the daemon logged it)
    └── DqliteError              kind "error"        1   the embedded dqlite node failed to start or stop

``run`` and ``exec`` exit 125 whatever the kind (Docker's convention), so
that their own codes stay the command's.  ``ApiError`` is the CLI's end: an
error line from the daemon, with the kind it came with.
"""

from __future__ import annotations


class CantainerError(Exception):
    """Base of every error Cantainer raises deliberately."""

    kind = "error"


class Invalid(CantainerError):
    """The input is wrong: say what, and where."""

    kind = "invalid"


class InvalidEvent(Invalid):
    """An event, or the data to build one, is not valid."""


class PayloadTooLarge(InvalidEvent):
    """An encoded event is larger than the log accepts."""


class ConfigError(Invalid):
    """A daemon flag or the data directory is unusable."""


class ImageError(Invalid):
    """An image tarball is unsafe or unreadable, or an image reference malformed."""


class NotFound(CantainerError):
    """What the request names does not exist."""

    kind = "not_found"


class Conflict(CantainerError):
    """The cluster's state refuses the request as it stands: a name in use, a running
    container, a network with containers..."""

    kind = "conflict"


class Rejected(Conflict):
    """An event reached the log, but log order rejected it: an earlier event holds
    the name, the subnet overlaps, the network is full..."""


class Unavailable(CantainerError):
    """Something needed does not answer now; the same request may work later."""

    kind = "unavailable"


class LogUnavailable(Unavailable):
    """The replicated log could not be reached: no leader, no quorum."""


class DaemonUnreachable(Unavailable):
    """No daemon answers on the API socket."""


class Internal(CantainerError):
    """A bug: something failed that nothing expected to."""

    kind = "internal"


class DqliteError(CantainerError):
    """The embedded dqlite node could not be created, started or stopped."""


EXIT_CODES = {"error": 1, "invalid": 1, "usage": 2, "not_found": 3, "conflict": 4,
              "unavailable": 5, "internal": 70}
REFUSED = 125  # run and exec: the daemon refused, the command never ran (Docker's)


class ApiError(CantainerError):
    """The daemon refused a request; the message says why, ``kind`` what sort of refusal."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind if kind in EXIT_CODES else "error"


def exit_code(error: CantainerError) -> int:
    return EXIT_CODES.get(error.kind, 1)
