"""The processor's hot paths keep every guarantee: untouched spans for traces without edits, the unchanged
mark where an exporter needs it, late edits and routing through the express lane, spans not built by the
SDK, the root/LLM-span race of the lock-free root path, and the SDK internals the hot path relies on."""

from __future__ import annotations

import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, TraceFlags
from processor_helpers import make_pipeline, qwen_ids

from otel_tokenfix import record_edit
from otel_tokenfix.trace import conventions as cv

MODEL = "qwen"


def attrs(tok, text, **extra):
    return {"response_token_ids": tuple(qwen_ids(tok, text)), "gen_ai.request.model": MODEL, **extra}


class Keeping(SpanProcessor):
    """A downstream that keeps the very objects it is given."""

    def __init__(self) -> None:
        self.got: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.got.append(span)


class Spy(SpanProcessor):
    """Records what the SDK hands the processor, then delegates."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self.seen: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.seen.append(span)
        self.inner.on_end(span)


def test_trace_without_edits_goes_out_untouched_and_edited_traces_mark_the_rest(qwen):
    keep = Keeping()
    p = make_pipeline({MODEL: qwen}, downstream=keep)
    spy = Spy(p.processor)
    provider = TracerProvider()
    provider.add_span_processor(spy)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("run"):
        with tracer.start_as_current_span("llm", attributes=attrs(qwen, "One two three.")):
            pass
        assert keep.got == []  # held until the root ends
    llm, run = spy.seen
    assert keep.got[0] is llm and keep.got[1] is run  # the same objects: no copy, no mark
    assert not [k for k in llm.attributes if k.startswith("tokenfix.")]
    keep.got.clear()
    with p.tracer.start_as_current_span("run"):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Alpha beta gamma.")) as first:
            pass
        record_edit("Alpha gamma.", target=first)
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Delta epsilon.")) as second:
            pass
    out = {s.context.span_id: s for s in keep.got if s.name == "llm"}
    edited = out[first.get_span_context().span_id].attributes
    other = out[second.get_span_context().span_id].attributes
    assert edited[cv.STATUS] == cv.STATUS_CORRECTED
    # a trace with edits: every other LLM call says it was processed, so no exporter downstream applies
    # an edit to it whatever order spans reach it in
    assert other[cv.STATUS] == cv.STATUS_UNCHANGED
    assert list(other["response_token_ids"]) == qwen_ids(qwen, "Delta epsilon.")
    st = p.processor.stats
    assert st["unchanged"] == 2 and st["corrected"] == 1 and st["held"] == st["forwarded"] == 3
    assert st["passed"] == 2 and len(keep.got) == 3  # the roots passed (the second one carries the edit)


def test_counters_add_up(qwen):
    keep = Keeping()
    p = make_pipeline({MODEL: qwen}, downstream=keep)
    for i in range(3):
        with p.tracer.start_as_current_span("run"):
            with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, f"Answer {i}.")):
                pass
            with p.tracer.start_as_current_span("step") as step:
                if i == 1:
                    record_edit(f"Answer {i}!")
                step.set_attribute("n", i)
    st = p.processor.stats
    assert len(keep.got) == 9 == st["passed"] + st["forwarded"]
    assert st["held"] == st["forwarded"] == 3 and st["passed"] == 6
    assert st["unchanged"] == 2 and st["corrected"] == 1 and st["held_spans"] == 0 and st["internal_errors"] == 0


def test_late_edit_after_the_trace_left_is_counted(qwen):
    p = make_pipeline({MODEL: qwen})
    with p.tracer.start_as_current_span("run"):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Hello there.", **{
                "gen_ai.response.id": "resp-7"})) as llm:
            pass
    assert cv.STATUS not in p.one("llm").attributes
    record_edit("Hello.", target=llm, tracer_provider=p.provider)
    record_edit("Hi.", target="resp-7", tracer_provider=p.provider)
    st = p.processor.stats
    assert st["late_edits"] == 2 and len(p.named("llm")) == 1
    assert [e.released_because for e in p.processor.recent_late_edits] == ["complete", "complete"]


def test_edit_from_another_trace_reaches_a_held_call(qwen):
    p = make_pipeline({MODEL: qwen})
    run = p.tracer.start_span("run")
    with trace.use_span(run, end_on_exit=False):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "The sky is green today.")) as llm:
            pass
    with p.tracer.start_as_current_span("reviewer"):  # another trace names the call explicitly
        record_edit("The sky is blue today.", target=llm)
    assert p.named("llm") == []
    run.end()
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED and p.processor.stats["routed_edits"] == 1
    assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == "The sky is blue today."


def test_edit_from_another_trace_reaches_a_pending_call_by_response_id(qwen):
    """The call waits on the pending lane (its response id read there): the carrier's trace takes the lane in
    before routing, so the edit still finds it."""
    p = make_pipeline({MODEL: qwen})
    run = p.tracer.start_span("run")
    with trace.use_span(run, end_on_exit=False):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "The sky is green today.", **{
                "gen_ai.response.id": "resp-sky"})):
            pass
    assert len(p.processor._assembly.pending) == 1  # noqa: SLF001 - on the lane, not taken in yet
    with p.tracer.start_as_current_span("reviewer"):
        record_edit("The sky is blue today.", target="resp-sky")
    run.end()
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED and p.processor.stats["routed_edits"] == 1
    assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == "The sky is blue today."


def _ctx(trace_id: int, span_id: int, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def test_spans_not_built_by_the_sdk_take_the_general_path(qwen):
    """ReadableSpans made by hand (plain dict attributes, a list of events) are held and corrected too."""
    p = make_pipeline({MODEL: qwen})
    t, root, call, step = 0xABC, 0x1, 0x2, 0x3
    text = "Plain dicts are fine too."
    llm = ReadableSpan(name="llm", context=_ctx(t, call), parent=_ctx(t, root), attributes=attrs(qwen, text),
                       start_time=10, end_time=20)
    carrier = ReadableSpan(name="step", context=_ctx(t, step), parent=_ctx(t, root), start_time=21, end_time=30,
                           attributes={}, events=[Event(cv.EDIT_EVENT, {cv.EDIT_TEXT: "Plain dicts are fine."}, 25)])
    plain_root = ReadableSpan(name="run", context=_ctx(t, root), parent=None, attributes=None, start_time=1,
                              end_time=40)
    for s in (llm, carrier):
        p.processor.on_end(s)
    assert [s.name for s in p.spans()] == ["step"]
    p.processor.on_end(plain_root)
    assert [s.name for s in p.spans()] == ["step", "llm", "run"]
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED
    assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == "Plain dicts are fine."
    # a remote parent makes a local root, for hand-made spans as for SDK ones
    t2 = 0xDEF
    p.processor.on_end(ReadableSpan(name="llm2", context=_ctx(t2, 0x5), parent=_ctx(t2, 0x4),
                                    attributes=attrs(qwen, "Later."), start_time=1, end_time=2))
    p.processor.on_end(ReadableSpan(name="server", context=_ctx(t2, 0x4), parent=_ctx(t2, 0x9, remote=True),
                                    attributes={"http.route": "/x"}, start_time=1, end_time=3))
    assert [s.name for s in p.spans()][-2:] == ["llm2", "server"] and p.processor.stats["held_spans"] == 0


def test_root_and_llm_span_ending_at_once_on_two_threads_never_strand_the_span(qwen):
    """The lock-free paths on both sides (the LLM span onto the pending lane, the root's note): whatever the
    interleaving, the LLM span leaves at its root's end or as a late part by the next timer tick at the latest,
    never after the hold timeout. Threads switch every microsecond here, so the interleavings do occur."""
    p = make_pipeline({MODEL: qwen}, hold_timeout=3600, late_grace=0, timer_interval=0.02)
    tracer = p.tracer
    a = attrs(qwen, "Race.")
    rounds = 150
    sids: list[int] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(rounds):
            run = tracer.start_span("run")
            llm = tracer.start_span("llm", context=trace.set_span_in_context(run), attributes=a)
            sids.append(llm.get_span_context().span_id)
            barrier = threading.Barrier(2)

            def end(span, barrier=barrier):
                barrier.wait()
                span.end()

            threads = [threading.Thread(target=end, args=(s,)) for s in (run, llm)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            deadline = time.monotonic() + 2
            while p.processor.stats["held_spans"] and time.monotonic() < deadline:
                time.sleep(0.005)
            assert p.processor.stats["held_spans"] == 0
    finally:
        sys.setswitchinterval(interval)
    got = [s.context.span_id for s in p.named("llm")]
    assert sorted(got) == sorted(sids)
    assert p.processor.stats["internal_errors"] == 0


def test_sdk_internals_the_hot_path_relies_on():
    """Pinned: on_end reads ``_events._dq``, ``_attributes._dict``, ``_parent`` and ``_context`` of ended SDK
    spans, and a SpanContext is a tuple (trace id, span id, is_remote, trace flags, ...). If a new SDK
    changes this the hot path falls back to the general path; this test says it happened."""
    ctx = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    assert (ctx[0], ctx[1], ctx[2], ctx[3] & 1) == (7, 8, True, 1)
    p = make_pipeline()
    with p.tracer.start_as_current_span("run", attributes={"a": 1}) as run:
        with p.tracer.start_as_current_span("child") as child:
            pass
    assert isinstance(child._events, BoundedList) and not child._events._dq
    assert child._attributes._dict == {} and run._attributes._dict == {"a": 1}
    assert child._parent is run.get_span_context() and run._parent is None
    assert child._context is child.get_span_context()


def test_threads_with_edits_and_plain_traces_leave_nothing_stranded(qwen):
    """Edits settle the express lane while other threads end roots lock-free: every trace must still leave
    at its root's end (checked without a flush, so a stranded span would still be held)."""
    p = make_pipeline({MODEL: qwen}, hold_timeout=3600, late_grace=0)
    errors: list[BaseException] = []

    def agent(n: int) -> None:
        try:
            for j in range(40):
                with p.tracer.start_as_current_span("run"):
                    with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, f"Agent {n} says {j}.")):
                        pass
                    if j % 3 == 0:
                        record_edit(f"Agent {n} said {j}.")
                with p.tracer.start_as_current_span("plain-root"):
                    pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    st = p.processor.stats
    assert st["held_spans"] == 0 and st["held_traces"] == 0 and st["internal_errors"] == 0
    assert len(p.named("llm")) == 8 * 40 and st["corrected"] == 8 * 14


def test_a_trace_whose_only_events_are_not_edits_goes_out_untouched(qwen):
    """Exception events (or any other) change nothing: the LLM span goes out as it came, with no mark, as the
    OTLP service sends such a trace."""
    keep = Keeping()
    p = make_pipeline({MODEL: qwen}, downstream=keep)
    with p.tracer.start_as_current_span("run") as run:
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "One two three.")) as llm:
            llm.add_event("exception", {"exception.type": "ValueError"})
        run.add_event("agent.note", {"n": 1})
    out = {s.name: s for s in keep.got}
    assert set(out) == {"run", "llm"}
    assert not [k for k in out["llm"].attributes if k.startswith("tokenfix.")]
    assert [e.name for e in out["llm"].events] == ["exception"]
    assert p.processor.stats["unchanged"] == 1 and p.processor.stats["corrected"] == 0  # counted, not marked
