"""Fetching from members (daemon/peers.py): what a member sends counts only if it has
the digest the log gave; the next member is asked otherwise, and an error names each."""

import asyncio
import hashlib

import pytest

from cantainer.daemon import peers
from cantainer.errors import Unavailable

GOOD = b"the records as stored"


class Handle:
    node = "h1"

    class state:
        class members:
            @staticmethod
            def live():
                return {"h1": None, "h2": None, "h3": None}


def test_only_bytes_of_the_logs_digest_are_taken(monkeypatch):
    sent = {"h2": b"spoilt", "h3": GOOD}

    async def stream(h, host, request, most, sink, address=None):
        sink(sent[host])
        return len(sent[host])
    monkeypatch.setattr(peers, "stream", stream)
    digest = hashlib.sha256(GOOD).hexdigest()
    assert asyncio.run(peers.fetch(Handle(), {}, digest, 1 << 20)) == GOOD
    sent["h3"] = b"also spoilt"
    with pytest.raises(Unavailable, match=f"h2: what it sent is not of the log's sha256 "
                                          f"{digest[:12]}; h3: what it sent"):
        asyncio.run(peers.fetch(Handle(), {}, digest, 1 << 20))


def test_a_member_that_fails_is_named_and_the_next_asked(monkeypatch):
    async def stream(h, host, request, most, sink, address=None):
        if host == "h2":
            raise Unavailable("host h2 has no segment ending at seq 200")
        sink(GOOD)
        return len(GOOD)
    monkeypatch.setattr(peers, "stream", stream)
    assert asyncio.run(peers.fetch(Handle(), {}, hashlib.sha256(GOOD).hexdigest(),
                                   1 << 20)) == GOOD
