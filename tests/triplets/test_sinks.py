"""Sinks: whole-line appends under concurrency and SIGKILL, retrying without loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from otel_tokenfix.triplets.record import TripletRecord, read_jsonl
from otel_tokenfix.triplets.sinks import CallableSink, JsonlSink, MemorySink, RetryingSink, TripletSink, make_sink


def rec(i: int, n: int = 3) -> TripletRecord:
    return TripletRecord(format(i, "032x"), format(i + 1, "016x"), 0, [1, 2], list(range(n)), [1] * n, [1] * n)


def test_make_sink(tmp_path):
    assert isinstance(make_sink(tmp_path / "t.jsonl"), JsonlSink)
    out: list = []
    s = make_sink(out)
    s.write([rec(1), rec(2)])
    assert [r.trace_id for r in out] == [rec(1).trace_id, rec(2).trace_id]
    batches: list = []
    CallableSink(batches.append, batch=True).write([rec(1), rec(2)])
    assert len(batches) == 1 and len(batches[0]) == 2
    m = MemorySink()
    assert make_sink(m) is m and isinstance(m, TripletSink)
    with pytest.raises(TypeError):
        make_sink(42)


def test_jsonl_lines_roundtrip(tmp_path):
    path = tmp_path / "sub" / "t.jsonl"
    s = JsonlSink(path, fsync=True)
    s.write([rec(1), rec(2)])
    s.write([rec(3)])
    s.close()
    lines = path.read_text().splitlines()
    assert [TripletRecord.from_json(x) for x in lines] == [rec(1), rec(2), rec(3)]


def test_read_jsonl_skips_a_torn_line(tmp_path):
    path = tmp_path / "t.jsonl"
    s = JsonlSink(path)
    s.write([rec(1), rec(2)])
    s.close()
    with open(path, "a") as fh:
        fh.write('{"trace_id": "x", "span_')  # a writer outside our sink died mid-line
    assert list(read_jsonl(path)) == [rec(1), rec(2)]
    with pytest.raises(ValueError, match=":3:"):
        list(read_jsonl(path, strict=True))


def test_jsonl_reopens_after_rotation(tmp_path):
    path = tmp_path / "t.jsonl"
    s = JsonlSink(path)
    s.write([rec(1)])
    path.rename(tmp_path / "t.jsonl.1")  # logrotate
    s.write([rec(2)])
    path.unlink()  # deleted under us
    s.write([rec(3)])
    s.close()
    assert [TripletRecord.from_json(x) for x in (tmp_path / "t.jsonl.1").read_text().splitlines()] == [rec(1)]
    assert [TripletRecord.from_json(x) for x in path.read_text().splitlines()] == [rec(3)]


WRITER = textwrap.dedent(
    """
    import sys
    from otel_tokenfix.triplets.record import TripletRecord, read_jsonl
    from otel_tokenfix.triplets.sinks import JsonlSink
    path, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = JsonlSink(path)
    i = 0
    while n < 0 or i < n:
        recs = [TripletRecord(format(who, "032x"), format(i + 1, "016x"), k, [who] * 10, list(range(20000)),
                              [1] * 20000, [1] * 20000) for k in range(3)]
        s.write(recs)
        i += 1
        if n < 0 and i == 2:
            print("ready", flush=True)
    """
)


def test_concurrent_processes_never_interleave_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), "15"]) for w in range(1, 4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    objs = [json.loads(x) for x in lines[:-1]]  # every line is whole JSON (~100 KB each)
    assert len(objs) == 3 * 15 * 3
    # a trace's lines are contiguous (one write per trace)
    for k in range(0, len(objs), 3):
        assert len({(o["trace_id"], o["span_id"]) for o in objs[k : k + 3]}) == 1
        assert [o["index"] for o in objs[k : k + 3]] == [0, 1, 2]


def test_sigkill_mid_stream_leaves_only_whole_lines(tmp_path):
    """Killed mid-stream, a writer leaves whole lines; the one exception is the kernel's: Linux may stop a
    write of many pages at a page boundary once SIGKILL is pending, so the very last line may be a
    fragment (readers skip it). Every line before it is whole, and the writer's own trace granularity
    holds (whole traces of 3 lines)."""
    path = tmp_path / "t.jsonl"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "7", "-1"], stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    data = path.read_bytes()
    lines = data.split(b"\n")
    whole, tail = lines[:-1], lines[-1]
    assert len(whole) >= 6
    for x in whole:
        assert json.loads(x)["trace_id"] == format(7, "032x")
    if not tail:  # the kill came between writes: whole traces only
        assert len(whole) % 3 == 0
    assert len(list(read_jsonl(path))) == len(whole)



class Flaky:
    """A real sink that fails the first ``fails`` writes (e.g. a full disk, a down endpoint)."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.got: list[TripletRecord] = []
        self.closed = False

    def write(self, records):
        if self.fails > 0:
            self.fails -= 1
            raise OSError("disk full")
        self.got.extend(records)

    def flush(self):
        pass

    def close(self):
        self.closed = True


