"""The capture <-> conventions contract: what capture writes, trace/conventions.py reads back exactly.

Also pure tests of the extraction (responses and streams as plain dicts) and the attribute rules.
"""

from __future__ import annotations

import json
import random

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_tokenfix import instrument_openai
from otel_tokenfix.capture import attributes as A
from otel_tokenfix.capture.extract import CHAT, TEXT_COMPLETION, StreamCollector, from_response
from otel_tokenfix.demo.vllm_server import Reply, ToolCall
from otel_tokenfix.sdk.spans import to_view
from otel_tokenfix.trace import conventions as cv

MSGS = [{"role": "user", "content": "Hello?"}]


def test_conventions_read_back_everything_capture_wrote(serve, tracing):
    server = serve([Reply("Hi — how can I help?", split=0.3)])
    client = instrument_openai(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0),
                               tracer_provider=tracing.provider)
    resp = client.chat.completions.create(model=server.model, messages=MSGS)
    (span,) = tracing.llm_spans()
    view = to_view(span)
    gen = server.generations[0]
    assert cv.is_llm_span(view)
    assert cv.read_response_ids(view).ids == gen.token_ids
    assert cv.read_prompt_ids(view) == resp.prompt_token_ids
    assert cv.read_logprobs(view, len(gen.token_ids)) == gen.logprobs
    assert cv.read_text(view) == "Hi — how can I help?"
    assert cv.read_model(view) == server.model
    assert cv.read_response_id(view) == resp.id
    assert cv.read_status(view) is None  # capture never claims the span was corrected


def test_conventions_read_completions_and_tool_call_spans(serve, tracing):
    server = serve([Reply(" Paris."), Reply("Checking.", tool_calls=(ToolCall("f", {"x": 1}),))])
    client = instrument_openai(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0),
                               tracer_provider=tracing.provider)
    client.completions.create(model=server.model, prompt="Capital of France:")
    client.chat.completions.create(model=server.model, messages=MSGS)
    text_span, tool_span = (to_view(s) for s in tracing.llm_spans())
    assert cv.read_text(text_span) == " Paris."
    assert cv.read_logprobs(text_span) == server.generations[0].logprobs
    assert cv.read_response_ids(tool_span).ids == server.generations[1].token_ids
    assert cv.read_text(tool_span) is None  # correction decodes the ids instead of using "Checking."


def test_no_ids_span_is_not_an_llm_span_for_correction(serve, tracing):
    server = serve(["x"], token_ids=False)
    client = instrument_openai(openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0),
                               tracer_provider=tracing.provider)
    client.chat.completions.create(model=server.model, messages=MSGS)
    view = to_view(tracing.llm_spans()[0])
    assert not cv.is_llm_span(view)
    assert view.attributes[A.CAPTURE_STATUS] == A.STATUS_NO_IDS


# --- pure extraction ---------------------------------------------------------------------------------


def chat_response(ids_by_choice, prompt=(1, 2, 3), with_ids=True):
    return {
        "id": "r1",
        "model": "m",
        "prompt_token_ids": list(prompt) if with_ids else None,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": f"text {i}"},
                "token_ids": list(ids) if with_ids else None,
                "logprobs": {"content": [{"token": "t", "logprob": -0.5 * k} for k in range(len(ids))]},
                "finish_reason": "stop",
            }
            for i, ids in enumerate(ids_by_choice)
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": sum(len(x) for x in ids_by_choice)},
    }


def test_from_response_reads_dicts():
    data = from_response(chat_response([[5, 6], [7]]), CHAT)
    assert data.prompt_token_ids == [1, 2, 3] and [c.token_ids for c in data.choices] == [[5, 6], [7]]
    assert data.choices[0].logprobs == [0.0, -0.5] and data.input_tokens == 3 and data.output_tokens == 3
    missing = from_response(chat_response([[5]], with_ids=False), CHAT)
    assert missing.choices[0].token_ids is None and missing.prompt_token_ids is None


def test_from_response_rejects_non_int_ids():
    resp = chat_response([[5]])
    resp["choices"][0]["token_ids"] = [5, "6"]
    resp["prompt_token_ids"] = [True, 2]
    data = from_response(resp, CHAT)
    assert data.choices[0].token_ids is None and data.prompt_token_ids is None


