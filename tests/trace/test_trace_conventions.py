"""Readers of token ids, text, logprobs, edits and rewards over every shape found in the wild."""

from __future__ import annotations

import json

from trace_helpers import edit, llm, span

from otel_tokenfix.trace import conventions as cv
from otel_tokenfix.trace.view import EventView

T = 0xABC


def test_agentops_and_litellm_int_arrays() -> None:
    s = span(T, attrs={"prompt_token_ids": (1, 2), "response_token_ids": (3, 4, 5)})
    got = cv.read_response_ids(s)
    assert got is not None and got.ids == [3, 4, 5] and got.key == "response_token_ids"
    assert cv.read_prompt_ids(s) == [1, 2]
    assert cv.is_llm_span(s)


def test_weave_keys_in_lookup_order() -> None:
    out = "agentlightning.operation.output"
    s = span(T, attrs={
        f"{out}.prompt_token_ids": (9,),
        f"{out}.choices.0.token_ids": (7, 8),
        f"{out}.choices.0.provider_specific_fields.token_ids": (6,),
    })
    got = cv.read_response_ids(s)
    assert got is not None and got.ids == [7, 8] and got.key == f"{out}.choices.0.token_ids"
    assert cv.read_prompt_ids(s) == [9]


def test_hosted_vllm_repr_strings() -> None:
    s = span(T, attrs={
        "llm.hosted_vllm.prompt_token_ids": "[1, 2, 3]",
        "llm.hosted_vllm.response_token_ids": "[[10, 11, 12]]",
        "llm.hosted_vllm.choices": "[{'token_ids': [10, 11, 12], 'logprobs': {'content': "
                                   "[{'token': 'a', 'logprob': -0.5}, {'token': 'b', 'logprob': -1.0}, "
                                   "{'token': 'c', 'logprob': -2.0}]}, 'finish_reason': None}]",
    })
    got = cv.read_response_ids(s)
    assert got is not None and got.ids == [10, 11, 12]
    assert got.keys == ("llm.hosted_vllm.response_token_ids", "llm.hosted_vllm.choices")
    assert cv.read_prompt_ids(s) == [1, 2, 3]
    assert cv.read_logprobs(s, 3) == [-0.5, -1.0, -2.0]
    assert cv.read_logprobs(s, 4) is None  # not one per token


def test_choices_only() -> None:
    s = span(T, attrs={"llm.hosted_vllm.choices": "[{'token_ids': [5, 6]}]"})
    got = cv.read_response_ids(s)
    assert got is not None and got.ids == [5, 6] and got.key == "llm.hosted_vllm.choices"


def test_parsing_is_safe_and_bounded() -> None:
    assert cv.parse_ids("__import__('os').system('true')") is None
    assert cv.parse_ids("[1, 2, 'x']") is None
    assert cv.parse_ids("[True, False]") is None
    assert cv.parse_ids("[" * 100000) is None
    assert cv.parse_ids("[1, 2]", cv.Conventions(max_literal_chars=3)) is None
    assert cv.parse_ids(list(range(10)), cv.Conventions(max_ids=5)) is None
    assert cv.parse_ids("[1, 2]") == [1, 2]
    assert cv.parse_ids('{"token_ids": [3]}') == [3]
    assert not cv.is_llm_span(span(T, attrs={"response_token_ids": "not a list"}))


def test_write_back_keeps_shape() -> None:
    assert cv.encode_ids_like((1, 2), [3]) == (3,)
    assert cv.encode_ids_like("[[1, 2]]", [3, 4]) == "[[3, 4]]"
    assert cv.encode_ids_like("[1, 2]", [3]) == "[3]"
    choices = "[{'token_ids': [1, 2], 'logprobs': {'content': []}, 'finish_reason': None}]"
    out = cv.encode_ids_like(choices, [9])
    assert out == "[{'token_ids': [9], 'finish_reason': None}]"
    assert cv.parse_ids(out) == [9]
    assert json.loads(cv.encode_ids_like('[{"token_ids": [1]}]', [2])) == [{"token_ids": [2]}]


def test_text_keys() -> None:
    assert cv.read_text(span(T, attrs={"gen_ai.completion.0.content": "hi"})) == "hi"
    msgs = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "a"},
                                                      {"type": "tool_call", "name": "f"},
                                                      {"type": "text", "content": "b"}]}])
    assert cv.read_text(span(T, attrs={"gen_ai.output.messages": msgs})) == "ab"
    assert cv.read_text(span(T, attrs={"llm.output_messages.0.message.content": "oi"})) == "oi"
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x"}}]})
    assert cv.read_text(span(T, attrs={"output.value": body, "output.mime_type": "application/json"})) == "x"
    assert cv.read_text(span(T, attrs={"output.value": "plain"})) == "plain"
    assert cv.read_text(span(T, attrs={"gen_ai.output.messages": "{broken"})) is None


