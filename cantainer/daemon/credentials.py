"""How this host comes by its credentials (``trust/files.py``), before its dqlite node starts.

    a new cluster      (no --seeds, a new data directory): a new CA, and this member's
                       key and certificate signed by it; the CA's key goes into the
                       cluster's secrets once the log is up (``ca.key`` waits in
                       DATA_DIR/tls until then)
    a new member       (--seeds and --join-token): the CA certificate fetched from a seed
                       and checked against the token (another CA: refused, whatever the
                       seed says), a key made here, a certificate signed by the member
                       that checked the token's secret — which appends this host's
                       NodeJoined
    a member again     (its credentials on disk): they are used, no token needed; but if
                       a member says this certificate was revoked (the host left or was
                       evicted), it must join again, with a new token
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
import logging
import os

from cantainer.config import Config, peer_port
from cantainer.errors import ConfigError, Unavailable
from cantainer.events.validate import fingerprint
from cantainer.trust import certs, kx, tokens
from cantainer.trust.files import Credentials, save_gate
from cantainer.trust.tls import client_context, peer_fingerprint

log = logging.getLogger("cantainerd")

ASK_TIMEOUT = 5.0
JOIN_ATTEMPTS = 20  # seeds tried in turn, a second apart: a seed may be starting


async def obtain(config: Config) -> tuple[Credentials, str | None]:
    """This member's credentials, and the CA's key when this host bootstraps a cluster."""
    creds = Credentials(config.data_dir)
    identity = os.path.join(config.data_dir, "node.json")
    if creds.exist():
        creds.load()
        verdict = await whoami(config, creds)
        if verdict in ("revoked", "unknown"):
            if not config.join_token:
                raise ConfigError(
                    f"this host's certificate is {verdict} (it left the cluster or was "
                    "evicted): start it with a new --join-token to join again")
            log.info("this host's certificate is %s: joining again with the token", verdict)
            creds.remove()
            return await join(config, creds), None
        if config.join_token:
            log.info("already a member: --join-token is not needed and not used")
        return creds, _pending_ca_key(creds)
    if os.path.exists(identity) and not os.path.isdir(creds.dir):
        raise ConfigError(f"{config.data_dir} is from before cluster trust (no certificates "
                          "in it): move it aside and join the cluster again with a "
                          "--join-token, or start a new cluster with a new --data-dir")
    if config.seeds:
        if not config.join_token:
            raise ConfigError("joining a cluster needs --join-token TOKEN (run 'cantainer "
                              "join-token' on a member)")
        return await join(config, creds), None
    if os.path.exists(identity):
        raise ConfigError("this host left its cluster: start it with --seeds and a "
                          "--join-token to join again")
    return bootstrap(config, creds)


def bootstrap(config: Config, creds: Credentials) -> tuple[Credentials, str]:
    ca_key, ca, key, cert, kx_key = certs.new_cluster(config.name, config.host)
    creds.save(ca, key, cert, kx_key)
    _write_private(creds.path("ca.key"), ca_key)
    log.info("a new cluster CA, %s", fingerprint(ca)[:16])
    return creds, ca_key


def _pending_ca_key(creds: Credentials) -> str | None:
    """A bootstrapped CA's key not yet in the cluster's secrets (a start cut short)."""
    try:
        with open(creds.path("ca.key")) as f:
            return f.read()
    except FileNotFoundError:
        return None


def stored(creds: Credentials) -> None:
    """The CA's key is in the cluster's secrets: no copy stays on this disk."""
    try:
        os.unlink(creds.path("ca.key"))
    except FileNotFoundError:
        pass


async def join(config: Config, creds: Credentials) -> Credentials:
    ca_fingerprint, secret = tokens.parse_token(config.join_token)
    key, kx_key, request = certs.new_member(config.name)
    last: Exception | None = None
    for attempt in range(JOIN_ATTEMPTS):
        seed = config.seeds[attempt % len(config.seeds)]
        host, port = seed.rsplit(":", 1)
        address = (host, peer_port(int(port)))
        try:
            ca = (await ask(address, client_context(None, None), {"op": "ca"}))["ca"]
            if fingerprint(ca) != ca_fingerprint:
                raise ConfigError(f"seed {seed} presents another CA than the join token's: "
                                  "refusing to join through it (a wrong token, or someone "
                                  "in between)")
            reply = await ask(address, client_context(None, ca), lambda seed_fp: {
                "op": "join", "proof": tokens.join_proof(secret, seed_fp),
                "csr": request, "name": config.name,
                "address": config.host, "dqlite_address": config.dqlite_address,
                "kx": kx.kx_public(kx_key), "checkpoint_every": config.checkpoint_every})
        except Unavailable as exc:
            last = exc
            await asyncio.sleep(1.0)
            continue
        if "error" in reply:
            raise ConfigError(f"{seed} refused this host: {reply['error']}")
        certificate = reply["certificate"]
        if not certs.issued_by(certificate, ca):
            raise ConfigError(f"{seed} answered with a certificate the CA did not sign")
        log.info("joined through %s: certificate %s", seed, fingerprint(certificate)[:16])
        creds.save(ca, key, certificate, kx_key)
        save_gate(creds, frozenset(reply.get("trusted", ())),
                  frozenset(reply.get("revoked", ())))
        return creds
    raise ConfigError(f"could not join through {', '.join(config.seeds)}: {last}")


async def whoami(config: Config, creds: Credentials) -> str | None:
    """What a member says of this host's certificate: "member", "revoked", "unknown";
    None when no other member answers (they may all be starting, as this one is)."""
    try:
        with open(os.path.join(config.data_dir, "cluster.json")) as f:
            known = [a for a in json.load(f) if a != config.dqlite_address]
    except (OSError, ValueError):
        known = []
    tls = client_context(creds, creds.ca)
    for member in [*config.seeds, *known]:
        host, port = member.rsplit(":", 1)
        try:
            reply = await ask((host, peer_port(int(port))), tls, {"op": "whoami"},
                              timeout=2.0)
        except Unavailable:
            continue
        if "member" in reply:
            return "member"
        verdict = {"conflict": "revoked", "not_found": "unknown"}.get(reply.get("kind"))
        if verdict is not None:
            return verdict
        # Any other answer (no quorum there, say) says nothing of this certificate.
        log.info("%s could not say who this host is: %s", member, reply.get("error"))
    return None


async def ask(address: tuple[str, int], tls, message: dict | Callable[[str], dict],
              timeout: float = ASK_TIMEOUT) -> dict:
    """One request to a member's peer port over TLS; its first answer (an error too).
    ``message`` may be made from the fingerprint of the certificate the server showed."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(*address, ssl=tls,
                                                           server_hostname=None)
            try:
                if callable(message):
                    message = message(peer_fingerprint(writer.get_extra_info("ssl_object")))
                writer.write(json.dumps(message).encode() + b"\n")
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"{address[0]}:{address[1]} does not answer ({exc or 'timed out'})") \
            from None
    try:
        return json.loads(line)
    except ValueError:
        raise Unavailable(f"{address[0]}:{address[1]} gave no answer") from None


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
