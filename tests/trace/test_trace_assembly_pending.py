"""TraceAssembly's pending lane: spans appended without the caller's lock, taken in by the next locked operation.

The SDK processor appends a non-root LLM span without events to ``pending`` (no lock, nothing read); a root
ending releases its trace's pending spans straight from the lane (``end_express``), and every other locked
operation first takes the lane in as ``add_held`` would. These tests hold that to the general doors.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from trace_helpers import Clock, edit, hold, llm, make_assembly, new_id, span

from otel_tokenfix.trace import assembly as asm
from otel_tokenfix.trace import conventions as cv
from otel_tokenfix.trace.assembly import TraceAssembly, ids_weight


def make(**kw) -> tuple[TraceAssembly, Clock]:
    kw.setdefault("item_weight", lambda s: ids_weight(s.attributes))
    return make_assembly(**kw)


def pend(a: TraceAssembly, s, limit: int = 64) -> list:
    """The SDK processor's protocol for an LLM span without events: a non-root onto the pending lane (taken in
    when the lane is longer than ``limit``), a root through the general door."""
    if s.is_local_root:
        return hold(a, s)
    a.pending.append((s.trace_id, s.span_id, s, cv.read_response_id(s)))
    return a.take_pending() if len(a.pending) > limit else []


def end_plain_root(a: TraceAssembly, tid: int) -> list:
    """The SDK processor's protocol for a plain local root: a lock-free note, then (something held or
    pending) end_express, else end_root."""
    a.note_root_unlocked(tid)
    traces, express = a.holding
    if not (a.pending or traces or express):
        return []
    spans = a.end_express(tid, noted=True)
    if spans is not None:
        return [("express", tuple(spans))]
    return a.end_root(tid)


def outcome(releases: list) -> list:
    out = []
    for rel in releases:
        if isinstance(rel, tuple):  # straight from the lane: complete, corrected, plain
            out.extend((x.span_id, asm.REASON_COMPLETE, True, True) for x in rel[1])
        else:
            out.extend((x.span_id, rel.reason, rel.correct, rel.complete) for x in rel.spans)
    return sorted(out)


def test_a_root_releases_its_pending_spans_without_weighing_them() -> None:
    reads: list[str] = []
    a, _ = make(item_weight=lambda s: reads.append("weight") or 1)
    t, root = new_id(), new_id()
    calls = [llm(t, [1, 2, 3], parent=root, extra={"gen_ai.response.id": f"r{i}"}) for i in range(2)]
    for c in calls:
        assert pend(a, c) == []
    assert len(a) == 2 and a.held_traces == 1 and not a.root_ended_unlocked(new_id())
    assert a.end_express(t) == calls
    assert reads == []  # never weighed: they left before anything needed it
    assert len(a) == 0 and a.held_ids == 0 and not a.pending
    # the released memories know them: edits naming them are late, not unknown
    carrier = span(new_id(), events=(edit(5, "x", target__span_id=calls[0].span_id_hex),
                                      edit(6, "y", target__response_id="r1")))
    a.add(carrier)
    assert a.late_edits == 2 and {le.released_because for le in a.recent_late} == {asm.REASON_COMPLETE}


def test_end_express_leaves_other_traces_pending_untouched() -> None:
    a, _ = make()
    t1, t2 = new_id(), new_id()
    c1, c2, c3, c4 = llm(t1, [1], parent=1), llm(t1, [3], parent=1), llm(t2, [2], parent=2), llm(t1, [4], parent=1)
    for c in (c1, c2, c3, c4):
        pend(a, c)
    before = list(a.pending)
    assert a.end_express(t1) is None  # t2's span is in between: the full path must take the lane in order
    assert list(a.pending) == before
    [rel] = a.end_root(t1)
    assert rel.spans == (c1, c2, c4) and rel.plain and rel.complete
    assert t2 in a._express and not a.pending  # noqa: SLF001 - taken into the express lane
    assert a.end_express(t2) == [c3]


def test_a_failing_weight_reader_weighs_nothing() -> None:
    def boom(s):
        raise ValueError("bad span")

    a, _ = make(item_weight=boom)
    t = new_id()
    pend(a, llm(t, [1, 2], parent=1))
    pend(a, llm(new_id(), [1], parent=2))
    assert a.take_pending() == [] and a.held_ids == 0 and len(a) == 2
    [rel] = a.end_root(t)
    assert len(rel.spans) == 1


def test_a_pending_span_of_an_ended_root_is_a_late_part() -> None:
    a, clock = make(late_grace=2, hold_timeout=1000)
    t = new_id()
    assert a.root_ended_unlocked(t)
    late = llm(t, [1], parent=new_id())
    pend(a, late)
    assert not a.root_ended_unlocked(new_id())  # something pending: the caller must take its lock
    assert a.tick() == [] and a._traces[t].late  # noqa: SLF001
    clock.t = 2
    [rel] = a.tick()
    assert rel.spans == (late,) and rel.reason == asm.REASON_LATE_PART


def test_the_ending_roots_pending_spans_are_not_late_even_if_noted_first() -> None:
    a, _ = make(late_grace=0)
    t, other = new_id(), new_id()
    call, foreign = llm(t, [1], parent=1), llm(other, [2], parent=2)
    pend(a, call)
    pend(a, foreign)
    a.note_root_unlocked(t)  # the processor notes before it looks
    assert a.end_express(t, noted=True) is None  # another trace's span is pending: the full path
    releases = a.end_root(t)
    assert outcome(releases) == [(call.span_id, asm.REASON_COMPLETE, True, True)]


def test_without_a_late_grace_a_pending_late_part_leaves_at_the_next_locked_operation() -> None:
    """Through add_held such a span leaves at once; on the lane, when it is taken in — unless that is another
    local root of its trace ending, which ends the part complete (the rule for late parts)."""
    a, _ = make(late_grace=0)
    t = new_id()
    a.note_root_unlocked(t)
    late = llm(t, [1], parent=new_id())
    pend(a, late)
    assert outcome(a.tick()) == [(late.span_id, asm.REASON_LATE_PART, True, False)]
    again = llm(t, [2], parent=new_id())
    pend(a, again)
    assert outcome(end_plain_root(a, t)) == [(again.span_id, asm.REASON_COMPLETE, True, True)]


def test_drain_and_flush_take_the_lane() -> None:
    a, _ = make()
    calls = [llm(new_id(), [i], parent=new_id()) for i in range(3)]
    for c in calls:
        pend(a, c)
    rels = a.drain(asm.REASON_SHUTDOWN)
    assert sorted(x.span_id for r in rels for x in r.spans) == sorted(c.span_id for c in calls)
    assert len(a) == 0 and not a.pending


OPS = st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["llm", "root", "plain_root", "edit", "tick"]),
                         st.integers(0, 3)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 4), st.integers(1, 6), st.sampled_from(["general", "lane"]), st.integers(0, 3),
       st.sampled_from([0, 1]))
def test_every_span_leaves_exactly_once_within_the_bounds(ops, max_traces, max_spans, door, limit, late_grace) -> None:
    """Through either door (add_held, or the pending lane taken in beyond ``limit`` spans), with bounds, time
    and edits settling the express lane: each held span leaves once, and nothing stays held."""
    a, clock = make(max_traces=max_traces, max_spans=max_spans, hold_timeout=5, root_grace=2, late_grace=late_grace)
    lane = door == "lane"
    roots = {t: new_id() for t in range(5)}
    held: list[int] = []
    out: list[int] = []
    for trace, kind, dt in ops:
        clock.t += dt
        tid = 1000 + trace
        releases: list = []
        if kind in ("llm", "root"):
            if kind == "llm":
                s = llm(tid, [1, 2], parent=roots[trace])
            else:  # a root LLM span: held with a root grace
                s = llm(tid, [1], span_id=roots[trace])
                roots[trace] = new_id()
            releases = pend(a, s, limit) if lane else hold(a, s)
            held.append(s.span_id)
        elif kind == "plain_root":
            if lane:
                releases = end_plain_root(a, tid)
            elif not a.root_ended_unlocked(tid):
                releases = a.end_root(tid)
            roots[trace] = new_id()
        elif kind == "edit":
            res = a.add(span(tid, parent=roots[trace], events=(edit(int(clock.t * 1e9), "x"),)))
            assert not res.held
            releases = res.releases
        else:
            releases = a.tick()
        for rel in releases:
            out.extend(x.span_id for x in (rel[1] if isinstance(rel, tuple) else rel.spans))
        # the bounds hold for what was taken in; at most ``limit`` spans wait on the lane beyond them
        assert a.held_spans <= max_spans and len(a._traces) + len(a._express) <= max_traces  # noqa: SLF001
        assert len(a.pending) <= (limit if lane else 0)
    for rel in a.drain():
        out.extend(x.span_id for x in rel.spans)
    assert sorted(out) == sorted(held) and len(set(out)) == len(out)
    assert len(a) == 0 and a.held_ids == 0 and not a.pending


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["llm", "llm", "root", "plain_root", "edit", "tick"])),
                max_size=60))
def test_the_lane_releases_what_the_general_door_does(ops) -> None:
    """With the clock still and no bound reached, a span through the lane leaves in the same release, with the
    same reason, as through add_held: compared at every locked operation (an append alone decides nothing).
    A late grace, as any grace, is longer than no time (for none, see the test below)."""
    kw = dict(max_traces=100, max_spans=1000, hold_timeout=5, root_grace=2, late_grace=1)
    fast, _ = make(**kw)
    ref, _ = make(**kw)
    roots = {t: new_id() for t in range(5)}
    got: list = []
    want: list = []
    for trace, kind in ops:
        tid = 1000 + trace
        if kind == "llm":
            s = llm(tid, [1, 2], parent=roots[trace], extra={"gen_ai.response.id": f"r{new_id()}"})
            got += pend(fast, s)
            want += hold(ref, s)
            continue  # nothing taken in yet: no comparison
        if kind == "root":
            s = llm(tid, [1], span_id=roots[trace])
            roots[trace] = new_id()
            got += pend(fast, s)
            want += hold(ref, s)
        elif kind == "plain_root":
            got += end_plain_root(fast, tid)
            want += [] if ref.root_ended_unlocked(tid) else ref.end_root(tid)
            roots[trace] = new_id()
        elif kind == "edit":
            e = span(tid, parent=roots[trace], events=(edit(len(got) + len(want), "x"),))
            got += fast.add(e).releases
            want += ref.add(e).releases
        else:
            got += fast.tick()
            want += ref.tick()
        assert not fast.pending
        assert outcome(got) == outcome(want), kind
        assert (len(fast), fast.held_traces) == (len(ref), ref.held_traces)
        assert (fast.late_edits, fast.routed_edits) == (ref.late_edits, ref.routed_edits)
    assert outcome(got + fast.drain()) == outcome(want + ref.drain())
