"""TraceAssembly: holding until the local root ends, root grace and cross-trace edits, bounds, timeouts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from trace_helpers import edit, llm, make_assembly, new_id, span

from otel_tokenfix.trace import assembly as asm

make = make_assembly


def test_llm_spans_held_until_local_root_ends() -> None:
    a, _ = make()
    t, root_id = new_id(), new_id()
    call = llm(t, [1, 2], parent=root_id)
    step = span(t, parent=root_id, events=(edit(5, "x"),))
    plain = span(t, parent=root_id)
    r1 = a.add(call)
    assert r1.held and r1.releases == [] and len(a) == 1
    r2 = a.add(step)
    assert not r2.held and r2.releases == []
    assert not a.add(plain).held
    root = span(t, span_id=root_id)
    r3 = a.add(root)
    assert not r3.held
    [rel] = r3.releases
    assert rel.spans == (call,) and rel.context == (step,) and rel.complete and rel.correct
    assert rel.reason == asm.REASON_COMPLETE and len(a) == 0 and a.held_traces == 0


def test_trace_without_llm_spans_leaves_nothing_behind() -> None:
    a, _ = make()
    t, root_id = new_id(), new_id()
    assert a.add(span(t, parent=root_id)).releases == []
    assert a.add(span(t, span_id=root_id)).releases == []
    assert a.held_traces == 0 and len(a._traces) == 0


def test_untargeted_edit_in_trace_without_llm_is_released_for_reporting() -> None:
    a, _ = make()
    t, root_id = new_id(), new_id()
    a.add(span(t, parent=root_id, events=(edit(3, "x"),)))
    [rel] = a.add(span(t, span_id=root_id)).releases
    assert rel.spans == () and len(rel.context) == 1


def test_remote_parent_is_local_root() -> None:
    a, _ = make()
    t = new_id()
    call = llm(t, [1], parent=new_id())
    a.add(call)
    [rel] = a.add(span(t, parent=new_id(), remote_parent=True)).releases
    assert rel.spans == (call,)


def test_root_llm_span_grace_receives_edit_from_later_trace() -> None:
    a, clock = make(root_grace=5)
    t1, t2 = new_id(), new_id()
    root_call = llm(t1, [1, 2, 3], extra={"gen_ai.response.id": "r-1"})
    assert a.add(root_call).releases == []  # held for grace
    clock.t = 1
    carrier = span(t2, events=(edit(10, "fixed", target__span_id=root_call.span_id_hex),
                               edit(11, "again", target__response_id="r-1"),
                               edit(12, "untargeted")))
    res = a.add(carrier)
    assert not res.held and a.routed_edits == 2
    # the carrier's own trace (a root: complete) is released to report its untargeted edit, with notes
    [own] = res.releases
    assert own.trace_id == t2 and own.spans == () and own.context == (carrier,)
    assert own.edit_notes == {(carrier.span_id, 0): asm.NOTE_ROUTED, (carrier.span_id, 1): asm.NOTE_ROUTED}
    clock.t = 5.5
    rels = a.tick()
    [rel] = [r for r in rels if r.trace_id == t1]
    assert rel.spans == (root_call,) and rel.foreign == (carrier,) and rel.reason == asm.REASON_ROOT_GRACE
    assert rel.correct and rel.complete


def test_carrier_notes_say_routed() -> None:
    a, _ = make(root_grace=5)
    t1, t2, root2 = new_id(), new_id(), new_id()
    root_call = llm(t1, [1])
    a.add(root_call)
    carrier = span(t2, parent=root2, events=(edit(10, "fixed", target__span_id=root_call.span_id_hex),
                                              edit(11, "untargeted")))
    a.add(carrier)
    [rel] = a.add(span(t2, span_id=root2)).releases
    assert rel.edit_notes == {(carrier.span_id, 0): asm.NOTE_ROUTED}
    assert rel.context == (carrier,)


def test_late_edits_are_counted() -> None:
    a, clock = make(root_grace=1)
    t1 = new_id()
    call = llm(t1, [1], extra={"gen_ai.response.id": "r-9"})
    a.add(call)
    clock.t = 2
    assert len(a.tick()) == 1
    t2 = new_id()
    carrier = span(t2, events=(edit(5, "x", target__span_id=call.span_id_hex), edit(6, "y", target__response_id="r-9")))
    a.add(carrier)
    assert a.late_edits == 2
    assert [le.released_because for le in a.recent_late] == [asm.REASON_ROOT_GRACE] * 2
    # untargeted edit on a straggler of an already released trace
    t3, r3 = new_id(), new_id()
    a.add(llm(t3, [1], parent=r3))
    a.add(span(t3, span_id=r3))
    a.add(span(t3, parent=r3, events=(edit(9, "late"),)))
    assert a.late_edits == 3


def test_hold_timeout_releases_uncorrected() -> None:
    a, clock = make(hold_timeout=10)
    t = new_id()
    call = llm(t, [1], parent=new_id())
    a.add(call)
    clock.t = 9.9
    assert a.tick() == []
    assert a.next_deadline() == 10
    clock.t = 10
    [rel] = a.tick()
    assert rel.spans == (call,) and not rel.correct and not rel.complete and rel.reason == asm.REASON_TIMEOUT


def test_max_traces_releases_oldest() -> None:
    a, _ = make(max_traces=2)
    calls = [llm(new_id(), [i], parent=new_id()) for i in range(3)]
    assert a.add(calls[0]).releases == [] and a.add(calls[1]).releases == []
    [rel] = a.add(calls[2]).releases
    assert rel.spans == (calls[0],) and rel.reason == asm.REASON_MAX_TRACES and not rel.correct


def test_max_spans_releases_oldest() -> None:
    a, _ = make(max_spans=3)
    t1, t2 = new_id(), new_id()
    a.add(llm(t1, [1], parent=1))
    a.add(llm(t1, [2], parent=1))
    a.add(llm(t2, [3], parent=2))
    [rel] = a.add(llm(t2, [4], parent=2)).releases
    assert rel.trace_id == t1 and len(rel.spans) == 2 and rel.reason == asm.REASON_MAX_SPANS
    assert len(a) == 2


def test_drain_releases_everything_with_edits() -> None:
    a, _ = make(root_grace=5)
    t1, t2 = new_id(), new_id()
    a.add(llm(t1, [1]))
    a.add(llm(t2, [2], parent=new_id()))
    rels = a.drain(asm.REASON_SHUTDOWN)
    assert sorted(r.trace_id for r in rels) == sorted([t1, t2])
    assert all(r.correct and r.reason == asm.REASON_SHUTDOWN for r in rels)
    assert {r.trace_id: r.complete for r in rels} == {t1: True, t2: False}
    assert len(a) == 0 and a.drain() == []


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.booleans(), st.integers(0, 3)), max_size=60),
       st.integers(1, 4), st.integers(1, 6))
def test_every_held_span_leaves_exactly_once(ops, max_traces, max_spans) -> None:
    a, clock = make(max_traces=max_traces, max_spans=max_spans, hold_timeout=5, root_grace=2)
    roots = {t: new_id() for t in range(5)}
    held: list[int] = []
    out: list[int] = []
    for trace, is_llm, is_root, dt in ops:
        clock.t += dt
        tid = 1000 + trace
        if is_root:
            s = (llm(tid, [1], span_id=roots[trace]) if is_llm else span(tid, span_id=roots[trace]))
            roots[trace] = new_id()
        else:
            s = llm(tid, [1], parent=roots[trace]) if is_llm else span(tid, parent=roots[trace])
        res = a.add(s)
        if res.held:
            held.append(s.span_id)
        for rel in res.releases:
            out.extend(x.span_id for x in rel.spans)
        assert len(a) <= max_spans
    for rel in a.drain():
        out.extend(x.span_id for x in rel.spans)
    assert sorted(out) == sorted(held) and len(set(out)) == len(out)
    assert len(a) == 0


def test_max_ids_bounds_memory_by_token_count() -> None:
    a, _ = make(max_ids=25)
    t1, t2 = new_id(), new_id()
    a.add(llm(t1, list(range(10)), parent=1))
    a.add(llm(t1, list(range(10)), parent=1))
    assert a.held_ids == 20
    big = span(t2, parent=2, name="llm", attrs={"llm.hosted_vllm.response_token_ids": repr([list(range(100, 110))])})
    [rel] = a.add(big).releases  # a repr string is weighed by length too (~10 ids)
    assert rel.trace_id == t1 and rel.reason == asm.REASON_MAX_IDS and not rel.correct
    assert a.held_ids < 25 and len(a) == 1


def test_late_part_of_an_ended_root_waits_a_sliding_grace_not_the_timeout() -> None:
    a, clock = make(root_grace=0, late_grace=2, hold_timeout=1000)
    t, root_id = new_id(), new_id()
    first = llm(t, [1], parent=root_id)
    a.add(first)
    [rel] = a.add(span(t, span_id=root_id)).releases  # the root returns before its last step
    assert rel.spans == (first,)
    clock.t = 10
    late = llm(t, [2], parent=new_id())  # the last step's LLM span ends after the root
    assert a.add(late).held
    clock.t = 11.5
    carrier = span(t, parent=late.parent_span_id, events=(edit(int(11.5e9), "x"),))
    assert a.add(carrier).releases == []  # activity: the grace slides to 13.5
    clock.t = 12.5
    assert a.tick() == []
    clock.t = 13.5
    [rel] = a.tick()
    assert rel.spans == (late,) and rel.context == (carrier,) and rel.correct
    assert rel.reason == asm.REASON_LATE_PART and not rel.complete  # a fragment of its trace
    assert a.late_edits == 0


def test_late_part_without_grace_leaves_at_once_and_a_second_local_root_ends_it() -> None:
    a, _ = make(root_grace=0, late_grace=0)
    t, root_id = new_id(), new_id()
    a.add(span(t, span_id=root_id, events=(edit(1, "nothing to edit yet"),)))
    late = llm(t, [2], parent=new_id())
    [rel] = a.add(late).releases
    assert rel.spans == (late,) and rel.reason == asm.REASON_LATE_PART
    b, _ = make(late_grace=5)
    t2 = new_id()
    b.end_root(t2)  # first request of a distributed trace ended
    part = llm(t2, [3], parent=new_id())
    b.add(part)
    [rel] = b.end_root(t2)  # the second request's local root ends the late part at once
    assert rel.spans == (part,) and rel.reason == asm.REASON_COMPLETE


def test_memory_update_in_bulk_remembers_like_one_set_at_a_time() -> None:
    """The express log is folded into the released-span memories in bulk: the memory still keeps at least the
    last ``size`` keys (and at most a bounded number), as with one ``set`` per key."""
    from otel_tokenfix.trace.assembly import _Memory

    for n in (3, 10, 11, 25, 64):
        bulk, one = _Memory(10), _Memory(10)
        keys = list(range(n))
        bulk.update(dict.fromkeys(keys, "r"))
        for k in keys:
            one.set(k, "r")
        assert all(k in bulk for k in keys[-10:]) and all(k in one for k in keys[-10:])
        assert len(bulk) <= 30 and all(bulk.get(k) == "r" for k in keys[-10:])
