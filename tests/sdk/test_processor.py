"""TokenFixSpanProcessor against a real TracerProvider + InMemorySpanExporter and real tokenizers."""

from __future__ import annotations

import json
import math

import pytest
from processor_helpers import IM_END, make_pipeline, qwen_ids

from otel_tokenfix import record_edit
from otel_tokenfix.trace import conventions as cv

TEXT = "The capital of France is Paris. I am quite sure about that."
EDITED = "The capital of France is Paris."
MODEL = "Qwen/Qwen2.5-7B-Instruct"


def llm_attrs(tok, text=TEXT, **extra):
    return {"prompt_token_ids": tuple(qwen_ids(tok, "Q?", eos=False)), "response_token_ids": tuple(qwen_ids(tok, text)),
            "gen_ai.request.model": MODEL, **extra}


def assert_corrected(tok, span, original, edited, key="response_token_ids"):
    a = span.attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED, a.get(cv.ERROR)
    ids = list(a[cv.RESPONSE_IDS])
    assert tok.decode(ids, skip_special_tokens=True) == edited
    assert list(a[cv.ORIGINAL_RESPONSE_IDS]) == list(original)
    assert cv.parse_ids(a[key]) == ids
    prov = list(a[cv.PROVENANCE])
    assert len(prov) == len(ids) and set(prov) <= {0, 1, 2}
    # tokens before the edit point are the sampled ones, with their ids
    k = 0
    while k < min(len(ids), len(original)) and ids[k] == original[k]:
        k += 1
    assert k > 0 and prov[:k] == [1] * k
    assert a[cv.TOKENS_KEPT] + a[cv.TOKENS_INSERTED] == len(ids)
    assert a[cv.TOKENS_KEPT] + a[cv.TOKENS_REMOVED] == len(original)
    return ids


def test_agentops_shape_edit_on_step_span_after_llm_ended(qwen):
    p = make_pipeline({MODEL: qwen})
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("agent.step"):
            with p.tracer.start_as_current_span("openai.chat.completion", attributes=llm_attrs(qwen)):
                pass
            assert p.named("openai.chat.completion") == []  # held until the root ends
            assert record_edit(EDITED, source="truncate")
    llm = p.one("openai.chat.completion")
    ids = assert_corrected(qwen, llm, qwen_ids(qwen, TEXT), EDITED)
    assert ids[-1] == IM_END  # the EOS stays last
    assert llm.attributes[cv.EDIT_COUNT] == 1
    assert llm.attributes[cv.TEXT] == EDITED
    assert list(llm.attributes["prompt_token_ids"]) == qwen_ids(qwen, "Q?", eos=False)
    # held spans go out before their root, so a trace-assembling exporter downstream sees the root last
    assert [s.name for s in p.spans()] == ["agent.step", "openai.chat.completion", "agent.run"]
    st = p.processor.stats
    assert st["corrected"] == 1 and st["errors"] == 0 and st["held_spans"] == 0 and st["passed"] == 2


def test_litellm_callback_shape_with_gen_ai_text(qwen):
    p = make_pipeline(qwen)  # one tokenizer for every model
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("litellm.completion",
                                            attributes=llm_attrs(qwen, **{"gen_ai.completion.0.content": TEXT})):
            pass
        record_edit(EDITED)
    assert_corrected(qwen, p.one("litellm.completion"), qwen_ids(qwen, TEXT), EDITED)


def test_llmproxy_hosted_vllm_repr_strings(qwen):
    p = make_pipeline({MODEL: qwen})
    r = qwen_ids(qwen, TEXT)
    lps = [{"token": "t", "logprob": -0.01 * (i + 1)} for i in range(len(r))]
    choices = repr([{"token_ids": r, "logprobs": {"content": lps}, "finish_reason": "stop"}])
    attrs = {"llm.hosted_vllm.prompt_token_ids": repr([1, 2, 3]), "llm.hosted_vllm.response_token_ids": repr([r]),
             "llm.hosted_vllm.choices": choices, "gen_ai.request.model": MODEL}
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("litellm_request"):
            with p.tracer.start_as_current_span("raw_gen_ai_request", attributes=attrs):
                pass
        record_edit(EDITED)
    raw = p.one("raw_gen_ai_request")
    ids = assert_corrected(qwen, raw, r, EDITED, key="llm.hosted_vllm.response_token_ids")
    a = raw.attributes
    assert isinstance(a["llm.hosted_vllm.response_token_ids"], str)
    assert json.loads(a["llm.hosted_vllm.response_token_ids"]) == [ids]
    assert cv.parse_ids(a["llm.hosted_vllm.choices"]) == ids
    choice = cv.parse_literal(a["llm.hosted_vllm.choices"]).value[0]
    assert choice["finish_reason"] == "stop" and len(choice["logprobs"]["content"]) == len(ids)
    lp = a[cv.LOGPROBS]
    assert len(lp) == len(ids)
    for i, (code, x) in enumerate(zip(a[cv.PROVENANCE], lp, strict=True)):
        if code == 0:
            assert math.isnan(x)
        else:
            assert x == pytest.approx(-0.01 * (a["tokenfix.response.source_index"][i] + 1))
    assert list(a[cv.ORIGINAL_RESPONSE_IDS]) == r