def test_retrying_sink_keeps_order_and_loses_nothing(caplog):
    now = [0.0]
    inner = Flaky(fails=3)
    s = RetryingSink(inner, backoff_s=1.0, max_backoff_s=4.0, clock=lambda: now[0])
    s.write([rec(1)])  # fails (1)
    assert s.pending == 1 and s.stats.failures == 1
    s.write([rec(2)])  # within the backoff: not retried yet
    assert s.stats.failures == 1 and s.pending == 2
    now[0] = 1.5
    s.write([rec(3)])  # retried, fails (2), backoff doubles
    assert s.stats.failures == 2 and s.pending == 3
    now[0] = 2.0
    assert s.flush() is False  # backoff (2 s) not over: nothing tried
    assert s.stats.failures == 2
    assert s.flush(force=True) is False  # forced: fails (3)
    assert s.flush(force=True) is True
    assert [r.trace_id for r in inner.got] == [rec(i).trace_id for i in (1, 2, 3)]
    assert s.pending == 0 and s.stats.written == 3 and s.stats.dropped == 0
    assert "disk full" in caplog.text


def test_retrying_sink_bound_drops_oldest_loudly(caplog):
    inner = Flaky(fails=10**6)
    s = RetryingSink(inner, max_pending=4, backoff_s=100.0)
    for i in range(6):
        s.write([rec(i), rec(i + 100)])
    assert s.pending == 4 and s.stats.dropped == 8
    assert "dropped" in caplog.text
    assert s.close() is False and inner.closed
    assert "not written" in caplog.text


def test_a_torn_last_line_is_closed_off_before_the_next_writer_appends(tmp_path, caplog):
    """After a writer was killed mid-write, the next one's first record must not be glued to the fragment."""
    path = tmp_path / "t.jsonl"
    s = JsonlSink(path)
    s.write([rec(1)])
    s.close()
    with open(path, "ab") as fh:
        fh.write(rec(2).to_json_line()[:40])  # what a SIGKILL mid-write can leave
    s2 = JsonlSink(path)
    s2.write([rec(3)])
    s2.write([rec(4)])
    s2.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and b"" not in lines[:-1]  # no blank line
    assert list(read_jsonl(path)) == [rec(1), rec(3), rec(4)]  # only the fragment is skipped
    assert "torn line" in caplog.text
    s3 = JsonlSink(path)  # a whole file is left alone
    s3.write([rec(5)])
    s3.close()
    assert list(read_jsonl(path)) == [rec(1), rec(3), rec(4), rec(5)]
    assert path.read_bytes().count(b"\n") == 5


def test_writers_starting_on_a_torn_file_together_close_it_off_once(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(rec(9).to_json_line() + rec(9).to_json_line()[:25])
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), "4"]) for w in range(1, 4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and b"" not in lines[:-1]
    assert len(list(read_jsonl(path))) == 1 + 3 * 4 * 3  # every record of every writer is readable
