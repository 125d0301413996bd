"""TraceAssembly's express lane (``add_held``, the SDK processor's hot path): the same guarantees as ``add``.

Express traces hold raw items with no index; anything needing more (an edit event, a bound, a timeout,
a flush) settles them into full entries first, and their releases are written into the memories of
released spans before any lookup, so routing and late-edit detection see them.
"""

from __future__ import annotations

import dataclasses

from trace_helpers import edit, hold, llm, make_assembly, new_id, span

from otel_tokenfix.trace import assembly as asm

make = make_assembly


def test_express_trace_released_plain_at_its_root() -> None:
    a, _ = make()
    t, root = new_id(), new_id()
    call = llm(t, [1, 2, 3], parent=root)
    assert hold(a, call, item="raw span") == []
    assert t in a._express and len(a) == 1 and a.held_traces == 1 and a.held_ids == 3
    assert not a.root_ended_unlocked(t)  # something is held: the caller must take its lock
    [rel] = a.end_root(t)
    assert rel.spans == ("raw span",) and rel.plain and rel.correct and rel.complete
    assert rel.context == () and rel.foreign == () and not rel.edit_notes
    assert len(a) == 0 and a.held_ids == 0 and a.held_traces == 0
    assert a.released_reason(t) == asm.REASON_COMPLETE
    # the triplet exporter rebuilds releases with dataclasses.replace
    assert dataclasses.replace(rel, spans=()).spans == () and rel.spans == ("raw span",)


def test_edit_after_an_express_release_is_late_by_span_id_response_id_and_trace() -> None:
    a, _ = make()
    t, root = new_id(), new_id()
    call = llm(t, [1], parent=root, extra={"gen_ai.response.id": "resp-1"})
    hold(a, call)
    a.end_root(t)
    carrier = span(new_id(), events=(edit(5, "x", target__span_id=call.span_id_hex),
                                      edit(6, "y", target__response_id="resp-1")))
    a.add(carrier)
    assert a.late_edits == 2
    assert [le.released_because for le in a.recent_late] == [asm.REASON_COMPLETE] * 2
    a.add(span(t, parent=root, events=(edit(9, "untargeted, same trace"),)))  # a straggler of trace t
    assert a.late_edits == 3


def test_targeted_edit_from_another_trace_is_routed_into_an_express_trace() -> None:
    a, _ = make()
    t1, root1 = new_id(), new_id()
    call = llm(t1, [1, 2], parent=root1)
    hold(a, call)
    t2 = new_id()
    carrier = span(t2, events=(edit(5, "x", target__span_id=call.span_id_hex),))
    assert a.add(carrier).releases == []  # the carrier is a root: its own trace ends, nothing to release
    assert a.routed_edits == 1 and t1 not in a._express  # settled into a full entry
    [rel] = a.end_root(t1)
    assert rel.spans == (call,) and rel.foreign == (carrier,) and not rel.plain


def test_untargeted_edit_in_the_same_trace_settles_it() -> None:
    a, _ = make()
    t, root = new_id(), new_id()
    call = llm(t, [1], parent=root)
    hold(a, call)
    step = span(t, parent=root, events=(edit(5, "x"),))
    assert not a.add(step).held
    [rel] = a.end_root(t)
    assert rel.spans == (call,) and rel.context == (step,) and not rel.plain


def test_express_hold_timeout() -> None:
    a, clock = make(hold_timeout=10)
    t = new_id()
    call = llm(t, [1], parent=new_id())
    hold(a, call)
    clock.t = 9.9
    assert a.tick() == []
    assert a.next_deadline() == 10
    clock.t = 10
    [rel] = a.tick()
    assert rel.spans == (call,) and not rel.correct and not rel.complete and rel.reason == asm.REASON_TIMEOUT
    assert len(a) == 0 and a.next_deadline() is None


def test_express_bounds_count_and_release_oldest_first() -> None:
    a, _ = make(max_traces=2)
    calls = [llm(new_id(), [i], parent=new_id()) for i in range(3)]
    assert hold(a, calls[0]) == [] and hold(a, calls[1]) == []
    [rel] = hold(a, calls[2])
    assert rel.spans == (calls[0],) and rel.reason == asm.REASON_MAX_TRACES and not rel.correct
    b, _ = make(max_spans=3)
    t1, t2 = new_id(), new_id()
    hold(b, llm(t1, [1], parent=1))
    hold(b, llm(t1, [2], parent=1))
    hold(b, llm(t2, [3], parent=2))
    [rel] = hold(b, llm(t2, [4], parent=2))
    assert rel.trace_id == t1 and len(rel.spans) == 2 and rel.reason == asm.REASON_MAX_SPANS and len(b) == 2
    c, _ = make(max_ids=25)
    t3, t4 = new_id(), new_id()
    hold(c, llm(t3, list(range(10)), parent=1))
    hold(c, llm(t3, list(range(10)), parent=1))
    assert c.held_ids == 20
    [rel] = hold(c, llm(t4, list(range(10)), parent=2))
    assert rel.trace_id == t3 and rel.reason == asm.REASON_MAX_IDS and c.held_ids == 10


def test_oldest_first_across_express_and_full_entries() -> None:
    a, clock = make(max_traces=2, root_grace=5)
    old = llm(new_id(), [1], parent=new_id())
    hold(a, old)  # express, t=0
    clock.t = 1
    root_call = llm(new_id(), [2])  # a root LLM span: a full entry (root grace), settles the express one
    hold(a, root_call)
    clock.t = 2
    young = llm(new_id(), [3], parent=new_id())
    [rel] = hold(a, young)  # express again; three traces: the oldest leaves
    assert rel.spans == (old,) and rel.reason == asm.REASON_MAX_TRACES


def test_root_ended_unlocked_and_late_parts() -> None:
    a, clock = make(late_grace=2, hold_timeout=1000)
    t = new_id()
    assert a.root_ended_unlocked(t)  # nothing held: settled without a lock
    late = llm(t, [1], parent=new_id())
    assert hold(a, late) == []  # its root already ended: a late part, not an express trace
    assert t not in a._express and a._traces[t].late
    assert not a.root_ended_unlocked(new_id())  # something is held now
    clock.t = 2
    [rel] = a.tick()
    assert rel.spans == (late,) and rel.reason == asm.REASON_LATE_PART
    b, _ = make(late_grace=0)
    t2 = new_id()
    b.end_root(t2)
    [rel] = hold(b, llm(t2, [1], parent=new_id()))  # no grace: the late part leaves at once
    assert rel.reason == asm.REASON_LATE_PART and len(b) == 0


def test_drain_releases_express_traces() -> None:
    a, _ = make()
    calls = [llm(new_id(), [i], parent=new_id()) for i in range(3)]
    for c in calls:
        hold(a, c)
    rels = a.drain(asm.REASON_SHUTDOWN)
    assert sorted(r.spans[0].span_id for r in rels) == sorted(c.span_id for c in calls)
    assert all(r.correct and not r.complete and r.reason == asm.REASON_SHUTDOWN for r in rels)
    assert len(a) == 0 and a.drain() == []


def test_a_root_noted_without_the_lock_makes_a_later_span_a_late_part() -> None:
    a, clock = make(late_grace=2, hold_timeout=1000)
    t = new_id()
    a.note_root_unlocked(t)  # the root ended on another thread, nothing was held
    late = llm(t, [1], parent=new_id())
    assert hold(a, late) == [] and a._traces[t].late and a._express == {}  # noqa: SLF001 - not express
    clock.t = 2
    [rel] = a.tick()
    assert rel.spans == (late,) and rel.reason == asm.REASON_LATE_PART
