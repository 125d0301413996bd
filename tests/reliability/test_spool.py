"""The crash-safe spool on its own: records survive reopen, torn tails and SIGKILL; commits compact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_tokenfix.service.spool import Spool, SpoolLedger, TripletDedup, sink_keys


def segments(path):
    return sorted(p.name for p in path.iterdir() if p.name.startswith("spool-"))


def test_append_survives_reopen_in_order(tmp_path):
    with Spool(tmp_path) as sp:
        seqs = [sp.append(f"req-{i}".encode()) for i in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert sp.pending() == []  # pending = found at open, not what this run appended
    with Spool(tmp_path) as sp:
        assert sp.pending() == [(i + 1, f"req-{i}".encode()) for i in range(5)]
        assert sp.stats.recovered == 5
        assert sp.append(b"next") == 6  # sequence numbers never restart


def test_committed_requests_are_not_replayed(tmp_path):
    with Spool(tmp_path) as sp:
        a, b, c = (sp.append(x) for x in (b"a", b"b", b"c"))
        sp.commit([a, c])
    with Spool(tmp_path) as sp:
        assert sp.pending() == [(b, b"b")]
        assert sp.uncommitted() == 1


def test_torn_tail_is_truncated_and_appends_stay_readable(tmp_path):
    with Spool(tmp_path) as sp:
        sp.append(b"whole")
    seg = tmp_path / segments(tmp_path)[-1]
    good = seg.stat().st_size
    with open(seg, "ab") as fh:  # half a record: what a crash mid-write leaves
        fh.write(b"TS\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x10\x00garb")
    with Spool(tmp_path) as sp:
        assert sp.stats.torn_bytes > 0
        assert seg.stat().st_size == good
        assert [p for _, p in sp.pending()] == [b"whole"]
        sp.append(b"after")
    with Spool(tmp_path) as sp:
        assert [p for _, p in sp.pending()] == [b"whole", b"after"]
        assert sp.stats.torn_bytes == 0


def test_flipped_byte_is_detected_by_checksum(tmp_path):
    with Spool(tmp_path) as sp:
        for x in (b"one", b"two-two", b"three"):
            sp.append(x)
    seg = tmp_path / segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    idx = data.index(b"two-two")
    data[idx] ^= 0xFF
    seg.write_bytes(bytes(data))
    with Spool(tmp_path) as sp:
        assert sp.stats.corrupt_records == 1
        assert [p for _, p in sp.pending()] == [b"one", b"three"]


def test_a_damaged_length_does_not_hide_the_records_after_it(tmp_path):
    """Resynchronisation on the next valid record: one damaged header must not lose later requests."""
    with Spool(tmp_path) as sp:
        for x in (b"first", b"second-record", b"third", b"fourth"):
            sp.append(x)
    seg = tmp_path / segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    idx = data.index(b"second-record") - 8  # the length field of record 2
    data[idx : idx + 4] = (10**6).to_bytes(4, "big")
    seg.write_bytes(bytes(data))
    with Spool(tmp_path) as sp:
        assert [p for _, p in sp.pending()] == [b"first", b"third", b"fourth"]
        assert sp.stats.corrupt_records == 1
        assert sp.append(b"fifth") == 5
    with Spool(tmp_path) as sp:
        assert [p for _, p in sp.pending()] == [b"first", b"third", b"fourth", b"fifth"]


DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from otel_tokenfix.service.spool import Spool, SpoolError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    sp = Spool(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # the 'disk' fills up
    failed = 0
    for i in range(60):
        try:
            seq = sp.append(b"r%d-" % i + bytes(700))
            print("ack", seq, i, flush=True)
        except SpoolError:
            failed += 1
            print("fail", i, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    for i in range(60, 70):
        print("ack", sp.append(b"r%d-" % i + bytes(700)), i, flush=True)
    """
)


def test_a_failed_append_leaves_no_half_record_in_front_of_later_ones(tmp_path):
    """A real write failure (file size limit, as on a full disk): the failed requests were never
    acknowledged, and every acknowledged one before and after is recovered."""
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    acked = {
        int(seq): int(i) for kind, seq, i in (ln.split() for ln in out.stdout.splitlines() if ln.startswith("ack"))
    }
    assert any(ln.startswith("fail") for ln in out.stdout.splitlines())
    with Spool(tmp_path) as sp:
        pending = dict(sp.pending())
    assert set(pending) == set(acked)
    for seq, i in acked.items():
        assert pending[seq] == b"r%d-" % i + bytes(700)


def test_compaction_deletes_only_fully_committed_segments(tmp_path):
    with Spool(tmp_path, segment_bytes=100) as sp:
        seqs = [sp.append(bytes(100)) for _ in range(6)]  # ~one record per segment
        assert len(segments(tmp_path)) == 7  # one record per segment + the empty active one
        sp.commit(seqs[1:])  # the oldest is still open: nothing may go
        assert segments(tmp_path)[0] == "spool-000000000001.log"
        sp.commit(seqs[0])
        sp.compact()
        assert len(segments(tmp_path)) == 1
        assert sp.uncommitted() == 0
    with Spool(tmp_path) as sp:
        assert sp.pending() == []
        assert sp.append(b"x") == 7


