"""The vLLM-like server answers like vLLM >= 0.10.2 with return_token_ids + logprobs (real sockets, real tokenizer)."""

from __future__ import annotations

import json

import httpx
import pytest

from otel_tokenfix.demo.vllm_server import Reply, ToolCall, generate, token_table

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def post(server, path, body, **kw):
    body = {"model": server.model, **body}
    return httpx.post(server.base_url + path, json=body, timeout=30, **kw)


def sse_events(response) -> list:
    out = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chat_returns_template_prompt_ids_and_choice_ids_that_decode_to_the_content(serve, qwen):
    server = serve([Reply("Blue, like the sky.")])
    body = post(server, "/chat/completions", {"messages": MSGS, "return_token_ids": True, "logprobs": True}).json()
    expected_prompt = qwen.encode(
        qwen.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True), add_special_tokens=False
    )
    assert body["prompt_token_ids"] == expected_prompt
    assert expected_prompt[-3:] == [151644, 77091, 198]  # "<|im_start|>assistant\n"
    choice = body["choices"][0]
    assert choice["token_ids"][-1] == 151645  # <|im_end|> is sampled, hidden from the content
    assert choice["message"]["content"] == "Blue, like the sky."
    assert qwen.decode(choice["token_ids"], skip_special_tokens=True) == "Blue, like the sky."
    entries = choice["logprobs"]["content"]
    assert len(entries) == len(choice["token_ids"])
    assert all(e["logprob"] <= 0 for e in entries)
    assert b"".join(bytes(e["bytes"]) for e in entries[:-1]).decode() == "Blue, like the sky."
    assert body["usage"] == {"prompt_tokens": len(expected_prompt), "completion_tokens": len(entries),
                             "total_tokens": len(expected_prompt) + len(entries)}


def test_without_return_token_ids_the_id_fields_are_null_and_logprobs_absent(serve):
    server = serve([Reply("Red.")])
    body = post(server, "/chat/completions", {"messages": MSGS}).json()
    assert body["prompt_token_ids"] is None
    assert body["choices"][0]["token_ids"] is None
    assert body["choices"][0]["logprobs"] is None


def test_non_canonical_split_keeps_the_text_and_differs_from_canonical_ids(serve, qwen):
    text = "Unquestionably, the extraordinary Pantomime performances continued."
    server = serve([Reply(text, split=1.0)])
    choice = post(server, "/chat/completions", {"messages": MSGS, "return_token_ids": True}).json()["choices"][0]
    ids = choice["token_ids"][:-1]
    canonical = qwen.encode(text, add_special_tokens=False)
    assert qwen.decode(ids) == text == choice["message"]["content"]
    assert len(ids) > len(canonical)  # several tokens were sampled as two pieces
    assert server.generations[0].split_positions


def test_split_token_pieces_are_valid_and_concatenate(qwen):
    table = token_table(qwen)
    (token,) = qwen.encode(" Pantom", add_special_tokens=False)[-1:]
    a, b = table.split_token(token)
    assert table.token_bytes(a) + table.token_bytes(b) == table.token_bytes(token)
    assert table.split_token(151645) is None  # special tokens are never split


def test_generation_is_deterministic_for_a_seed(qwen):
    table = token_table(qwen)
    one = generate(table, Reply("A fairly long answer with several words in it.", split=0.5), seed=7)
    two = generate(table, Reply("A fairly long answer with several words in it.", split=0.5), seed=7)
    assert one == two


def test_n_2_gives_two_choices_from_the_queue(serve):
    server = serve([Reply("One."), Reply("Two.")])
    body = post(server, "/chat/completions", {"messages": MSGS, "n": 2, "return_token_ids": True}).json()
    assert [c["message"]["content"] for c in body["choices"]] == ["One.", "Two."]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["token_ids"] != body["choices"][1]["token_ids"]


def test_stream_chunks_carry_ids_whose_concatenation_equals_the_non_streamed_answer(serve, qwen):
    text = "Green: café, naïve 😀 done."
    server = serve([Reply(text, split=0.3)], seed=3)
    resp = post(server, "/chat/completions",
                {"messages": MSGS, "stream": True, "return_token_ids": True, "logprobs": True,
                 "stream_options": {"include_usage": True}})
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["prompt_token_ids"] and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    ids, content, lps = [], "", []
    for chunk in chunks[1:]:
        for choice in chunk["choices"]:
            ids += choice["token_ids"]
            content += choice["delta"].get("content") or ""
            lps += [e["logprob"] for e in choice["logprobs"]["content"]]
    assert content == text
    assert ids == server.generations[0].token_ids
    assert len(lps) == len(ids)
    assert qwen.decode(ids, skip_special_tokens=True) == text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(ids)