def test_weave_shape(qwen):
    p = make_pipeline({MODEL: qwen})
    out = "agentlightning.operation.output"
    r = qwen_ids(qwen, TEXT)
    attrs = {f"{out}.prompt_token_ids": (1, 2), f"{out}.choices.0.token_ids": tuple(r), f"{out}.model": MODEL,
             "gen_ai.request.model": MODEL}
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("openai.chat.completions.create", attributes=attrs):
            pass
        record_edit(EDITED)
    assert_corrected(qwen, p.one("openai.chat.completions.create"), r, EDITED, key=f"{out}.choices.0.token_ids")


@pytest.mark.parametrize("text_attrs", [
    {"gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": TEXT}]}])},
    {"llm.output_messages.0.message.content": TEXT, "llm.model_name": MODEL},
    {"output.value": json.dumps({"choices": [{"message": {"content": TEXT}}]}), "output.mime_type": "application/json"},
])
def test_genai_and_openinference_text_keys(qwen, text_attrs):
    p = make_pipeline({MODEL: qwen})
    attrs = {"tokenfix.response.token_ids": tuple(qwen_ids(qwen, TEXT)), "gen_ai.response.model": MODEL, **text_attrs}
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("chat", attributes=attrs):
            pass
        record_edit(EDITED)
    span = p.one("chat")
    assert_corrected(qwen, span, qwen_ids(qwen, TEXT), EDITED, key=cv.RESPONSE_IDS)
    for k, v in text_attrs.items():
        assert span.attributes[k] == v  # everything else unchanged


def test_explicit_targets_chain_and_token_edit(qwen):
    p = make_pipeline({MODEL: qwen})
    t1, t2 = "First answer: 42 apples.", "Second answer: seven pears and a banana."
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen, t1, **{"gen_ai.response.id": "r1"})) as a:
            pass
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen, t2, **{"gen_ai.response.id": "r2"})):
            pass
        with p.tracer.start_as_current_span("tool"):
            record_edit("First answer: 43 apples.", target=a)  # by span
        record_edit("First answer: 43 apples!", target=a.get_span_context())  # chained, by span context
        record_edit("Second answer: seven pears.", target="r2")  # by response id
    first, second = sorted(p.named("llm"), key=lambda s: s.start_time)
    assert_corrected(qwen, first, qwen_ids(qwen, t1), "First answer: 43 apples!")
    assert first.attributes[cv.EDIT_COUNT] == 2
    assert_corrected(qwen, second, qwen_ids(qwen, t2), "Second answer: seven pears.")
    # token-level edit: drop the last two tokens before EOS
    p2 = make_pipeline({MODEL: qwen})
    r = qwen_ids(qwen, t2)
    edited = r[:-3] + [r[-1]]
    with p2.tracer.start_as_current_span("agent.run"):
        with p2.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen, t2)):
            pass
        record_edit(token_ids=edited)
    span = p2.one("llm")
    assert list(span.attributes["response_token_ids"]) == edited
    assert list(span.attributes[cv.PROVENANCE]) == [1] * (len(edited) - 1) + [2]
    assert span.attributes[cv.TOKENS_REMOVED] == 2


