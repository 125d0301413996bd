"""record_edit / record_reward: what they put on spans, and that they never raise into user code."""

from __future__ import annotations

from processor_helpers import make_pipeline

from otel_tokenfix import record_edit, record_reward
from otel_tokenfix.sdk.spans import to_view
from otel_tokenfix.trace import conventions as cv


def _edit_attrs(p, name="step"):
    [ev] = [e for e in p.one(name).events if e.name == cv.EDIT_EVENT]
    return dict(ev.attributes)


def test_record_edit_event_attributes() -> None:
    p = make_pipeline()
    with p.tracer.start_as_current_span("run"):
        with p.tracer.start_as_current_span("llm") as llm:
            pass
        with p.tracer.start_as_current_span("step"):
            assert record_edit("new", target=llm, source="tool-fix", view="raw")
    a = _edit_attrs(p)
    assert a == {cv.EDIT_TEXT: "new", cv.EDIT_TARGET_SPAN_ID: format(llm.get_span_context().span_id, "016x"),
                 cv.EDIT_SOURCE: "tool-fix", cv.EDIT_VIEW: "raw"}
    ended = p.one("llm")
    for target, expect in ((ended, {cv.EDIT_TARGET_SPAN_ID: format(ended.context.span_id, "016x")}),
                           ("chatcmpl-7", {cv.EDIT_TARGET_RESPONSE_ID: "chatcmpl-7"}),
                           (0xFF, {cv.EDIT_TARGET_SPAN_ID: "00000000000000ff"})):
        p2 = make_pipeline()
        with p2.tracer.start_as_current_span("step"):
            assert record_edit(token_ids=[1, 2], target=target)
        assert _edit_attrs(p2) == {cv.EDIT_TOKEN_IDS: (1, 2), **expect}
        edits = cv.read_edits(to_view(p2.one("step")))
        assert edits[0].error is None and edits[0].token_ids == (1, 2)


def test_record_edit_never_raises() -> None:
    p = make_pipeline()
    with p.tracer.start_as_current_span("step"):
        assert record_edit() is False
        assert record_edit("a", token_ids=[1]) is False
        assert record_edit(5) is False  # type: ignore[arg-type]
        assert record_edit("a", view="weird") is False
        assert record_edit("a", target=object()) is False
        assert record_edit(token_ids=["x"]) is False  # type: ignore[list-item]
    assert [e.name for e in p.one("step").events] == []
    # no current span and no target: nothing to attach to
    assert record_edit("orphan") is False


def test_record_edit_without_current_span_makes_a_carrier_span() -> None:
    p = make_pipeline()
    assert record_edit("x", target="resp-1", tracer_provider=p.provider)
    span = p.one("tokenfix.edit")
    assert span.parent is None
    assert _edit_attrs(p, "tokenfix.edit") == {cv.EDIT_TEXT: "x", cv.EDIT_TARGET_RESPONSE_ID: "resp-1"}


def test_record_reward_agentlightning_format() -> None:
    p = make_pipeline()
    with p.tracer.start_as_current_span("run"):
        assert record_reward(0.75, tracer_provider=p.provider)
        assert record_reward(1, name="aux", tracer_provider=p.provider)
        assert record_reward("not a number", tracer_provider=p.provider) is False  # type: ignore[arg-type]
    spans = p.named(cv.AGL_ANNOTATION_SPAN)
    assert len(spans) == 2
    run = p.one("run")
    assert all(s.parent.span_id == run.context.span_id for s in spans)
    rewards = [cv.read_rewards(to_view(s))[0] for s in spans]
    assert [(r.name, r.value, r.primary) for r in rewards] == [("primary", 0.75, True), ("aux", 1.0, True)]
