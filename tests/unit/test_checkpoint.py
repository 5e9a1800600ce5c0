"""Checkpoints (projections/checkpoint.py): the state at a seq, saved and loaded, gives
what a replay gives; the same records give the same bytes anywhere."""

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cantainer.projections.checkpoint import BadCheckpoint, digest, dump, load
from cantainer.projections.state import ClusterState
from cantainer.projections.view import view
from tests.unit.strategies import histories, records


def derived(state: ClusterState) -> dict:
    v = view(state)
    del v["rejected"]
    return v


@given(histories(), st.floats(0, 1))
@settings(max_examples=150)
def test_a_checkpoint_then_the_rest_derives_what_the_whole_log_derives(events, cut):
    recs = records(events)
    k = int(cut * len(recs))
    whole = ClusterState()
    whole.apply_all(recs)
    head = ClusterState()
    head.apply_all(recs[:k])
    blob = dump(head)
    resumed = load(blob)
    assert dump(resumed) == blob, "canonical: loading and saving again changes nothing"
    assert resumed.applied == head.applied
    resumed.apply_all(recs[k:])
    assert derived(resumed) == derived(whole)
    assert dump(resumed) == dump(whole)


CHECKPOINT = """
import hashlib, sys
from tests.unit.strategies import records
from tests.unit.test_checkpoint import busy_history
from cantainer.projections.checkpoint import dump
from cantainer.projections.state import ClusterState
s = ClusterState()
s.apply_all(records(busy_history()))
print(hashlib.sha256(dump(s)).hexdigest(), len(s.ipam.containers), len(s.services.services))
"""


def busy_history():
    from cantainer import events as ev
    out = [ev.NetworkCreated(name="n1", cidr="198.18.8.0/28")]
    for i in range(6):
        out.append(ev.ContainerCreated(container=f"{i + 1:012x}", name=f"c{i}", host="h1",
                                       network="n1"))
    out += [ev.NodeLeft(name="h3"),
            ev.ServiceCreated(name="s1", network="n1", replicas=3, ports=["8080:80"]),
            ev.ImageStored(host="h2", image="app:1", digest="ab" * 32, size=3)]
    return out


def test_the_same_log_gives_the_same_checkpoint_whatever_the_hash_seed():
    out = [subprocess.run([sys.executable, "-c", CHECKPOINT], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
           for seed in ("1", "2")]
    assert out[0] == out[1] and out[0].split()[1:] == ["9", "1"]


def test_a_spoilt_checkpoint_is_refused_not_half_loaded():
    s = ClusterState()
    s.apply_all(records(busy_history()))
    blob = dump(s)
    for bad in (b"", b"\x93\x01\x02\x03", blob[:-7], blob.replace(b"n1", b"\xff\xfe", 1),
                b"\xc1" + blob[1:]):
        with pytest.raises(BadCheckpoint):
            load(bad)
    assert digest(blob) == digest(dump(load(blob)))