def test_tool_call_reply_has_parsed_tool_calls_and_ids_of_the_rendered_call(serve, qwen):
    server = serve([Reply("Let me look.", tool_calls=(ToolCall("search", {"query": "capital of France"}),))])
    choice = post(server, "/chat/completions",
                  {"messages": MSGS, "return_token_ids": True})
    choice = choice.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "search", "arguments": '{"query": "capital of France"}'}
    raw = qwen.decode(choice["token_ids"], skip_special_tokens=True)
    assert raw.startswith("Let me look.\n\n<tool_call>\n") and raw.endswith("</tool_call>")
    assert 151657 in choice["token_ids"]  # <tool_call> is one (non-special) token


def test_tool_call_messages_in_the_prompt_are_rendered_like_qwen(serve, qwen):
    server = serve(["Done."])
    messages = MSGS + [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    body = post(server, "/chat/completions", {"messages": messages, "return_token_ids": True}).json()
    prompt = qwen.decode(body["prompt_token_ids"])
    assert '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>' in prompt
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>" in prompt


def test_error_reply_answers_with_the_status_and_an_openai_error_body(serve):
    server = serve([Reply(error=(400, "context too long"))])
    resp = post(server, "/chat/completions", {"messages": MSGS})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "context too long"


def test_exhausted_queue_answers_500_and_unknown_model_404(serve):
    server = serve([])
    assert post(server, "/chat/completions", {"messages": MSGS}).status_code == 500
    assert httpx.post(server.base_url + "/chat/completions", json={"model": "x", "messages": MSGS}).status_code == 404


def test_no_ids_server_ignores_return_token_ids(serve):
    server = serve(["Yellow."], token_ids=False)
    body = post(server, "/chat/completions", {"messages": MSGS, "return_token_ids": True, "logprobs": True}).json()
    assert "prompt_token_ids" not in body and "token_ids" not in body["choices"][0]
    assert body["choices"][0]["logprobs"]["content"]  # logprobs still work (like OpenAI)


def test_strict_server_rejects_vllm_only_fields(serve):
    server = serve(["Ok."], strict=True)
    resp = post(server, "/chat/completions", {"messages": MSGS, "return_token_ids": True})
    assert resp.status_code == 400 and "return_token_ids" in resp.json()["error"]["message"]
    assert post(server, "/chat/completions", {"messages": MSGS}).status_code == 200


def test_max_tokens_truncates_with_finish_reason_length(serve):
    server = serve([Reply("A long answer that will certainly be cut short.")])
    choice = post(server, "/chat/completions",
                  {"messages": MSGS, "max_tokens": 3, "return_token_ids": True}).json()["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["token_ids"]) == 3
    assert 151645 not in choice["token_ids"]


def test_completions_endpoint_returns_per_choice_prompt_ids_and_legacy_logprobs(serve, qwen):
    server = serve([Reply(" Paris.")])
    body = post(server, "/completions", {"prompt": "The capital of France is", "return_token_ids": True,
                                         "logprobs": 0}).json()
    choice = body["choices"][0]
    assert body["object"] == "text_completion"
    assert choice["text"] == " Paris."
    assert choice["prompt_token_ids"] == qwen.encode("The capital of France is", add_special_tokens=False)
    assert len(choice["logprobs"]["token_logprobs"]) == len(choice["token_ids"])


def test_stream_error_after_k_tokens_sends_an_error_event(serve):
    server = serve([Reply("Some words that stream for a while.", stream_error_after=2)])
    events = sse_events(post(server, "/chat/completions", {"messages": MSGS, "stream": True}))
    assert events[-1] == "[DONE]" and "error" in events[-2]
    assert len(events) == 1 + 2 + 2  # role chunk, 2 tokens, the error, [DONE] (as vLLM does)


def test_echo_without_script_and_callable_script(serve):
    server = serve()
    body = post(server, "/chat/completions", {"messages": MSGS}).json()
    assert body["choices"][0]["message"]["content"] == "You said: Name a colour."
    seen = []
    server2 = serve(lambda body, i: seen.append(i) or Reply(f"choice {i}"))
    body = post(server2, "/chat/completions", {"messages": MSGS, "n": 3}).json()
    assert [c["message"]["content"] for c in body["choices"]] == ["choice 0", "choice 1", "choice 2"]
    assert seen == [0, 1, 2]


def test_server_stops_and_frees_its_port(serve):
    server = serve(["x"])
    url = server.base_url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url.replace("/v1", "/health"), timeout=2)


def test_reasoning_parser_moves_think_into_reasoning_content(serve, qwen):
    text = "<think>\nThe user wants a colour.\n</think>\n\nBlue."
    server = serve([Reply(text), Reply(text)], reasoning_parser=True)
    body = post(server, "/chat/completions", {"messages": MSGS, "return_token_ids": True}).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "\nThe user wants a colour.\n"
    assert message["content"] == "\n\nBlue."
    assert qwen.decode(body["choices"][0]["token_ids"], skip_special_tokens=True) == text  # ids: all of it
    events = sse_events(post(server, "/chat/completions", {"messages": MSGS, "stream": True}))
    deltas = [c["choices"][0]["delta"] for c in events[1:-1] if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message["reasoning_content"]
    assert "".join(d.get("content", "") for d in deltas) == message["content"]
