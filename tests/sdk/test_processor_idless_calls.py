"""An LLM call whose server returned no token ids still counts as "the most recent LLM call".

The bug (found by the capture engineer): call 1 has ids, call 2 went to a server that returns none (the
capture marks it ``tokenfix.capture.status``), then ``record_edit(...)`` without a target. The edit is
about call 2's output; applying it to call 1 makes wrong training data. It must be reported ("no token
ids: <reason>") and never moved to an earlier call — in the processor and in the triplet exporter alike.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from processor_helpers import make_pipeline, qwen_ids

from otel_tokenfix import record_edit
from otel_tokenfix.capture import attributes as A
from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.trace import conventions as cv
from otel_tokenfix.trace.corrector import correct_trace
from otel_tokenfix.trace.view import EventView, SpanView
from otel_tokenfix.triplets.sinks import MemorySink

MODEL = "qwen"
FIRST = "The first answer is forty two."
NO_IDS_REASON = "the server returned no choices[].token_ids (does it support return_token_ids?)"


def with_ids(tok, text):
    return {A.RESPONSE_IDS: tuple(qwen_ids(tok, text)), A.PROMPT_IDS: tuple(qwen_ids(tok, "Q?", eos=False)),
            A.REQUEST_MODEL: MODEL, A.COMPLETION_TEXT: text, A.CAPTURE_STATUS: A.STATUS_OK}


def without_ids(status=A.STATUS_NO_IDS, reason=NO_IDS_REASON, text="The second answer came from elsewhere."):
    attrs = {A.REQUEST_MODEL: MODEL, A.COMPLETION_TEXT: text, A.CAPTURE_STATUS: status,
             A.RESPONSE_ID: "chatcmpl-2"}
    if reason:
        attrs[A.CAPTURE_REASON] = reason
    return attrs


@pytest.mark.parametrize(("status", "reason", "expect"), [
    (A.STATUS_NO_IDS, NO_IDS_REASON, "no token ids: " + NO_IDS_REASON),
    (A.STATUS_ERROR, "APIConnectionError: Connection error.", "no token ids: APIConnectionError: Connection error."),
    (A.STATUS_UNSUPPORTED, None, "no token ids: capture status 'unsupported_response'"),
])
def test_untargeted_edit_after_a_call_without_ids_is_reported_not_moved(qwen, caplog, status, reason, expect):
    p = make_pipeline({MODEL: qwen})
    with caplog.at_level(logging.WARNING, logger="otel_tokenfix.sdk.processor"):
        with p.tracer.start_as_current_span("agent.run"):
            with p.tracer.start_as_current_span("call1", attributes=with_ids(qwen, FIRST)):
                pass
            with p.tracer.start_as_current_span("call2", attributes=without_ids(status, reason)):
                pass
            with p.tracer.start_as_current_span("step"):
                assert record_edit("The second answer, edited.")
    first = p.one("call1").attributes
    assert first[cv.STATUS] == cv.STATUS_UNCHANGED  # processed, not corrected: the edit was not about it
    assert list(first[A.RESPONSE_IDS]) == qwen_ids(qwen, FIRST) and cv.ORIGINAL_RESPONSE_IDS not in first
    assert cv.STATUS not in p.one("call2").attributes  # the call without ids passes through as it came
    st = p.processor.stats
    assert st["corrected"] == 0 and st["errors"] == 1 and st["unchanged"] == 1
    assert any(expect in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_explicit_target_on_a_call_without_ids_is_reported(qwen, caplog):
    p = make_pipeline({MODEL: qwen})
    with caplog.at_level(logging.WARNING, logger="otel_tokenfix.sdk.processor"):
        with p.tracer.start_as_current_span("agent.run"):
            with p.tracer.start_as_current_span("call1", attributes=with_ids(qwen, FIRST)):
                pass
            with p.tracer.start_as_current_span("call2", attributes=without_ids()) as call2:
                pass
            record_edit("Edited by span.", target=call2)
            record_edit("Edited by response id.", target="chatcmpl-2")
    assert p.one("call1").attributes[cv.STATUS] == cv.STATUS_UNCHANGED
    assert p.processor.stats["errors"] == 2
    assert sum("no token ids: " + NO_IDS_REASON in r.getMessage() for r in caplog.records) == 2


def test_calls_without_ids_do_not_block_edits_made_before_them_or_calls_after_them(qwen):
    p = make_pipeline({MODEL: qwen})
    third = "The third answer is seven."
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("call1", attributes=with_ids(qwen, FIRST)):
            pass
        record_edit("The first answer is 42.")  # before call 2: about call 1
        with p.tracer.start_as_current_span("call2", attributes=without_ids()):
            pass
        with p.tracer.start_as_current_span("call3", attributes=with_ids(qwen, third)):
            pass
        record_edit("The third answer is 7.")  # after call 3 (which has ids): about call 3
    for name, text in (("call1", "The first answer is 42."), ("call3", "The third answer is 7.")):
        a = p.one(name).attributes
        assert a[cv.STATUS] == cv.STATUS_CORRECTED, a.get(cv.ERROR)
        assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == text
    assert p.processor.stats["errors"] == 0 and p.processor.stats["corrected"] == 2


def test_triplet_exporter_alone_agrees(qwen):
    """The triplet exporter applies edits itself when alone: the same rule through the same corrector."""
    sink = MemorySink()
    exporter = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("agent.run"):
        with tracer.start_as_current_span("call1", attributes=with_ids(qwen, FIRST)):
            pass
        with tracer.start_as_current_span("call2", attributes=without_ids()):
            pass
        record_edit("The second answer, edited.")
    provider.shutdown()
    [record] = sink.records  # only call 1 has ids to train on
    assert record.response_ids == qwen_ids(qwen, FIRST) and set(record.provenance) == {1}
    assert exporter.stats.corrected == 0


def _view(span_id, start, end, attrs, events=(), parent=None):
    return SpanView(trace_id=1, span_id=span_id, parent_span_id=parent, name="s", start_time=start, end_time=end,
                    attributes=attrs, events=events)


def test_corrector_unreadable_ids_and_wrapping_spans(qwen):
    """Unreadable ids make an id-less call too; a marked span that *wraps* the call with ids (another
    instrumentation's parent span) is not a separate call."""
    call1 = _view(11, 10, 20, with_ids(qwen, FIRST), parent=1)
    broken = _view(12, 30, 40, {"response_token_ids": "[1, 2, oops", A.REQUEST_MODEL: MODEL}, parent=1)
    edit = EventView(cv.EDIT_EVENT, 50, {cv.EDIT_TEXT: "Edited."})
    carrier = _view(13, 45, 60, {}, events=(edit,), parent=1)
    res = correct_trace([call1, broken, carrier], qwen, mark_unchanged=True)
    assert [c.status for c in res.calls] == [cv.STATUS_UNCHANGED]
    assert [i.reason for i in res.issues] == [
        "no token ids: its token ids attribute could not be read (span 000000000000000c, the last LLM call "
        "before the edit)"]
    # with OpenInference-style markers configured, a marked parent of the call with ids is its wrapper
    conv = cv.Conventions(llm_markers=cv.DEFAULT_LLM_MARKERS + (("openinference.span.kind", ("LLM",)),))
    wrapper = _view(21, 5, 25, {"openinference.span.kind": "LLM"})
    inner = _view(22, 10, 20, with_ids(qwen, FIRST), parent=21)
    carrier2 = _view(23, 30, 40, {}, events=(EventView(cv.EDIT_EVENT, 35, {cv.EDIT_TEXT: "The first answer."}),),
                     parent=21)
    res = correct_trace([wrapper, inner, carrier2], qwen, conventions=conv)
    assert [c.status for c in res.calls] == [cv.STATUS_CORRECTED] and res.issues == ()
    # ... while a marked span of its own (no child with ids) is a call without ids
    lone = _view(24, 26, 29, {"openinference.span.kind": "LLM"})
    res = correct_trace([wrapper, inner, lone, carrier2], qwen, conventions=conv)
    assert res.calls[0].status == cv.STATUS_UNCHANGED and res.issues[0].reason.startswith(
        "no token ids: the LLM span has no token ids")