def test_logprobs_content_json_and_model() -> None:
    lp = json.dumps([{"token": "a", "logprob": -0.1, "bytes": [97], "top_logprobs": []},
                     {"token": "b", "logprob": -0.2, "bytes": [98], "top_logprobs": []}])
    s = span(T, attrs={"logprobs.content": lp, "gen_ai.request.model": "m1", "gen_ai.response.model": "m2"})
    assert cv.read_logprobs(s, 2) == [-0.1, -0.2]
    assert cv.read_model(s) == "m2"
    assert cv.read_model(span(T, attrs={"llm.model_name": "m3"})) == "m3"


def test_edit_events_parse_and_validate() -> None:
    s = span(T, span_id=77, events=(
        edit(5, "new text", target__span_id="00000000000000ff", source="agent"),
        EventView("other", 6, {}),
        edit(7, None, token_ids=(1, 2), target__response_id="chatcmpl-1", view="raw"),
        edit(8, None),
        edit(9, "x", target__span_id="xyz"),
        edit(10, 12),
        edit(11, "a", token_ids=(1,)),
        edit(12, "a", view="bogus"),
        edit(13, "y" * 50, ),
    ))
    edits = cv.read_edits(s, cv.Conventions(max_edit_chars=40))
    assert [e.index for e in edits] == [0, 2, 3, 4, 5, 6, 7, 8]
    a, b, c, d, e, f, g, h = edits
    assert (a.text, a.target_span_id, a.source, a.error, a.key) == ("new text", 255, "agent", None, (77, 0))
    assert (b.token_ids, b.target_response_id, b.view, b.error) == ((1, 2), "chatcmpl-1", "raw", None)
    assert "missing" in c.error
    assert "16 hex" in d.error and d.text == "x"
    assert "must be a string" in e.error
    assert "both" in f.error
    assert "view" in g.error
    assert "too long" in h.error


def test_span_id_parsing() -> None:
    assert cv.parse_span_id("00000000000000ff") == 255
    assert cv.parse_span_id("0x00000000000000ff") == 255
    assert cv.parse_span_id("ff") is None
    assert cv.parse_span_id("0000000000000000") is None
    assert cv.parse_span_id(12) == 12
    assert cv.parse_span_id(True) is None


def test_rewards_all_formats() -> None:
    agl = span(T, name="agentlightning.annotation", start=50, attrs={
        "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1.5,
        "agentlightning.reward.1.name": "aux", "agentlightning.reward.1.value": 0.25,
    })
    rs = cv.read_rewards(agl)
    assert [(r.name, r.value, r.primary, r.time) for r in rs] == [("primary", 1.5, True, 50), ("aux", 0.25, False, 50)]
    ops = span(T, attrs={"agentops.task.output": json.dumps({"type": "reward", "value": 0.5})})
    assert [(r.value, r.source) for r in cv.read_rewards(ops)] == [(0.5, "agentops")]
    assert cv.read_rewards(span(T, attrs={"agentops.entity.output": '{"type": "other", "value": 1}'})) == []
    legacy = span(T, name="agentlightning.annotation", attrs={"reward": 2})
    assert [r.value for r in cv.read_rewards(legacy)] == [2.0]
    assert cv.read_rewards(span(T, name="tool", attrs={"reward": 2})) == []
    assert cv.read_rewards(span(T, attrs={"agentlightning.reward.0.value": "nan"})) == []


def test_llm_helper_round_trip() -> None:
    s = llm(T, [1, 2, 3])
    assert cv.read_response_ids(s).ids == [1, 2, 3]


def test_logprob_lists_accept_numbers_and_reject_bools_and_text():
    """The C-speed fast path of the float-list reader must keep the per-element rules."""
    from otel_tokenfix.trace.conventions import _float_list

    assert _float_list([0.5, -1.25]) == [0.5, -1.25]
    ints = _float_list([1, 2.5])
    assert ints == [1.0, 2.5] and all(type(x) is float for x in ints)
    assert _float_list([True, 0.1]) is None
    assert _float_list([0.1, "x"]) is None
    assert _float_list("0.1") is None
