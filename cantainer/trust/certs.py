"""The daemon's keys and certificates, made by a child running ``trust/pki.py``.

    new_cluster(name, address)    the CA and the first member's key and certificate
    new_member(name)              a joiner's key, X25519 key and certificate request
    sign(ca_key, ca, csr, ...)    a joiner's certificate (``Invalid``: not a request)
    issued_by(cert, ca)           whether the CA signed the certificate

Each call is one short-lived ``python -m cantainer.trust.pki`` (about 0.1 s):
these happen when a cluster begins and when a host joins, and a daemon that
imported ``cryptography`` for them would carry its 10 MiB all its life.  The
request and its answer (private keys among them) go through pipes, never a file.
"""

from __future__ import annotations

import json
import subprocess

from cantainer import child
from cantainer.errors import Internal, Invalid

TIMEOUT = 30.0


def _call(op: str, *args):
    try:
        done = subprocess.run(child.argv("cantainer.trust.pki"),
                              input=json.dumps({"op": op, "args": args}), env=child.ENV,
                              capture_output=True, text=True, timeout=TIMEOUT)
        answer = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise Internal(f"the key and certificate child ({op}) failed: {exc}") from None
    if answer is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Internal(f"the key and certificate child ({op}) exited {done.returncode}: "
                       f"{last}")
    if "invalid" in answer:
        raise Invalid(answer["invalid"])
    return answer["result"]


def new_cluster(name: str, address: str) -> tuple[str, str, str, str, str]:
    """(CA key, CA certificate, key, certificate, X25519 key)."""
    return tuple(_call("new_cluster", name, address))


def new_member(name: str) -> tuple[str, str, str]:
    """(key, X25519 key, certificate request)."""
    return tuple(_call("new_member", name))


def sign(ca_key_pem: str, ca_cert_pem: str, csr_pem: str, name: str, address: str) -> str:
    return _call("sign", ca_key_pem, ca_cert_pem, csr_pem, name, address)


def issued_by(cert_pem: str, ca_cert_pem: str) -> bool:
    return bool(_call("issued_by", cert_pem, ca_cert_pem))
