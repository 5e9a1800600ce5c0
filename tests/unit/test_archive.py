"""The archive: segments written whole at their boundaries, read back checked against
the log's digests, fetched from a member when missing or spoilt, an error otherwise."""

import asyncio
import hashlib
import os

import pytest

from cantainer.daemon.archive import Archive
from cantainer.errors import Unavailable
from cantainer.events import pack_rows


def rows(first, last):
    return [[s, f"id{s}", "NetworkRemoved" if s % 2 else "NetworkCreated", 1, "h1",
             float(s), b"\x81\xa4name\xa1n"] for s in range(first, last + 1)]


def written(tmp_path, every, *batches, start=0):
    """The archive after ``batches`` of rows were applied, and its vouched segments."""
    archive = Archive(str(tmp_path), every)
    last = max(row[0] for batch in batches for row in batch)
    whole = len(range((start + every - 1) // every * every + every, last + 1, every))

    async def go():
        archive.reset(start)
        for batch in batches:
            archive.add(batch)
        for _ in range(500):  # the writes, off the loop: offered once on disk
            if len(archive.mine) >= whole:
                break
            await asyncio.sleep(0.01)
    asyncio.run(go())
    vouched = dict(archive.mine)
    return archive, vouched


def test_a_segment_is_written_whole_when_its_last_seq_is_applied(tmp_path):
    archive, vouched = written(tmp_path, 100, rows(1, 150), rows(140, 250))
    assert sorted(os.listdir(archive.dir)) == ["1-100", "101-200"]
    blob = open(archive.path(101, 200), "rb").read()
    assert blob == pack_rows(rows(101, 200)), "the rows as stored, each once"
    assert vouched[200] == (101, hashlib.sha256(blob).hexdigest())
    assert oct(os.stat(archive.path(1, 100)).st_mode & 0o777) == "0o600"


def test_a_segment_begun_part_way_is_not_written(tmp_path):
    archive, _ = written(tmp_path, 100, rows(51, 250), start=50)
    assert sorted(os.listdir(archive.dir)) == ["101-200"]
    archive, _ = written(tmp_path / "gap", 100, rows(1, 40), rows(60, 200))
    assert sorted(os.listdir(archive.dir)) == ["101-200"], "a gap: 1-100 is not whole"


def test_reads_cross_segments_filter_types_and_stop_at_the_limit(tmp_path):
    archive, vouched = written(tmp_path, 100, rows(1, 300))
    got = asyncio.run(archive.read(vouched, 50, 250, 1000))
    assert [r[0] for r in got] == list(range(51, 251))
    got = asyncio.run(archive.read(vouched, 0, 300, 10, ["NetworkCreated"]))
    assert [r[0] for r in got] == list(range(2, 21, 2))


def test_a_missing_or_spoilt_segment_is_fetched_checked_and_kept(tmp_path):
    archive, vouched = written(tmp_path, 100, rows(1, 200))
    good = open(archive.path(1, 100), "rb").read()
    os.unlink(archive.path(1, 100))
    with open(archive.path(101, 200), "r+b") as f:
        f.write(b"\x00")
    asked = []

    async def fetch(kind, seq, digest):
        asked.append((kind, seq))
        return good if seq == 100 else pack_rows(rows(101, 200))
    archive.fetch = fetch
    got = asyncio.run(archive.read(vouched, 0, 200, 1000))
    assert [r[0] for r in got] == list(range(1, 201)) and asked == [("segment", 100),
                                                                    ("segment", 200)]
    assert open(archive.path(1, 100), "rb").read() == good, "kept"


def test_a_segment_no_one_has_is_an_error_that_names_the_seqs(tmp_path):
    archive, vouched = written(tmp_path, 100, rows(1, 200))
    os.unlink(archive.path(101, 200))

    async def fetch(kind, seq, digest):
        raise Unavailable("h2: not found")
    archive.fetch = fetch
    got = asyncio.run(archive.read(vouched, 0, 200, 1000))
    assert [r[0] for r in got] == list(range(1, 101)), "what comes before it"
    with pytest.raises(Unavailable, match="seqs 101-200 are archived, and neither this host "
                                          "nor a member has their segment: h2: not found"):
        asyncio.run(archive.read(vouched, 100, 200, 1000))
    with pytest.raises(Unavailable, match="seq 201 is archived, but the log vouches for no"):
        asyncio.run(archive.read(vouched, 200, 300, 1000))


def test_before_compaction_the_leader_makes_what_it_lacks_from_the_database(tmp_path):
    archive, vouched = written(tmp_path, 100, rows(1, 200))
    os.unlink(archive.path(1, 100))

    async def rows_of(first, last):
        return rows(first, last)
    segments = [(1, 100), (101, 200), (201, 300)]
    unvouched = asyncio.run(archive.ensure(rows_of, vouched, segments))
    assert open(archive.path(1, 100), "rb").read() == pack_rows(rows(1, 100)), "made again"
    made = pack_rows(rows(201, 300))
    assert unvouched == [(201, 300, hashlib.sha256(made).hexdigest())], "for the log"

    async def other_rows(first, last):
        return rows(first, last)[:-1]
    os.unlink(archive.path(1, 100))
    with pytest.raises(Unavailable, match="archive segment 1-100: the database's records "
                                          "have sha256 .* not the log's"):
        asyncio.run(archive.ensure(other_rows, vouched, segments))


def test_the_segments_that_cover_a_compaction_follow_the_log_then_the_grid():
    from cantainer.daemon.daemon import cover
    vouched = {100: (1, "a"), 250: (151, "b")}
    assert cover(vouched, 1, 400, 100) == [(1, 100), (101, 150), (151, 250), (251, 300),
                                           (301, 400)]
    assert cover({}, 201, 300, 100) == [(201, 300)]
