"""The cluster's keys and certificates, through ``cryptography`` (no hand-rolled crypto).

    the cluster CA      an Ed25519 key and a self-signed certificate, made by the daemon
                        that bootstraps the cluster; kept in the replicated database
    a member            an Ed25519 key (TLS, on every channel) and a certificate signed
                        by the CA naming the node (CN) and its underlay address (an IP
                        SAN); an X25519 key whose public half is in its NodeJoined, for
                        the keys it shares pairwise with each other member (heartbeats)
    a join token        CTN1-<SHA-256 of the CA certificate>-<secret>: the joiner pins
                        the CA by it, and proves it holds the secret to the member it
                        talks to (``join_proof``), which checks it

Identity is the certificate the log records for a member (``NodeJoined``), so
a certificate the CA signed but the log does not name is refused everywhere.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import re
import secrets

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from cantainer.errors import ConfigError, Invalid
from cantainer.events.validate import fingerprint

CA_YEARS = 20
NODE_YEARS = 10
TOKEN_RE = re.compile(r"^CTN1-([0-9a-f]{64})-([A-Za-z0-9_-]{32,})$")

__all__ = ["fingerprint"]


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


def kx_public(kx_key_pem: str) -> str:
    """The X25519 public key that goes into NodeJoined, as 64 hex digits."""
    key = serialization.load_pem_private_key(kx_key_pem.encode(), None)
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw).hex()


def pair_key(my_kx_key_pem: str, their_kx_hex: str) -> bytes:
    """The key two members share (X25519, then HKDF-SHA256): each computes it from
    its own private key and the other's public key in the log."""
    mine = serialization.load_pem_private_key(my_kx_key_pem.encode(), None)
    theirs = x25519.X25519PublicKey.from_public_bytes(bytes.fromhex(their_kx_hex))
    return HKDF(hashes.SHA256(), 32, salt=None,
                info=b"cantainer heartbeats v1").derive(mine.exchange(theirs))


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


# -- join tokens ----------------------------------------------------------------------

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