def test_untargeted_edit_goes_to_most_recent_llm_span(qwen):
    p = make_pipeline({MODEL: qwen})
    t1, t2 = "Alpha beta gamma.", "Delta epsilon zeta."
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("step1"):
            with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen, t1)):
                pass
            record_edit("Alpha gamma.")
        with p.tracer.start_as_current_span("step2"):
            with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen, t2)):
                pass
    first, second = sorted(p.named("llm"), key=lambda s: s.start_time)
    assert_corrected(qwen, first, qwen_ids(qwen, t1), "Alpha gamma.")
    assert second.attributes[cv.STATUS] == cv.STATUS_UNCHANGED  # no edit: as it came, marked processed
    assert cv.RESPONSE_IDS not in second.attributes
    assert list(second.attributes["response_token_ids"]) == qwen_ids(qwen, t2)


def test_root_llm_span_gets_edit_from_later_trace_within_grace(qwen):
    clock = [0.0]
    p = make_pipeline({MODEL: qwen}, root_grace=5, clock=lambda: clock[0])
    with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen)) as root_llm:
        pass
    assert p.spans() == ()
    clock[0] = 1
    # no span around: record_edit makes a short root span carrying the event
    assert record_edit(EDITED, target=root_llm, tracer_provider=p.provider)
    assert [s.name for s in p.spans()] == ["tokenfix.edit"]
    clock[0] = 6
    with p.tracer.start_as_current_span("unrelated"):
        pass  # any on_end ticks the clock
    assert_corrected(qwen, p.one("llm"), qwen_ids(qwen, TEXT), EDITED)
    assert p.processor.stats["routed_edits"] == 1
    # after the grace the target is gone: a late edit is counted, nothing is emitted twice
    record_edit("Too late.", target=root_llm, tracer_provider=p.provider)
    assert p.processor.stats["late_edits"] == 1
    assert len(p.named("llm")) == 1


def test_missing_tokenizer_is_an_error_with_reason(qwen):
    p = make_pipeline({"some-other-model": qwen})
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen)):
            pass
        record_edit(EDITED)
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_ERROR and "no tokenizer" in a[cv.ERROR] and MODEL in a[cv.ERROR]
    assert list(a["response_token_ids"]) == qwen_ids(qwen, TEXT)  # uncorrected
    assert p.processor.stats["errors"] == 1


@pytest.mark.parametrize("event_attrs, expect", [
    ({}, "missing"),
    ({"tokenfix.edit.text": 5}, "must be a string"),
    ({"tokenfix.edit.token_ids": ("a", "b")}, "non-negative ints"),
    ({"tokenfix.edit.text": "x", "tokenfix.edit.target.span_id": "nothex!!nothex!!"}, "16 hex"),
    ({"tokenfix.edit.text": "x" * 9_000_000}, "too long"),
])
def test_malformed_edit_events(qwen, event_attrs, expect):
    p = make_pipeline({MODEL: qwen})
    with p.tracer.start_as_current_span("agent.run") as run:
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen)):
            pass
        run.add_event("text.edited", event_attrs)
    a = p.one("llm").attributes
    spans = p.spans()
    assert len(spans) == 2
    if "16 hex" in expect:  # no usable target: reported as an edit attached to nothing
        assert a[cv.STATUS] == cv.STATUS_UNCHANGED
    else:
        assert a[cv.STATUS] == cv.STATUS_ERROR and expect in a[cv.ERROR]
        assert list(a["response_token_ids"]) == qwen_ids(qwen, TEXT)
    assert p.processor.stats["errors"] == 1


def test_unknown_target_is_counted(qwen):
    p = make_pipeline({MODEL: qwen})
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen)):
            pass
        record_edit(EDITED, target="no-such-response")
        record_edit(EDITED, target=0x1234)
    assert p.one("llm").attributes[cv.STATUS] == cv.STATUS_UNCHANGED
    assert p.processor.stats["errors"] == 2


def test_engine_rejects_bad_token_ids(qwen):
    p = make_pipeline({MODEL: qwen})
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen)):
            pass
        record_edit(EDITED)
        record_edit(token_ids=[10**9])
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_ERROR and a[cv.ERROR]


def test_edit_text_truncated_by_sdk_limit_is_rejected(qwen, monkeypatch):
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "20")
    p = make_pipeline({MODEL: qwen})
    assert p.processor.conventions.truncation_limit == 20
    with p.tracer.start_as_current_span("agent.run"):
        with p.tracer.start_as_current_span("llm", attributes=llm_attrs(qwen)):
            pass
        with p.tracer.start_as_current_span("step"):
            record_edit(EDITED)  # 31 chars: the SDK keeps 20
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_ERROR and "truncated" in a[cv.ERROR]
    assert list(a["response_token_ids"]) == qwen_ids(qwen, TEXT)
