"""A container's state directory: the one owner of its files."""

import os
import stat

from cantainer.kernel.statedir import StateDir


def test_files_are_written_whole_and_read_back(tmp_path):
    state = StateDir(str(tmp_path), "c0ffee")
    assert StateDir.ids(str(tmp_path)) == [] and not state.exists()
    assert (state.pid(), state.exit_code(), state.has_spec(), state.ended()) == \
        (None, None, False, False)
    state.create()
    assert stat.S_IMODE(os.stat(state.path).st_mode) == 0o700
    state.write_spec({"id": "c0ffee", "command": ["sh"]})
    state.write_pid(4242)
    assert state.spec() == {"id": "c0ffee", "command": ["sh"]} and state.pid() == 4242
    assert not state.ended()
    state.write_exit_code(137)
    assert state.ended() and state.exit_code() == 137
    assert not [f for f in os.listdir(state.path) if f.endswith(".tmp")], "renamed into place"
    assert StateDir.ids(str(tmp_path)) == ["c0ffee"]
    assert StateDir.at(state.path).path == state.path


def test_a_number_that_does_not_read_is_none(tmp_path):
    state = StateDir(str(tmp_path), "c0ffee")
    state.create()
    for name, text in ((StateDir.PID, "abc"), (StateDir.EXIT_CODE, "")):
        with open(state.file(name), "w") as f:
            f.write(text)
    assert (state.pid(), state.exit_code()) == (None, None)


def test_output_is_read_from_an_offset(tmp_path):
    state = StateDir(str(tmp_path), "c0ffee")
    assert state.read_output(0) == b"", "no output yet"
    state.create()
    state.say("cantainer: cannot start the container: no image")
    assert state.read_output(0) == b"cantainer: cannot start the container: no image\n"
    assert state.read_output(10, limit=5) == b" cann"


def test_the_attach_mark_lives_outside_and_goes_with_the_state(tmp_path):
    state = StateDir(str(tmp_path), "c0ffee")
    state.mark_attach()  # before the container's directory exists
    assert state.attach_marked() and not state.exists()
    assert os.path.exists(tmp_path / "attach" / "c0ffee")
    state.create()
    state.write_pid(1)
    state.remove()
    assert not state.exists() and not state.attach_marked()
    assert StateDir.ids(str(tmp_path)) == []
    state.remove()  # twice is no error


def test_the_last_lines_of_the_output_for_logs_tail(tmp_path):
    state = StateDir(str(tmp_path), "c0ffee")
    assert state.tail_offset(3) == 0, "no output yet"
    state.create()
    lines = [f"line {i}\n".encode() for i in range(1000)]
    with open(state.output, "wb") as f:
        f.write(b"".join(lines))
    for n, block in [(1, 1 << 16), (3, 7), (999, 64), (1000, 5), (5000, 1 << 16)]:
        offset = state.tail_offset(n, block=block)
        assert state.read_output(offset, 1 << 20) == b"".join(lines[-n:]), (n, block)
    assert state.read_output(state.tail_offset(0), 1 << 20) == b"", "--tail 0: nothing"
    with open(state.output, "ab") as f:
        f.write(b"no newline yet")
    assert state.read_output(state.tail_offset(2, block=4), 1 << 20) == \
        b"line 999\nno newline yet"


def test_output_times_stamp_each_line_with_when_its_piece_came(tmp_path):
    import os as _os
    import time as _time

    from cantainer.api.containers import _Stamper
    from cantainer.kernel.statedir import StateDir as _StateDir

    state = _StateDir(str(tmp_path), "ab" * 32)
    state.create()
    source, sink = _os.pipe()
    _os.write(sink, b"one\ntw")
    _os.close(sink)
    before = _time.time_ns()
    state.copy_output(source)
    state.say("three")  # the runtime's own line, timed too
    data = state.read_output(0)
    assert data == b"one\ntwthree\n"
    times = state.output_times()
    first, later = times.at(0), times.at(len(b"one\ntw"))
    assert before <= first <= later <= _time.time_ns()
    lines = _Stamper(times, 0)(data).split(b"\n")
    assert lines[0].endswith(b"Z one") and lines[0][:4].isdigit() and b"T" in lines[0]
    assert lines[1].endswith(b"Z twthree"), lines
    split = _Stamper(times, 0)
    assert split(b"on") + split(b"e\ntw") == _Stamper(times, 0)(b"one\ntw"), \
        "a line cut between two reads gets one stamp"
    assert _Stamper(_StateDir(str(tmp_path), "cd" * 32).output_times(), 0)(b"x\n") == b"- x\n"
