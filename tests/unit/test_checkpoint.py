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


# -- on disk: daemon/checkpoints.py ---------------------------------------------------------

class Reader:
    """The log as restore reads it: CheckpointTaken records after a seq."""

    def __init__(self, vouched: dict[int, str]):
        from cantainer import events as ev
        self.records = [ev.Recorded(seq + 5, f"c{seq}", "CheckpointTaken", 1, "h1", 0.0,
                                    ev.CheckpointTaken(seq=seq, digest=d))
                        for seq, d in sorted(vouched.items())]

    async def read(self, after, limit, types=None):
        assert types == ["CheckpointTaken"]
        return [r for r in self.records if r.seq > after][:limit]


def saved_state(tmp_path, upto):
    import asyncio

    from cantainer.daemon.checkpoints import Checkpoints

    recs = records(busy_history())[:upto]
    state = ClusterState()
    state.apply_all(recs)
    cp = Checkpoints(str(tmp_path), every=1)

    async def take():
        cp.take(state)
        await asyncio.sleep(0.2)  # written off the loop
    asyncio.run(take())
    return cp, state


def test_restore_takes_only_a_checkpoint_the_log_vouches_for(tmp_path, caplog):
    import asyncio

    from cantainer.daemon.checkpoints import Checkpoints

    cp, state = saved_state(tmp_path, 10)
    seq, d = state.applied, cp.mine[state.applied]
    assert oct(os.stat(os.path.join(cp.dir, str(seq))).st_mode & 0o777) == "0o600"
    for vouched, used in (({seq: d}, seq), ({seq: "0" * 64}, None), ({}, None)):
        fresh = ClusterState()
        got = asyncio.run(Checkpoints(str(tmp_path), every=1).restore(fresh, Reader(vouched)))
        assert got == used
        assert (dump(fresh) == dump(state)) == (used is not None), "all of it, or nothing"
        if used is None:
            assert fresh.applied == 0
    assert "is not the log's" in caplog.text and "no CheckpointTaken" in caplog.text
    with open(os.path.join(cp.dir, str(seq)), "r+b") as f:
        f.write(b"\xc1\xc1")
    fresh = ClusterState()
    assert asyncio.run(Checkpoints(str(tmp_path), every=1).restore(fresh, Reader({seq: d}))) \
        is None and fresh.applied == 0


def test_a_digest_the_log_records_otherwise_is_said_once(tmp_path, caplog):
    from cantainer.daemon.checkpoints import Checkpoints

    cp = Checkpoints(str(tmp_path), every=100)
    cp.mine = {100: "a" * 64}
    cp.check({100: "a" * 64})
    assert "differs" not in caplog.text
    cp.check({100: "b" * 64})
    cp.check({100: "b" * 64})
    assert caplog.text.count("differs from the one the log recorded") == 1
    assert cp.due(95, 105) and cp.due(100, 100) and not cp.due(101, 199) and cp.due(101, 200)
    assert not Checkpoints(str(tmp_path), every=0).due(1, 10 ** 9)
