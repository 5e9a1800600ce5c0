"""The fence: a host runs service replicas only while it reaches the log.

The log moves a host's replicas elsewhere ``--suspect-after`` + ``--reschedule-after``
seconds after the leader last heard it (``NodeSuspected``, then ``NodeDown``).  So
that two copies of one replica never run at once, this host gives its replicas up
sooner, whatever the reason it cannot take part:

* **cut off** — no read of the log, and no append, has reached a quorum for
  ``hold`` seconds (half of ``--suspect-after``; the runner reads a quiet log at
  least every quarter): the runtime kills its replicas and starts none
  (``actors/runtime.py: Fenced``) until a read succeeds again;
* **the lease** — a file, ``DATA_DIR/replicas.lease``, whose time a thread of the
  daemon renews every ``RENEW`` seconds while it is not cut off; each replica's shim
  kills its container once the file is older than ``hold`` (``kernel/shim.py``), so
  replicas also end with a daemon that was stopped, killed or frozen.

A replica therefore ends at most ``hold`` + ``hold`` seconds after this host last
reached the log, before the others may start it (``--reschedule-after`` is at least
``MIN_RESCHEDULE``).  Every host of a cluster should have the same ``--suspect-after``.
A host that cannot reach a quorum stops its replicas even if no other host can either:
services choose one copy over availability.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

RENEW = 0.2  # seconds between renewals of the lease
MIN_RESCHEDULE = 2.0  # seconds: --reschedule-after's least (the fence's margin)
LEASE_FILE = "replicas.lease"


class Lease:
    def __init__(self, data_dir: str, last_ok, suspect_after: float) -> None:
        self.path = os.path.join(data_dir, LEASE_FILE)
        self.hold = suspect_after / 2
        self._last_ok = last_ok  # () -> monotonic time the log last answered
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cut_off(self) -> bool:
        return time.monotonic() - self._last_ok() > self.hold

    def start(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW):
            if not self.cut_off():
                try:
                    os.utime(self.path)
                except OSError as exc:
                    log.warning("lease: cannot renew %s: %s", self.path, exc)
