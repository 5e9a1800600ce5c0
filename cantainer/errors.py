"""Every exception Cantainer raises on purpose, in one tree.

    CantainerError                 base; its message is one line for the user
    ├── InvalidEvent               an event (or its data) fails validation
    │   └── PayloadTooLarge        an encoded event exceeds the 64 KiB limit
    ├── Rejected                   log order rejected an appended event (duplicate, overlap...)
    ├── LogUnavailable             no dqlite leader answered in time (no quorum)
    ├── DqliteError                the embedded dqlite node failed to start/stop
    ├── ConfigError                bad daemon flags or a data directory we can't use
    ├── ImageError                 an image is missing, unsafe, or did not download
    └── ApiError                   the daemon answered a request with an error
        └── DaemonUnreachable      nothing listens on the API socket

Anything else escaping is a bug: the CLI prints it as an internal error.
"""


class CantainerError(Exception):
    """Base of every error Cantainer raises deliberately."""


class InvalidEvent(CantainerError):
    """An event, or the data to build one, is not valid."""


class PayloadTooLarge(InvalidEvent):
    """An encoded event is larger than the log accepts."""


class Rejected(CantainerError):
    """An event reached the log, but a projection rejected it: an earlier
    event holds the name, the subnet overlaps, the network is full..."""


class LogUnavailable(CantainerError):
    """The replicated log could not be reached: no leader, no quorum."""


class DqliteError(CantainerError):
    """The embedded dqlite node could not be created, started or stopped."""


class ConfigError(CantainerError):
    """A daemon flag or the data directory is unusable."""


class ImageError(CantainerError):
    """An image is missing, its tarball is unsafe or unreadable, or a download failed."""


class ApiError(CantainerError):
    """The daemon refused a request; the message says why."""


class DaemonUnreachable(ApiError):
    """No daemon answers on the API socket."""