def test_compact_when_fully_committed_leaves_an_empty_active_segment(tmp_path):
    with Spool(tmp_path) as sp:
        sp.commit([sp.append(b"a" * 1000), sp.append(b"b")])
        assert sp.compact() == 1
    (only,) = segments(tmp_path)
    assert (tmp_path / only).stat().st_size == 0


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.binary(max_size=300)),
            st.tuples(st.just("commit"), st.integers(0, 40)),
            st.tuples(st.just("reopen"), st.just(b"")),
            st.tuples(st.just("compact"), st.just(b"")),
            st.tuples(st.just("tear"), st.integers(1, 30)),
        ),
        max_size=40,
    ),
    segment_bytes=st.sampled_from([64, 500, 1 << 20]),
)
def test_model_pending_equals_appended_minus_committed(tmp_path_factory, ops, segment_bytes):
    """Against a plain model: after any mix of appends, commits, compactions, reopens and torn partial
    writes, the requests to replay are exactly the acknowledged, uncommitted ones, in order."""
    d = tmp_path_factory.mktemp("spool")
    sp = Spool(d, fsync=False, segment_bytes=segment_bytes)
    acked: dict[int, bytes] = {}
    committed: set[int] = set()
    try:
        for op, arg in ops:
            if op == "append":
                acked[sp.append(arg)] = arg
            elif op == "commit" and acked:
                seq = sorted(acked)[arg % len(acked)]
                sp.commit(seq)
                committed.add(seq)
            elif op == "compact":
                sp.compact()
            elif op in ("reopen", "tear"):
                sp.close()
                if op == "tear":
                    last = sorted(p for p in d.iterdir() if p.name.startswith("spool-"))[-1]
                    with open(last, "ab") as fh:
                        fh.write(b"TS\x01" + bytes(arg))  # a record header cut short
                sp = Spool(d, fsync=False, segment_bytes=segment_bytes)
                expect = [(s, acked[s]) for s in sorted(acked) if s not in committed]
                assert sp.pending() == expect
        sp.close()
        sp = Spool(d, fsync=False, segment_bytes=segment_bytes)
        assert sp.pending() == [(s, acked[s]) for s in sorted(acked) if s not in committed]
    finally:
        sp.close()


CHILD = textwrap.dedent(
    """
    import sys
    from otel_tokenfix.service.spool import Spool
    sp = Spool(sys.argv[1])
    i = 0
    while True:
        seq = sp.append(b"payload-%d-" % i + bytes(i % 5000))
        if i % 3 == 0:
            sp.commit(seq)
        print(seq, i, flush=True)  # the 'acknowledgement': only after append returned
        i += 1
    """
)


def test_sigkill_mid_stream_loses_no_acknowledged_request(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acked: dict[int, int] = {}
    try:
        for line in proc.stdout:
            seq, i = map(int, line.split())
            acked[seq] = i
            if len(acked) >= 300:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(acked) >= 300
    with Spool(tmp_path) as sp:
        pending = dict(sp.pending())
    for seq, i in acked.items():
        if i % 3 != 0:  # never committed: must be there, byte for byte
            assert pending[seq] == b"payload-%d-" % i + bytes(i % 5000)
    # committed ones are not replayed, except possibly the very last whose marker was cut off
    replayed_committed = [s for s, i in acked.items() if i % 3 == 0 and s in pending]
    assert len(replayed_committed) <= 1


def test_ledger_commits_a_request_once_all_its_spans_are_released():
    led = SpoolLedger()
    assert led.add(1, [("t1", 1), ("t2", 1)]) == []
    assert led.add(2, [("t2", 2)]) == []
    assert led.add(3, []) == [3]  # nothing to wait for
    assert led.released(("t2", 2)) == [2]
    assert led.outstanding() == 1
    assert led.released(("t9", 9)) == []
    assert led.released_many([("t2", 1), ("t1", 1)]) == [1]
    assert led.outstanding() == 0


def test_ledger_a_late_span_of_a_released_trace_keeps_its_request_open():
    """Trace-level accounting would commit request 2 when trace t1 is released, before its span left."""
    led = SpoolLedger()
    led.add(1, [("t1", 1)])
    led.add(2, [("t1", 2)])  # a late span of t1, journaled while t1 is being released
    assert led.released(("t1", 1)) == [1]
    assert led.outstanding() == 1
    assert led.released(("t1", 2)) == [2]


def test_ledger_a_span_sent_twice_is_accounted_to_both_requests_in_turn():
    led = SpoolLedger()
    led.add(1, [("t", 1), ("t", 2)])  # replayed from the spool
    led.add(2, [("t", 1), ("t", 2)])  # and resent by the client
    assert led.released_many([("t", 1), ("t", 2)]) == [1]
    assert led.released_many([("t", 1), ("t", 2)]) == [2]
    led.add(3, [("t", 3), ("t", 3)])  # a duplicated span id inside one request
    assert led.released(("t", 3)) == []
    assert led.released(("t", 3)) == [3]


def test_sink_keys_ignore_a_partial_last_line_and_filter_traces(tmp_path):
    sink = tmp_path / "t.jsonl"
    rows = [{"trace_id": "AB" * 16, "span_id": "01" * 8}, {"trace_id": "cd" * 16, "span_id": "02" * 8}]
    sink.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"trace_id": "ef')
    assert sink_keys(sink) == {("ab" * 16, "01" * 8), ("cd" * 16, "02" * 8)}
    assert sink_keys(sink, ["CD" * 16]) == {("cd" * 16, "02" * 8)}
    assert sink_keys(tmp_path / "missing.jsonl") == set()
    dedup = TripletDedup(sink_keys(sink), remember=2)
    assert not dedup.fresh({"trace_id": "ab" * 16, "span_id": "01" * 8})
    assert dedup.fresh({"trace_id": "ab" * 16, "span_id": "03" * 8})
    assert not dedup.fresh({"trace_id": "AB" * 16, "span_id": "03" * 8})  # written in this run
    assert dedup.fresh({"trace_id": "ab" * 16, "span_id": "04" * 8})
    assert dedup.fresh({"trace_id": "ab" * 16, "span_id": "05" * 8})
    assert dedup.fresh({"trace_id": "ab" * 16, "span_id": "03" * 8})  # forgotten: the memory is bounded
    assert dedup.skipped == 2
