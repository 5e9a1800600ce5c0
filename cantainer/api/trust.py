"""Joining: the CA, the join exchange, who a certificate is, the join token.

    {"op": "ca"}                  (peer port, anyone)  -> {"ca": PEM}
    {"op": "join", "proof": P, "csr": PEM, "name": N, "address": A,
     "dqlite_address": D, "kx": HEX}  (peer port, anyone)
                                  -> {"certificate": PEM, "ca": PEM, "trusted": [FP, ...],
                                      "revoked": [FP, ...]}
    {"op": "whoami"}              (peer port, anyone)  -> {"member": NAME}
    {"op": "join_token", "rotate": bool}               -> {"token": "CTN1-..."}

A joiner fetches the CA certificate unauthenticated and checks it against its
token (the token names the CA's fingerprint: a seed that presents another CA
is refused), then asks to join over TLS that verifies the seed.  The member
that answers checks the joiner's proof of the token's secret (an HMAC of it
bound to this member's own certificate, ``tokens.join_proof``: the secret itself
never crosses the wire), signs the joiner's certificate with the CA's key
(kept in the replicated database's secrets, so any member can), and appends
its ``NodeJoined`` — with that certificate: from then on every channel knows
the joiner by it.  ``node leave`` and ``node rm`` make a new join secret
(``api/cluster.py``): a host that left cannot come back with its old token.
"""

from __future__ import annotations

import asyncio

from cantainer.api import fields as f
from cantainer.errors import Conflict, Invalid, NotFound
from cantainer.events import NodeJoined, from_data
from cantainer.events.validate import fingerprint
from cantainer.trust import certs, kx, tokens

CA_KEY, JOIN_SECRET = "ca_key", "join_secret"  # the cluster's secrets (events/log.py)


async def ca(h, req: dict, ex) -> None:
    await ex.send({"ca": h.ca})


async def join(h, req: dict, ex) -> None:
    stored = await h.secret(JOIN_SECRET)
    if stored is None or not tokens.same_secret(req["proof"], tokens.join_proof(stored, h.gate.own)):
        raise Invalid("this join token is not the cluster's current one (see 'cantainer "
                      "join-token' on a member)")
    await h.wait_applied()
    if (refusal := h.state.checkpoint_refusal(req["checkpoint_every"])) is not None:
        raise Invalid(refusal)
    event = from_data("NodeJoined", {"name": req["name"], "address": req["address"],
                                     "dqlite_address": req["dqlite_address"], "kx": req["kx"]})
    for other in h.state.members.live().values():
        if other.name == event.name:
            raise Conflict(f"node name {event.name!r} is taken by the member at "
                           f"{other.dqlite_address}")
        if other.dqlite_address == event.dqlite_address:
            raise Conflict(f"address {event.dqlite_address} belongs to member {other.name!r}")
    certificate = await asyncio.to_thread(certs.sign, await h.secret(CA_KEY), h.ca, req["csr"],
                                          event.name, event.address)
    joined = NodeJoined(name=event.name, address=event.address,
                        dqlite_address=event.dqlite_address, certificate=certificate,
                        kx=event.kx)
    await h.append([joined], [f"NodeJoined-{fingerprint(certificate)[:32]}"])
    # the members it may admit before its state has caught up (files.py: trusted)
    await ex.send({"certificate": certificate, "ca": h.ca,
                   "trusted": sorted(h.state.members.trusted()),
                   "revoked": sorted(h.state.members.revoked())})


async def whoami(h, req: dict, ex) -> None:
    """What this member's state says of the certificate the client connected with."""
    fp = req["fingerprint"]
    if fp is None:
        raise Invalid("connect with a certificate to ask who it is")
    await h.wait_applied()
    for node in h.state.members.live().values():
        if node.fingerprint == fp:
            await ex.send({"member": node.name})
            return
    if fp in h.state.members.revoked():
        raise Conflict("this certificate was revoked: its member left the cluster or was "
                       "evicted; join again with a new --join-token")
    raise NotFound("this certificate is no member's")


async def join_token(h, req: dict, ex) -> None:
    if req["rotate"]:
        secret = await h.set_secret(JOIN_SECRET, tokens.new_secret(), replace=True)
    else:
        secret = await h.secret(JOIN_SECRET)
    await ex.send({"token": tokens.token(h.ca, secret)})


def _kx(name: str, value) -> str:
    text = f.text(name, value)
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise Invalid(f"request field {name!r} must be 64 hex digits")
    try:
        kx.check_public(text)
    except ValueError:
        raise Invalid(f"request field {name!r} is no X25519 key a member can share a key "
                      "with (a low-order point)") from None
    return text


OPS = {
    "ca": (ca, {}, "anyone"),
    "join": (join, {"proof": (f.text, f.REQUIRED), "csr": (f.text, f.REQUIRED),
                    "name": (f.text, f.REQUIRED), "address": (f.text, f.REQUIRED),
                    "dqlite_address": (f.text, f.REQUIRED), "kx": (_kx, f.REQUIRED),
                    "checkpoint_every": (f.count, None)},
             "anyone"),
    "whoami": (whoami, {}, "anyone"),
    "join_token": (join_token, {"rotate": (f.flag, False)}),
}
