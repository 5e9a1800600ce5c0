"""Join tokens and the join secret (hashlib and hmac: no keys, no certificates).

    a join token        CTN1-<SHA-256 of the CA certificate>-<secret>: the joiner pins
                        the CA by it, and proves it holds the secret to the member it
                        talks to (``join_proof``), which checks it
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from cantainer.errors import ConfigError
from cantainer.events.validate import fingerprint

TOKEN_RE = re.compile(r"^CTN1-([0-9a-f]{64})-([A-Za-z0-9_-]{32,})$")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def token(ca_cert_pem: str, secret: str) -> str:
    return f"CTN1-{fingerprint(ca_cert_pem)}-{secret}"


def parse_token(text: str) -> tuple[str, str]:
    """(the CA's fingerprint, the secret) of a join token."""
    found = TOKEN_RE.match(text.strip())
    if found is None:
        raise ConfigError("--join-token is not a Cantainer join token (CTN1-...: see "
                          "'cantainer join-token' on a member)")
    return found.group(1), found.group(2)


def join_proof(secret: str, member_fingerprint: str) -> str:
    """What a joiner sends instead of the secret: an HMAC of it bound to the certificate
    of the member it is talking to, so that a server with another certificate (even one
    the CA signed) learns nothing it could use with a real member."""
    return hmac.new(secret.encode(), b"cantainer join v1 " + member_fingerprint.encode(),
                    hashlib.sha256).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(a.encode()).digest(),
                               hashlib.sha256(b.encode()).digest())
