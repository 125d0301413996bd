"""correct_trace over plain SpanViews with the real engine and the real Qwen tokenizer."""

from __future__ import annotations

import math

from trace_helpers import edit, llm, new_id, span

from otel_tokenfix.trace import conventions as cv
from otel_tokenfix.trace.assembly import Release
from otel_tokenfix.trace.corrector import as_lookup, correct_release, correct_trace
from otel_tokenfix.trace.view import SpanView

IM_END = 151645


def ids_of(tok, text):
    return tok.encode(text, add_special_tokens=False) + [IM_END]


def with_overlay(s: SpanView, overlay) -> SpanView:
    return SpanView(s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_time, s.end_time,
                    {**s.attributes, **overlay}, s.events)


def test_calls_in_start_order_and_overlay(qwen):
    t = new_id()
    a = llm(t, ids_of(qwen, "One two three."), start=10, end=20, extra={"logprobs.content": None})
    b = llm(t, ids_of(qwen, "Four five six."), start=30, end=40)
    carrier = span(t, start=5, end=50, events=(edit(25, "One three."),))
    res = correct_trace([carrier, b, a], qwen)
    assert [c.span_id for c in res.calls] == [a.span_id, b.span_id] and [c.index for c in res.calls] == [0, 1]
    first, second = res.calls
    assert first.status == cv.STATUS_CORRECTED and second.status == cv.STATUS_UNCHANGED
    assert qwen.decode(first.response_ids, skip_special_tokens=True) == "One three."
    assert first.original_ids == ids_of(qwen, "One two three.") and first.edits == 1
    assert set(res.overlays) == {a.span_id}
    ov = res.overlays[a.span_id]
    assert ov["response_token_ids"] == tuple(first.response_ids) == ov[cv.RESPONSE_IDS]
    assert ov[cv.PROVENANCE] == tuple(first.provenance) and ov[cv.STATUS] == "corrected"
    assert res.applied_edits == 1 and res.errors == 0
    assert second.response_ids == second.original_ids and second.provenance == [1] * len(second.response_ids)


def test_idempotent_read_back_of_upstream_correction(qwen):
    t = new_id()
    a = llm(t, ids_of(qwen, "Alpha beta gamma delta."), end=10,
            extra={"logprobs.content": str([{"logprob": -0.5}] * len(ids_of(qwen, "Alpha beta gamma delta.")))})
    carrier = span(t, end=20, events=(edit(15, "Alpha BETA gamma delta."),))
    first = correct_trace([a, carrier], qwen)
    corrected = with_overlay(a, first.overlays[a.span_id])
    again = correct_trace([corrected, carrier], qwen)
    assert again.overlays == {} and again.applied_edits == 0
    c0, c1 = first.calls[0], again.calls[0]
    assert c1.upstream and c1.status == c0.status
    assert (c1.response_ids, c1.original_ids, c1.provenance, c1.source_index) == \
        (c0.response_ids, c0.original_ids, c0.provenance, c0.source_index)
    assert c1.logprobs == c0.logprobs and any(x is None for x in c0.logprobs)
    assert c1.text == c0.text == "Alpha BETA gamma delta." and c1.edits == 1 and c1.removed == c0.removed
    assert c0.original_logprobs == [-0.5] * len(c0.original_ids) and c1.original_logprobs is None
    # the logprob source key now describes the corrected ids (None for inserted tokens)
    entries = cv.parse_literal(corrected.attributes["logprobs.content"]).value
    assert [e["logprob"] for e in entries] == c0.logprobs


def test_chain_text_then_tokens_in_time_order(qwen):
    t = new_id()
    a = llm(t, ids_of(qwen, "Red green blue."), end=10)
    first = qwen.encode("Red blue.", add_special_tokens=False) + [IM_END]
    tok_edit = edit(25, None, token_ids=tuple(first[:1] + first[-1:]), target__span_id=a.span_id_hex)
    later = span(t, end=30, events=(tok_edit,))
    earlier = span(t, end=20, events=(edit(15, "Red blue."),))
    res = correct_trace([a, later, earlier], qwen)
    [call] = res.calls
    assert call.status == cv.STATUS_CORRECTED and call.edits == 2
    assert call.response_ids == first[:1] + first[-1:]


