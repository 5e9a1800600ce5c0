"""This member's credentials on disk: ``DATA_DIR/tls/`` (0700, files 0600), their one owner.

    ca.crt     the cluster CA's certificate: it pins the cluster
    node.key   this member's Ed25519 key (TLS on every channel)
    node.crt   its certificate, signed by the CA, naming the node and its address
    node.kx    its X25519 key: the keys it shares with each other member (heartbeats)
    trusted    the certificates of the live members as this host last knew them: a
               restarted member admits them before its state has caught up (the log
               stays the truth; this is its last word, kept)
    revoked    the certificates of the members that left, likewise: refused from the
               first moment after a restart

A member that has them rejoins with them after a restart, no token needed.
"""

from __future__ import annotations

import os

from cantainer.events.validate import fingerprint

FILES = ("ca.crt", "node.key", "node.crt", "node.kx")


class Credentials:
    def __init__(self, data_dir: str) -> None:
        self.dir = os.path.join(data_dir, "tls")
        self.ca = self.key = self.cert = self.kx = ""

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def exist(self) -> bool:
        return all(os.path.exists(self.path(f)) for f in FILES)

    def load(self) -> Credentials:
        self.ca, self.key, self.cert, self.kx = (_read(self.path(f)) for f in FILES)
        return self

    def save(self, ca: str, key: str, cert: str, kx: str) -> Credentials:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for name, text in zip(FILES, (ca, key, cert, kx), strict=True):
            tmp = self.path(name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(name))
        self.ca, self.key, self.cert, self.kx = ca, key, cert, kx
        return self

    def remove(self) -> None:
        for name in (*FILES, "trusted", "revoked"):
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                pass

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def load_gate(creds: Credentials) -> tuple[frozenset[str], frozenset[str]]:
    """The gate's sets as this host last saved them: (trusted, revoked)."""
    return _load_set(creds.path("trusted")), _load_set(creds.path("revoked"))


def save_gate(creds: Credentials, trusted: frozenset[str], revoked: frozenset[str]) -> None:
    _save_set(creds.path("trusted"), trusted)
    _save_set(creds.path("revoked"), revoked)


def _load_set(path: str) -> frozenset[str]:
    try:
        with open(path) as f:
            return frozenset(line.strip() for line in f if line.strip())
    except FileNotFoundError:
        return frozenset()


def _save_set(path: str, fingerprints: frozenset[str]) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{fp}\n" for fp in sorted(fingerprints)))
    os.replace(tmp, path)