def chunks_for(response, rng):
    """Split a non-streamed chat response into vLLM-style chunks at random boundaries."""
    out = [{"id": response["id"], "model": "m", "prompt_token_ids": response["prompt_token_ids"],
            "choices": [{"index": c["index"], "delta": {"role": "assistant", "content": ""}}
                        for c in response["choices"]]}]
    for c in response["choices"]:
        ids, lps, text = c["token_ids"], c["logprobs"]["content"], c["message"]["content"]
        cuts = sorted(rng.sample(range(1, len(ids)), min(len(ids) - 1, rng.randint(0, 3)))) if len(ids) > 1 else []
        bounds = [0, *cuts, len(ids)]
        tcuts = sorted(rng.sample(range(1, len(text)), len(bounds) - 2)) if len(bounds) > 2 else []
        tb = [0, *tcuts, len(text)]
        for j in range(len(bounds) - 1):
            last = j == len(bounds) - 2
            out.append({"id": response["id"], "choices": [{
                "index": c["index"],
                "delta": {"content": text[tb[j]:tb[j + 1]]},
                "token_ids": ids[bounds[j]:bounds[j + 1]],
                "logprobs": {"content": lps[bounds[j]:bounds[j + 1]]},
                "finish_reason": "stop" if last else None,
            }]})
    return out


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 151000), min_size=1, max_size=12), min_size=1, max_size=3),
    st.integers(0, 2**32),
)
def test_stream_collector_equals_the_non_streamed_reading(choices, seed):
    response = chat_response(choices)
    whole = from_response(response, CHAT)
    collector = StreamCollector(CHAT)
    for chunk in chunks_for(response, random.Random(seed)):
        collector.feed(chunk)
    assert collector.finished
    got = collector.result()
    assert got.prompt_token_ids == whole.prompt_token_ids and got.id == whole.id
    for a, b in zip(got.choices, whole.choices, strict=True):
        assert (a.index, a.token_ids, a.logprobs, a.text, a.finish_reason) == (
            b.index, b.token_ids, b.logprobs, b.text, b.finish_reason)


def test_stream_collector_merges_tool_call_deltas_and_completions_prompt_ids():
    c = StreamCollector(CHAT)
    c.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "function": {"name": "sea", "arguments": '{"q"'}}]}}]})
    c.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "rch", "arguments": ': 1}'}}]}, "finish_reason": "tool_calls"}]})
    (choice,) = c.result().choices
    assert (choice.tool_calls[0].id, choice.tool_calls[0].name, choice.tool_calls[0].arguments) == (
        "c1", "search", '{"q": 1}')
    assert choice.text is None and choice.token_ids is None
    t = StreamCollector(TEXT_COMPLETION)
    t.feed({"choices": [{"index": 0, "text": " a", "prompt_token_ids": [9, 8], "token_ids": [1],
                         "logprobs": {"token_logprobs": [-0.1]}}]})
    t.feed({"choices": [{"index": 0, "text": "b", "token_ids": [2], "logprobs": {"token_logprobs": [-0.2]},
                         "finish_reason": "length"}]})
    data = t.result()
    assert data.prompt_ids_for(data.choices[0]) == [9, 8]
    assert (data.choices[0].text, data.choices[0].token_ids, data.choices[0].logprobs) == (" ab", [1, 2], [-0.1, -0.2])


# --- pure attribute rules ----------------------------------------------------------------------------


def test_logprobs_are_written_only_when_one_per_token():
    data = from_response(chat_response([[5, 6]]), CHAT)
    data.choices[0].logprobs = [-0.1]
    attrs = A.response_attributes(data, data.choices[0], A.AttributeOptions())
    assert A.LOGPROBS_CONTENT not in attrs and "logprobs dropped" in attrs[A.CAPTURE_REASON]
    data.choices[0].logprobs = [-0.1, -0.2]
    attrs = A.response_attributes(data, data.choices[0], A.AttributeOptions())
    assert json.loads(attrs[A.LOGPROBS_CONTENT]) == [{"logprob": -0.1}, {"logprob": -0.2}]


def test_agentlightning_keys_option_writes_its_keys():
    data = from_response(chat_response([[5, 6]]), CHAT)
    attrs = A.response_attributes(data, data.choices[0], A.AttributeOptions(agentlightning_keys=True))
    assert attrs["prompt_token_ids"] == (1, 2, 3) and attrs["response_token_ids"] == (5, 6)


@pytest.mark.parametrize(("env", "explicit", "expected"), [
    (None, None, False), ("true", None, True), ("TRUE", None, True), ("false", None, False),
    ("true", False, False), (None, True, True),
])
def test_content_opt_in(monkeypatch, env, explicit, expected):
    if env is None:
        monkeypatch.delenv(A.CONTENT_ENV, raising=False)
    else:
        monkeypatch.setenv(A.CONTENT_ENV, env)
    assert A.content_enabled(explicit) is expected


def test_request_attributes_ignore_omitted_and_non_numeric_values():
    omit = openai.omit
    attrs = A.request_attributes(CHAT, {"model": "m", "temperature": omit, "top_p": None, "seed": 3, "n": 1,
                                        "stop": ["a", "b"], "messages": MSGS}, A.AttributeOptions(), (None, None))
    assert attrs == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                     "gen_ai.request.model": "m", "gen_ai.request.seed": 3,
                     "gen_ai.request.stop_sequences": ("a", "b")}