def test_foreign_edits_and_notes(qwen):
    t1, t2 = new_id(), new_id()
    a = llm(t1, ids_of(qwen, "Hello brave new world."), end=10, extra={"gen_ai.response.id": "r-a"})
    foreign = span(t2, end=20, events=(edit(15, "Hello new world.", target__response_id="r-a"),
                                       edit(16, "untargeted: ignored here")))
    rel = Release(trace_id=t1, spans=(a,), foreign=(foreign,), reason="root_grace")
    res = correct_release(rel, qwen)
    assert res.calls[0].status == cv.STATUS_CORRECTED and res.issues == ()
    # in the carrier's own trace the routed edit is skipped, the untargeted one has nothing to apply to
    own = correct_trace([foreign], qwen, edit_notes={(foreign.span_id, 0): "routed"})
    assert len(own.issues) == 1 and "no LLM span" in own.issues[0].reason
    late = correct_trace([foreign], qwen, edit_notes={(foreign.span_id, 0): "late", (foreign.span_id, 1): "late"})
    assert late.issues == () and late.late_edits == 2


def test_early_release_marks_error_and_keeps_ids(qwen):
    t = new_id()
    a = llm(t, ids_of(qwen, "Unfinished business."), end=10)
    carrier = span(t, end=20, events=(edit(15, "Finished."),))
    res = correct_release(Release(t, (a,), (carrier,), complete=False, reason="timeout", correct=False), qwen)
    [call] = res.calls
    assert call.status == cv.STATUS_ERROR and "timeout" in call.reason
    assert call.response_ids == call.original_ids == ids_of(qwen, "Unfinished business.")
    assert res.overlays[a.span_id] == {cv.STATUS: "error", cv.ERROR: call.reason, cv.EDIT_COUNT: 1}


def test_errors_as_values(qwen):
    t = new_id()
    a = llm(t, ids_of(qwen, "Some text."), end=10)
    carrier = span(t, end=20, events=(edit(15, "Other text."),))
    assert correct_trace([a, carrier], None).calls[0].reason == "no tokenizer for model 'qwen'"

    def broken(model):
        raise OSError("disk on fire")

    assert "disk on fire" in correct_trace([a, carrier], broken).calls[0].reason
    bad_view = span(t, end=20, events=(edit(15, "Other text.", view="weird"),))
    call = correct_trace([a, bad_view], qwen).calls[0]
    assert call.status == cv.STATUS_ERROR and "malformed" in call.reason
    # an engine error (ids out of vocabulary on the span itself) is a value too
    oov = llm(t, [10**8, 5], end=10)
    res = correct_trace([oov, carrier], qwen)
    assert res.calls[0].status == cv.STATUS_ERROR and res.calls[0].reason
    # mark_unchanged
    assert correct_trace([a], qwen, mark_unchanged=True).overlays[a.span_id] == {cv.STATUS: "unchanged"}


def test_logprobs_carry_over_with_nan_for_inserted(qwen):
    t = new_id()
    ids = ids_of(qwen, "The quick brown fox.")
    lps = [-(i + 1) / 10 for i in range(len(ids))]
    a = llm(t, ids, end=10, extra={"logprobs.content": str([{"token": "x", "logprob": x} for x in lps])})
    res = correct_trace([a, span(t, end=20, events=(edit(15, "The quick red fox."),))], qwen)
    [call] = res.calls
    ov = res.overlays[a.span_id]
    for i, s in enumerate(call.source_index):
        if s is None:
            assert call.logprobs[i] is None and math.isnan(ov[cv.LOGPROBS][i])
        else:
            assert call.logprobs[i] == lps[s] == ov[cv.LOGPROBS][i]


def test_as_lookup_forms(qwen):
    assert as_lookup(qwen)("anything") is qwen
    assert as_lookup({"A": 1, "*": 2})("a") == 1 and as_lookup({"A": 1, "*": 2})("b") == 2
    assert as_lookup({"A": 1}, default=3)("b") == 3
    assert as_lookup(lambda m: None, default=4)("x") == 4
    assert as_lookup(None)("x") is None
