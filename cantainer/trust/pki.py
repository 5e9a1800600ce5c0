"""The cluster's keys and certificates, through ``cryptography`` (no hand-rolled crypto).

    the cluster CA      an Ed25519 key and a self-signed certificate, made by the daemon
                        that bootstraps the cluster; kept in the replicated database
    a member            an Ed25519 key (TLS, on every channel) and a certificate signed
                        by the CA naming the node (CN) and its underlay address (an IP
                        SAN); an X25519 key whose public half is in its NodeJoined, for
                        the keys it shares pairwise with each other member (heartbeats:
                        ``trust/kx.py``)

Identity is the certificate the log records for a member (``NodeJoined``), so
a certificate the CA signed but the log does not name is refused everywhere.

A daemon does not import this module: ``cryptography`` is 10 MiB of a process,
and a daemon needs it only for moments (bootstrapping, joining, signing a
joiner's certificate).  It runs it as a child, ``python -m cantainer.trust.pki``,
one request each (``main``; ``trust/certs.py`` asks); tests and tools import it.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.x509.oid import NameOID

from cantainer.errors import Invalid

CA_YEARS = 20
NODE_YEARS = 10


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _validity(years: int, now: datetime.datetime | None = None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=365 * years)


def new_ca(cluster: str = "cantainer") -> tuple[str, str]:
    """(key PEM, certificate PEM) of a new cluster CA."""
    key = ed25519.Ed25519PrivateKey.generate()
    start, end = _validity(CA_YEARS)
    cert = (x509.CertificateBuilder().subject_name(_name(f"{cluster} CA"))
            .issuer_name(_name(f"{cluster} CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, None))
    return _key_pem(key), _pem(cert)


def new_key() -> str:
    return _key_pem(ed25519.Ed25519PrivateKey.generate())


def new_kx_key() -> str:
    return _key_pem(x25519.X25519PrivateKey.generate())


def csr(key_pem: str, name: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    return (x509.CertificateSigningRequestBuilder().subject_name(_name(name))
            .sign(key, None).public_bytes(serialization.Encoding.PEM).decode())


def sign(ca_key_pem: str, ca_cert_pem: str, csr_pem: str, name: str, address: str) -> str:
    """A member certificate for the holder of ``csr_pem``'s key, naming ``name`` and
    ``address``; ``Invalid`` when the request is not one."""
    try:
        request = x509.load_pem_x509_csr(csr_pem.encode())
        ip = ipaddress.IPv4Address(address)
    except ValueError as exc:
        raise Invalid(f"not a certificate request for a member: {exc}") from None
    if not request.is_signature_valid:
        raise Invalid("the certificate request's signature does not verify")
    if not isinstance(request.public_key(), ed25519.Ed25519PublicKey):
        raise Invalid("a member's key must be Ed25519")
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    start, end = _validity(NODE_YEARS)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(request.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, None))
    return _pem(cert)


def issued_by(cert_pem: str, ca_cert_pem: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


# -- the daemon's child -----------------------------------------------------------------

def new_cluster(name: str, address: str) -> tuple[str, str, str, str, str]:
    """(CA key, CA certificate, key, certificate, X25519 key) of a new cluster's first
    member."""
    ca_key, ca = new_ca()
    key = new_key()
    return ca_key, ca, key, sign(ca_key, ca, csr(key, name), name, address), new_kx_key()


def new_member(name: str) -> tuple[str, str, str]:
    """(key, X25519 key, certificate request) of a host that is to join."""
    key = new_key()
    return key, new_kx_key(), csr(key, name)


OPS = {"new_cluster": new_cluster, "new_member": new_member, "sign": sign,
       "issued_by": issued_by}


def main() -> None:
    """One request on stdin, ``{"op": ..., "args": [...]}``; its answer on stdout,
    ``{"result": ...}`` or ``{"invalid": "why"}`` (``trust/certs.py`` asks)."""
    request = json.load(sys.stdin)
    try:
        answer = {"result": OPS[request["op"]](*request["args"])}
    except Invalid as exc:
        answer = {"invalid": str(exc)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
