"""The keys two members share, through the OpenSSL the daemon has loaded already.

    kx_public(key)          the X25519 public key of this member's key (``kx.key``), as
                            64 hex digits: what its NodeJoined records
    pair_key(key, theirs)   X25519 of this member's key and another's public key, then
                            HKDF-SHA256 (no salt, info "cantainer heartbeats v1"), 32 bytes:
                            the key of the heartbeats and pokes between the two
    check_public(theirs)    ValueError unless a public key is one a member could share a
                            key with (a joiner's, before the log records it)

Every step is OpenSSL's own (``libcrypto.so.3``, the library Python's ``ssl`` is
built on, called through ``ctypes``): nothing here computes anything itself.
``cryptography`` (``trust/pki.py``) would do the same at 10 MiB of a daemon's
memory; the daemon needs only these all its life, and leaves pki's work — keys
and certificates — to a short-lived child (``trust/certs.py``).  A unit test
checks them against ``cryptography``.
"""

from __future__ import annotations

import ctypes
import os
import ssl  # noqa: F401  (loads libcrypto.so.3 into the process: the one used here)

_EVP_PKEY_X25519 = 1034  # NID_X25519
_EVP_PKEY_HKDF = 1036    # NID_hkdf
_INFO = b"cantainer heartbeats v1"

_lib = ctypes.CDLL("libcrypto.so.3")
_p, _int, _size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
for _name, _restype, _argtypes in (
        ("BIO_new_mem_buf", _p, [ctypes.c_char_p, _int]),
        ("BIO_free", _int, [_p]),
        ("PEM_read_bio_PrivateKey", _p, [_p, _p, _p, _p]),
        ("EVP_PKEY_new_raw_public_key", _p, [_int, _p, ctypes.c_char_p, _size]),
        ("EVP_PKEY_new_raw_private_key", _p, [_int, _p, ctypes.c_char_p, _size]),
        ("EVP_PKEY_get_raw_public_key", _int, [_p, ctypes.c_char_p, ctypes.POINTER(_size)]),
        ("EVP_PKEY_get_base_id", _int, [_p]),
        ("EVP_PKEY_free", None, [_p]),
        ("EVP_PKEY_CTX_new", _p, [_p, _p]),
        ("EVP_PKEY_CTX_new_id", _p, [_int, _p]),
        ("EVP_PKEY_CTX_free", None, [_p]),
        ("EVP_PKEY_derive_init", _int, [_p]),
        ("EVP_PKEY_derive_set_peer", _int, [_p, _p]),
        ("EVP_PKEY_derive", _int, [_p, ctypes.c_char_p, ctypes.POINTER(_size)]),
        ("EVP_PKEY_CTX_set_hkdf_md", _int, [_p, _p]),
        ("EVP_PKEY_CTX_set1_hkdf_key", _int, [_p, ctypes.c_char_p, _int]),
        ("EVP_PKEY_CTX_add1_hkdf_info", _int, [_p, ctypes.c_char_p, _int]),
        ("EVP_sha256", _p, []),
        ("ERR_clear_error", None, [])):
    _fn = getattr(_lib, _name)
    _fn.restype, _fn.argtypes = _restype, _argtypes
# An encrypted key gets no passphrase (OpenSSL's default would ask the terminal).
_NO_PASSPHRASE = ctypes.CFUNCTYPE(_int, ctypes.c_char_p, _int, _int, _p)(lambda *_: -1)


def _check(ok, what: str):
    if not ok or (isinstance(ok, int) and ok <= 0):
        _lib.ERR_clear_error()
        raise ValueError(f"OpenSSL refused {what}")
    return ok


def _private(pem: str) -> int:
    """The EVP_PKEY of an X25519 private key in PEM (the caller frees it)."""
    data = pem.encode()
    bio = _check(_lib.BIO_new_mem_buf(data, len(data)), "a memory buffer")
    try:
        key = _check(_lib.PEM_read_bio_PrivateKey(bio, None, _NO_PASSPHRASE, None),
                     "the X25519 key (not a PEM private key)")
    finally:
        _lib.BIO_free(bio)
    if _lib.EVP_PKEY_get_base_id(key) != _EVP_PKEY_X25519:
        _lib.EVP_PKEY_free(key)
        raise ValueError("the key is not an X25519 key")
    return key


def kx_public(kx_key_pem: str) -> str:
    """The X25519 public key that goes into NodeJoined, as 64 hex digits."""
    key = _private(kx_key_pem)
    try:
        out, size = ctypes.create_string_buffer(32), _size(32)
        _check(_lib.EVP_PKEY_get_raw_public_key(key, out, ctypes.byref(size)),
               "the public key")
        return out.raw[:size.value].hex()
    finally:
        _lib.EVP_PKEY_free(key)


def pair_key(my_kx_key_pem: str, their_kx_hex: str) -> bytes:
    """The key two members share (X25519, then HKDF-SHA256): each computes it from
    its own private key and the other's public key in the log."""
    return _derive(_private(my_kx_key_pem), their_kx_hex)


def check_public(their_kx_hex: str) -> None:
    """``ValueError`` unless a member could share a key with this public key (64 hex
    digits, and no low-order point: X25519 with it would give all zeros)."""
    mine = _check(_lib.EVP_PKEY_new_raw_private_key(_EVP_PKEY_X25519, None,
                                                    os.urandom(32), 32), "a trial key")
    _derive(mine, their_kx_hex)


def _derive(mine: int, their_kx_hex: str) -> bytes:
    """``pair_key`` of private key ``mine`` (an EVP_PKEY, freed here)."""
    theirs = ctx = hkdf = None
    shared, size = ctypes.create_string_buffer(32), _size(32)
    try:
        try:
            theirs_raw = bytes.fromhex(their_kx_hex)
        except ValueError:
            raise ValueError("an X25519 public key is 64 hex digits") from None
        if len(theirs_raw) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        theirs = _check(_lib.EVP_PKEY_new_raw_public_key(_EVP_PKEY_X25519, None, theirs_raw, 32),
                        "the other member's public key")
        ctx = _check(_lib.EVP_PKEY_CTX_new(mine, None), "an X25519 context")
        _check(_lib.EVP_PKEY_derive_init(ctx), "X25519")
        _check(_lib.EVP_PKEY_derive_set_peer(ctx, theirs), "the other member's public key")
        _check(_lib.EVP_PKEY_derive(ctx, shared, ctypes.byref(size)), "X25519")
        hkdf = _check(_lib.EVP_PKEY_CTX_new_id(_EVP_PKEY_HKDF, None), "an HKDF context")
        _check(_lib.EVP_PKEY_derive_init(hkdf), "HKDF")
        _check(_lib.EVP_PKEY_CTX_set_hkdf_md(hkdf, _lib.EVP_sha256()), "HKDF's SHA-256")
        _check(_lib.EVP_PKEY_CTX_set1_hkdf_key(hkdf, shared, size.value), "HKDF's key")
        _check(_lib.EVP_PKEY_CTX_add1_hkdf_info(hkdf, _INFO, len(_INFO)), "HKDF's info")
        out, out_size = ctypes.create_string_buffer(32), _size(32)
        _check(_lib.EVP_PKEY_derive(hkdf, out, ctypes.byref(out_size)), "HKDF")
        return out.raw[:out_size.value]
    finally:
        ctypes.memset(shared, 0, 32)
        for free, obj in ((_lib.EVP_PKEY_CTX_free, hkdf), (_lib.EVP_PKEY_CTX_free, ctx),
                          (_lib.EVP_PKEY_free, theirs), (_lib.EVP_PKEY_free, mine)):
            if obj:
                free(obj)
