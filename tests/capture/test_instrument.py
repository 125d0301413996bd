"""instrument_openai with the real ``openai`` client against the vLLM-like server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import json
import time

import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from otel_tokenfix import instrument_openai, uninstrument_openai
from otel_tokenfix.capture import choice_response_id, is_instrumented
from otel_tokenfix.demo.vllm_server import Reply, ToolCall

MSGS = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."


def client_for(server, tracing, **options):
    client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    return instrument_openai(client, tracer_provider=tracing.provider, **options)


def async_client_for(server, tracing, **options):
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    return instrument_openai(client, tracer_provider=tracing.provider, **options)


def logprobs_of(attributes):
    return [entry["logprob"] for entry in json.loads(attributes["logprobs.content"])]


def only_span(tracing):
    spans = tracing.llm_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def assert_captured(span, server, text, index=0):
    gen = server.generations[index]
    a = span.attributes
    assert a["tokenfix.capture.status"] == "ok"
    assert list(a["tokenfix.response.token_ids"]) == gen.token_ids
    assert logprobs_of(a) == gen.logprobs
    assert list(a["tokenfix.prompt.token_ids"]) == server.tokenizer.encode(
        server.tokenizer.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )
    assert a["gen_ai.completion.0.content"] == text


# --- sync --------------------------------------------------------------------------------------------


def test_sync_chat_call_gets_a_genai_client_span_with_ids_logprobs_and_text(serve, tracing):
    server = serve([Reply(ANSWER, split=0.3)])
    client = client_for(server, tracing)
    resp = client.chat.completions.create(model=server.model, messages=MSGS, temperature=0.2, max_tokens=64)
    assert resp.choices[0].message.content == ANSWER
    span = only_span(tracing)
    assert span.name == f"chat {server.model}" and span.kind == SpanKind.CLIENT
    assert span.status.status_code == StatusCode.UNSET
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == server.model
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.response.id"] == resp.id
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
    assert_captured(span, server, ANSWER)
    assert server.generations[0].split_positions  # the sampled ids are non-canonical, and kept as sampled
    # message content is not recorded without the opt-in
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a


def test_request_asks_for_ids_and_logprobs_via_extra_body(serve, tracing):
    server = serve(["a"])
    client_for(server, tracing).chat.completions.create(model=server.model, messages=MSGS)
    body = server.requests[0]["body"]
    assert body["return_token_ids"] is True and body["logprobs"] is True


def test_user_values_are_not_clobbered(serve, tracing):
    server = serve(["a", "b"])
    client = client_for(server, tracing)
    client.chat.completions.create(model=server.model, messages=MSGS, logprobs=False,
                                   extra_body={"return_token_ids": False, "top_k": 5})
    body = server.requests[0]["body"]
    assert body["logprobs"] is False and body["return_token_ids"] is False and body["top_k"] == 5
    span = tracing.llm_spans()[0]
    assert span.attributes["tokenfix.capture.status"] == "no_token_ids"
    client.chat.completions.create(model=server.model, messages=MSGS, logprobs=True, top_logprobs=2)
    assert server.requests[1]["body"]["top_logprobs"] == 2 and server.requests[1]["body"]["return_token_ids"]


def test_requests_can_leave_the_body_alone_for_strict_servers(serve, tracing):
    server = serve(["Fine."], strict=True)
    client = client_for(server, tracing, request_token_ids=False, request_logprobs=False)
    assert client.chat.completions.create(model=server.model, messages=MSGS).choices[0].message.content == "Fine."
    assert "return_token_ids" not in server.requests[0]["body"] and "logprobs" not in server.requests[0]["body"]
    span = only_span(tracing)
    assert span.attributes["tokenfix.capture.status"] == "no_token_ids"
    assert "not requested" in span.attributes["tokenfix.capture.reason"]


def test_strict_server_error_with_defaults_propagates_unchanged(serve, tracing):
    server = serve(["x"], strict=True)
    client = client_for(server, tracing)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=server.model, messages=MSGS)
    assert "return_token_ids" in str(info.value)


def test_api_error_sets_span_error_records_the_exception_and_re_raises_unchanged(serve, tracing):
    server = serve([Reply(error=(400, "context length exceeded"))])
    client = client_for(server, tracing)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=server.model, messages=MSGS)
    assert info.value.status_code == 400 and "context length exceeded" in info.value.message
    span = only_span(tracing)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "BadRequestError"
    assert span.attributes["tokenfix.capture.status"] == "error"
    assert "tokenfix.response.token_ids" not in span.attributes
    assert [e.name for e in span.events] == ["exception"]


def test_connection_error_is_recorded_and_propagates(tracing):
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0, timeout=2)
    instrument_openai(client, tracer_provider=tracing.provider)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MSGS)
    span = only_span(tracing)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["tokenfix.capture.status"] == "error"


def test_no_ids_server_span_says_so(serve, tracing):
    server = serve([ANSWER], token_ids=False)
    client = client_for(server, tracing)
    client.chat.completions.create(model=server.model, messages=MSGS)
    a = only_span(tracing).attributes
    assert a["tokenfix.capture.status"] == "no_token_ids"
    assert "token_ids" in a["tokenfix.capture.reason"]
    assert "tokenfix.response.token_ids" not in a and "tokenfix.prompt.token_ids" not in a
    assert a["gen_ai.completion.0.content"] == ANSWER  # the text is still there for inspection


def test_n_2_choice_0_on_the_call_span_choice_1_on_a_child_span(serve, tracing):
    server = serve([Reply("Paris."), Reply("It is Paris.", split=0.5)])
    client = client_for(server, tracing)
    resp = client.chat.completions.create(model=server.model, messages=MSGS, n=2)
    spans = tracing.llm_spans()
    assert len(spans) == 2
    child, call = spans  # the child ends first: choice 0 stays the most recent LLM span
    assert call.kind == SpanKind.CLIENT and child.kind == SpanKind.INTERNAL
    assert child.parent.span_id == call.context.span_id
    assert call.attributes["tokenfix.choice.index"] == 0 and child.attributes["tokenfix.choice.index"] == 1
    assert call.attributes["gen_ai.response.id"] == resp.id
    assert child.attributes["gen_ai.response.id"] == choice_response_id(resp.id, 1) == f"{resp.id}#1"
    assert list(call.attributes["tokenfix.response.token_ids"]) == resp.choices[0].token_ids
    assert list(child.attributes["tokenfix.response.token_ids"]) == resp.choices[1].token_ids
    assert child.attributes["gen_ai.completion.0.content"] == "It is Paris."
    assert call.attributes["tokenfix.prompt.token_ids"] == child.attributes["tokenfix.prompt.token_ids"]
    assert call.attributes["gen_ai.response.finish_reasons"] == ("stop", "stop")
    assert call.attributes["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert call.attributes["gen_ai.request.choice.count"] == 2


def test_tool_call_reply_keeps_ids_and_leaves_the_text_key_to_the_decoder(serve, tracing, qwen):
    call = ToolCall("search", {"query": "capital of France"})
    server = serve([Reply("Let me check.", tool_calls=(call,))])
    client = client_for(server, tracing)
    resp = client.chat.completions.create(
        model=server.model, messages=MSGS,
        tools=[{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}],
    )
    assert resp.choices[0].message.tool_calls[0].function.name == "search"
    a = only_span(tracing).attributes
    ids = list(a["tokenfix.response.token_ids"])
    assert ids == server.generations[0].token_ids and 151657 in ids
    # the content is not what the ids decode to, so it is not under the text key correction reads
    assert "gen_ai.completion.0.content" not in a
    assert a["tokenfix.capture.content"] == "Let me check."
    assert a["gen_ai.completion.0.tool_calls.0.name"] == "search"
    assert "gen_ai.completion.0.tool_calls.0.arguments" not in a  # content: opt-in only
    assert a["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert "<tool_call>" in qwen.decode(ids, skip_special_tokens=True)


def test_content_capture_opt_in_by_env(serve, tracing, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    server = serve([ANSWER])
    client_for(server, tracing).chat.completions.create(model=server.model, messages=MSGS)
    a = only_span(tracing).attributes
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": MSGS[0]["content"]}]}
    ]
    out = json.loads(a["gen_ai.output.messages"])
    assert out == [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "stop"}]


def test_content_capture_parameter_overrides_env_and_record_text_off(serve, tracing, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    server = serve([ANSWER])
    client = client_for(server, tracing, capture_content=False, record_text=False)
    client.chat.completions.create(model=server.model, messages=MSGS)
    a = only_span(tracing).attributes
    assert "gen_ai.input.messages" not in a and "gen_ai.completion.0.content" not in a
    assert a["tokenfix.response.token_ids"]  # ids are always captured


# --- streaming ---------------------------------------------------------------------------------------


def test_stream_read_to_the_end_collects_ids_per_chunk(serve, tracing):
    server = serve([Reply("Paris, naturally — café au lait.", split=0.4)])
    client = client_for(server, tracing)
    stream = client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
    assert isinstance(stream, openai.Stream)  # the caller keeps the real object
    assert tracing.llm_spans() == []  # the span stays open while the stream is read
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Paris, naturally — café au lait."
    span = only_span(tracing)
    assert_captured(span, server, text)
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)


def test_stream_closed_early_ends_the_span_as_incomplete(serve, tracing):
    server = serve([Reply("One two three four five six seven eight nine ten.")])
    client = client_for(server, tracing)
    stream = client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
    seen = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(chunk.choices[0].delta.content)
        if len(seen) == 3:
            break
    stream.close()
    a = only_span(tracing).attributes
    assert a["tokenfix.capture.status"] == "incomplete"
    assert a["gen_ai.completion.0.content"] == "".join(seen)
    assert list(a["tokenfix.response.token_ids"]) == server.generations[0].token_ids[:3]


def test_stream_used_as_context_manager_ends_the_span(serve, tracing):
    server = serve(["Short."])
    client = client_for(server, tracing)
    with client.chat.completions.create(model=server.model, messages=MSGS, stream=True) as stream:
        next(iter(stream))  # the role chunk: prompt ids, no response token yet
    a = only_span(tracing).attributes
    assert a["tokenfix.capture.status"] == "incomplete"
    assert a["tokenfix.response.token_ids"] == () and len(a["tokenfix.prompt.token_ids"]) > 0


def test_stream_dropped_unread_still_ends_its_span(serve, tracing):
    server = serve(["Never read."])
    client = client_for(server, tracing)
    stream = client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
    stream.response.close()
    del stream
    deadline = time.monotonic() + 5
    while not tracing.llm_spans() and time.monotonic() < deadline:  # finalizers run when the collector says
        gc.collect()
        time.sleep(0.02)
    assert only_span(tracing).attributes["tokenfix.capture.status"] == "incomplete"


def test_stream_error_mid_way_marks_the_span_and_re_raises(serve, tracing):
    server = serve([Reply("Words that will stop streaming early.", stream_error_after=2)])
    client = client_for(server, tracing)
    stream = client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
    with pytest.raises(openai.APIError, match="scripted stream failure"):
        for _ in stream:
            pass
    span = only_span(tracing)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["tokenfix.capture.status"] == "error"
    assert list(span.attributes["tokenfix.response.token_ids"]) == server.generations[0].token_ids[:2]


def test_stream_from_a_no_ids_server(serve, tracing):
    server = serve(["Hello."], token_ids=False)
    client = client_for(server, tracing)
    assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=server.model, messages=MSGS, stream=True) if c.choices) == "Hello."
    assert only_span(tracing).attributes["tokenfix.capture.status"] == "no_token_ids"


def test_stream_helper_is_captured_through_create(serve, tracing):
    server = serve(["Via the helper."])
    client = client_for(server, tracing)
    with client.chat.completions.stream(model=server.model, messages=MSGS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Via the helper."
    assert_captured(only_span(tracing), server, "Via the helper.")


def test_stream_n_2_with_tool_call(serve, tracing):
    server = serve([Reply("Plain."), Reply(tool_calls=(ToolCall("lookup", {"id": 7}),))])
    client = client_for(server, tracing)
    for _ in client.chat.completions.create(model=server.model, messages=MSGS, stream=True, n=2):
        pass
    child, call = tracing.llm_spans()
    assert list(call.attributes["tokenfix.response.token_ids"]) == server.generations[0].token_ids
    assert list(child.attributes["tokenfix.response.token_ids"]) == server.generations[1].token_ids
    assert child.attributes["gen_ai.completion.0.tool_calls.0.name"] == "lookup"
    assert "gen_ai.completion.0.content" not in child.attributes


# --- completions API, raw responses ------------------------------------------------------------------


def test_completions_api_sync_and_stream(serve, tracing, qwen):
    server = serve([Reply(" Paris."), Reply(" Lyon is not.")])
    client = client_for(server, tracing)
    resp = client.completions.create(model=server.model, prompt="The capital of France is")
    assert resp.choices[0].text == " Paris."
    assert server.requests[0]["body"]["logprobs"] == 0
    text = "".join(c.choices[0].text for c in client.completions.create(
        model=server.model, prompt="The capital of France is", stream=True) if c.choices)
    assert text == " Lyon is not."
    one, two = tracing.llm_spans()
    assert one.name == f"text_completion {server.model}"
    prompt = qwen.encode("The capital of France is", add_special_tokens=False)
    for span, gen, txt in ((one, server.generations[0], " Paris."), (two, server.generations[1], text)):
        assert span.attributes["gen_ai.operation.name"] == "text_completion"
        assert list(span.attributes["tokenfix.prompt.token_ids"]) == prompt
        assert list(span.attributes["tokenfix.response.token_ids"]) == gen.token_ids
        assert logprobs_of(span.attributes) == gen.logprobs
        assert span.attributes["gen_ai.completion.0.content"] == txt


def test_with_raw_response_is_captured_and_the_caller_parses_the_same_object(serve, tracing):
    server = serve([ANSWER])
    client = client_for(server, tracing)
    raw = client.chat.completions.with_raw_response.create(model=server.model, messages=MSGS)
    assert raw.parse().choices[0].message.content == ANSWER
    assert_captured(only_span(tracing), server, ANSWER)


# --- async -------------------------------------------------------------------------------------------


def test_async_chat_stream_error_and_n2(serve, tracing):
    server = serve([Reply(ANSWER, split=0.3), "streamed async", Reply(error=(404, "gone")), "x", "y"])
    client = async_client_for(server, tracing)

    async def go():
        resp = await client.chat.completions.create(model=server.model, messages=MSGS)
        stream = await client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model=server.model, messages=MSGS)
        both = await client.chat.completions.create(model=server.model, messages=MSGS, n=2)
        return resp, text, both

    resp, text, both = asyncio.run(go())
    assert resp.choices[0].message.content == ANSWER and text == "streamed async"
    one, two, err, child, call = tracing.llm_spans()
    assert_captured(one, server, ANSWER, index=0)
    assert_captured(two, server, "streamed async", index=1)
    assert err.status.status_code == StatusCode.ERROR and err.attributes["tokenfix.capture.status"] == "error"
    assert child.parent.span_id == call.context.span_id
    assert [list(s.attributes["tokenfix.response.token_ids"]) for s in (call, child)] == [
        c.token_ids for c in both.choices
    ]


def test_async_stream_closed_early_and_async_completions(serve, tracing):
    server = serve(["Alpha beta gamma delta epsilon.", Reply(" done.")])
    client = async_client_for(server, tracing)

    async def go():
        stream = await client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await stream.close()
        await client.completions.create(model=server.model, prompt="We are")

    asyncio.run(go())
    chat, text = tracing.llm_spans()
    assert chat.attributes["tokenfix.capture.status"] == "incomplete"
    assert list(chat.attributes["tokenfix.response.token_ids"]) == server.generations[0].token_ids[:1]
    assert text.attributes["gen_ai.completion.0.content"] == " done."


# --- patching: global, per client, idempotent, reversible ---------------------------------------------


def test_global_patch_idempotent_and_uninstrument_restores(serve, tracing, no_global_patch):
    original = openai.resources.chat.completions.Completions.create
    server = serve(["one", "two", "three"])
    instrument_openai(tracer_provider=tracing.provider)
    instrument_openai(tracer_provider=tracing.provider)  # again: still one wrapper
    assert is_instrumented()
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    client.chat.completions.create(model=server.model, messages=MSGS)
    assert len(tracing.llm_spans()) == 1
    # an instance patch on top of the global one still gives one span per call
    instrument_openai(client, tracer_provider=tracing.provider)
    client.chat.completions.create(model=server.model, messages=MSGS)
    assert len(tracing.llm_spans()) == 2
    uninstrument_openai(client)
    uninstrument_openai()
    assert openai.resources.chat.completions.Completions.create is original
    assert not is_instrumented()
    client.chat.completions.create(model=server.model, messages=MSGS)
    assert len(tracing.llm_spans()) == 2
    assert "return_token_ids" not in server.requests[2]["body"]


def test_instance_patch_only_touches_that_client(serve, tracing):
    server = serve(["a", "b", "c"])
    patched = client_for(server, tracing)
    other = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    patched.chat.completions.create(model=server.model, messages=MSGS)
    other.chat.completions.create(model=server.model, messages=MSGS)
    assert len(tracing.llm_spans()) == 1
    assert "return_token_ids" not in server.requests[1]["body"]
    uninstrument_openai(patched)
    patched.chat.completions.create(model=server.model, messages=MSGS)
    assert len(tracing.llm_spans()) == 1
    assert "create" not in vars(patched.chat.completions)


def test_reinstrument_updates_options(serve, tracing):
    server = serve(["a", "b"])
    client = client_for(server, tracing)
    client.chat.completions.create(model=server.model, messages=MSGS)
    instrument_openai(client, tracer_provider=tracing.provider, request_token_ids=False)
    client.chat.completions.create(model=server.model, messages=MSGS)
    assert "return_token_ids" in server.requests[0]["body"]
    assert "return_token_ids" not in server.requests[1]["body"]
    assert len(tracing.llm_spans()) == 2


def test_span_nests_under_the_current_agent_span(serve, tracing):
    server = serve(["a"])
    client = client_for(server, tracing)
    with tracing.tracer.start_as_current_span("agent.step") as step:
        client.chat.completions.create(model=server.model, messages=MSGS)
    span = only_span(tracing)
    assert span.parent.span_id == step.get_span_context().span_id
    assert span.context.trace_id == step.get_span_context().trace_id


# --- alongside other instrumentations ----------------------------------------------------------------


def _other_instrumentation(tracer, call, attributes, kind=SpanKind.CLIENT):
    """What OpenLLMetry/OpenInference do: open an LLM span around the client call, set their keys."""
    with tracer.start_as_current_span("openai.chat", kind=kind, attributes=attributes) as span:
        resp = call()
        span.set_attribute("gen_ai.response.model", "set-by-other")
        return resp


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({"gen_ai.system": "openai", "llm.request.type": "chat"}, SpanKind.CLIENT),  # OpenLLMetry
        ({"openinference.span.kind": "LLM", "llm.model_name": "m"}, SpanKind.INTERNAL),  # OpenInference
    ],
)
def test_other_llm_span_gets_our_attributes_instead_of_a_second_span(serve, tracing, attributes, kind):
    server = serve([ANSWER])
    client = client_for(server, tracing)
    _other_instrumentation(
        tracing.tracer, lambda: client.chat.completions.create(model=server.model, messages=MSGS), attributes, kind
    )
    spans = tracing.exporter.get_finished_spans()
    assert [s.name for s in spans] == ["openai.chat"]
    a = spans[0].attributes
    assert_captured(spans[0], server, ANSWER)
    assert a["gen_ai.response.model"] == "set-by-other"  # its own keys stay its own
    for key, value in attributes.items():
        assert a[key] == value


def test_other_span_reused_for_a_stream(serve, tracing):
    server = serve(["Streamed through another span."])
    client = client_for(server, tracing)

    def call():
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=server.model, messages=MSGS, stream=True) if c.choices)

    assert _other_instrumentation(tracing.tracer, call, {"gen_ai.system": "openai"}) == (
        "Streamed through another span."
    )
    (span,) = tracing.exporter.get_finished_spans()
    assert_captured(span, server, "Streamed through another span.")


def test_a_plain_agent_span_or_an_already_captured_span_is_not_reused(serve, tracing):
    server = serve(["a", "b", "c"])
    client = client_for(server, tracing)
    with tracing.tracer.start_as_current_span("agent", kind=SpanKind.INTERNAL, attributes={"gen_ai.system": "x"}):
        client.chat.completions.create(model=server.model, messages=MSGS)
    with tracing.tracer.start_as_current_span("llm", kind=SpanKind.CLIENT, attributes={"gen_ai.system": "x"}):
        client.chat.completions.create(model=server.model, messages=MSGS)
        client.chat.completions.create(model=server.model, messages=MSGS)  # the first call filled it
    names = [s.name for s in tracing.exporter.get_finished_spans()]
    assert names.count(f"chat {server.model}") == 2 and "llm" in names


def test_reuse_can_be_turned_off(serve, tracing):
    server = serve(["a"])
    client = client_for(server, tracing, reuse_llm_span=False)
    _other_instrumentation(tracing.tracer, lambda: client.chat.completions.create(model=server.model, messages=MSGS),
                           {"gen_ai.system": "openai"})
    assert sorted(s.name for s in tracing.exporter.get_finished_spans()) == [f"chat {server.model}", "openai.chat"]


# --- never raise into user code ----------------------------------------------------------------------


class _BrokenProvider:
    def get_tracer(self, *args, **kwargs):
        raise RuntimeError("telemetry is broken")


def test_broken_telemetry_never_breaks_the_call(serve):
    server = serve([ANSWER, "stream ok"])
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    instrument_openai(client, tracer_provider=_BrokenProvider())
    assert client.chat.completions.create(model=server.model, messages=MSGS).choices[0].message.content == ANSWER
    chunks = client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "stream ok"


def test_unreadable_chunks_do_not_break_the_stream(serve, tracing, monkeypatch):
    from otel_tokenfix.capture import extract

    def broken_feed(self, chunk):
        raise ValueError("bad chunk")

    monkeypatch.setattr(extract.StreamCollector, "feed", broken_feed)
    server = serve(["still fine"])
    client = client_for(server, tracing)
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=server.model, messages=MSGS, stream=True) if c.choices)
    assert text == "still fine"
    assert only_span(tracing).attributes["tokenfix.capture.status"] == "unsupported_response"


def test_structured_output_parse_is_captured_sync_and_async(serve, tracing, no_global_patch):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str

    server = serve(['{"city": "Paris"}', '{"city": "Lyon"}'])
    instrument_openai(tracer_provider=tracing.provider)  # the global patch covers parse too
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    parsed = client.chat.completions.parse(model=server.model, messages=MSGS, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="Paris")
    aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    got = asyncio.run(aclient.chat.completions.parse(model=server.model, messages=MSGS, response_format=City))
    assert got.choices[0].message.parsed == City(city="Lyon")
    one, two = tracing.llm_spans()
    assert_captured(one, server, '{"city": "Paris"}', index=0)
    assert_captured(two, server, '{"city": "Lyon"}', index=1)
    assert server.requests[0]["body"]["return_token_ids"] is True


def _wrap_class_like_openllmetry(tracer):
    """A hand-made 'other instrumentation' that wraps Completions.create on the class, as wrapt-based ones do."""
    cls = openai.resources.chat.completions.Completions
    inner = cls.__dict__["create"]

    def create(self, *args, **kwargs):
        with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT, attributes={"gen_ai.system": "openai"}):
            return inner(self, *args, **kwargs)

    create.__wrapped__ = inner
    cls.create = create
    return cls, inner


def test_instrumented_before_another_class_wrapper_gives_one_span(serve, tracing, no_global_patch):
    server = serve(["one", "two"])
    original = openai.resources.chat.completions.Completions.create
    instrument_openai(tracer_provider=tracing.provider)
    cls, ours = _wrap_class_like_openllmetry(tracing.tracer)
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model=server.model, messages=MSGS)
        (span,) = tracing.exporter.get_finished_spans()
        assert span.name == "openai.chat"
        assert list(span.attributes["tokenfix.response.token_ids"]) == server.generations[0].token_ids
        # uninstrumenting while the other wrapper sits on top: ours becomes a pass-through
        uninstrument_openai()
        client.chat.completions.create(model=server.model, messages=MSGS)
        assert "return_token_ids" not in server.requests[1]["body"]
        assert "tokenfix.response.token_ids" not in tracing.exporter.get_finished_spans()[1].attributes
        assert getattr(ours, "__wrapped__", None) is original  # the other wrapper sits on ours
    finally:
        cls.create = original


def test_instrumented_after_another_class_wrapper_nests_but_only_ours_has_ids(serve, tracing, no_global_patch):
    server = serve(["one"])
    original = openai.resources.chat.completions.Completions.create
    cls, _ = _wrap_class_like_openllmetry(tracing.tracer)
    theirs = cls.__dict__["create"]
    try:
        instrument_openai(tracer_provider=tracing.provider)
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model=server.model, messages=MSGS)
        spans = tracing.exporter.get_finished_spans()
        assert sorted(s.name for s in spans) == [f"chat {server.model}", "openai.chat"]
        assert [s.name for s in spans if "tokenfix.response.token_ids" in s.attributes] == [f"chat {server.model}"]
        uninstrument_openai()
        assert cls.__dict__["create"] is theirs  # restored to what was there before us
    finally:
        cls.create = original


def test_async_with_raw_response_is_captured(serve, tracing):
    server = serve([ANSWER])
    client = async_client_for(server, tracing)
    raw = asyncio.run(client.chat.completions.with_raw_response.create(model=server.model, messages=MSGS))
    assert raw.parse().choices[0].message.content == ANSWER
    assert_captured(only_span(tracing), server, ANSWER)


def test_with_streaming_response_is_left_to_the_caller(serve, tracing):
    server = serve([ANSWER])
    client = client_for(server, tracing)
    with client.chat.completions.with_streaming_response.create(model=server.model, messages=MSGS) as resp:
        assert resp.parse().choices[0].message.content == ANSWER
    a = only_span(tracing).attributes
    assert a["tokenfix.capture.status"] == "unsupported_response"
    assert "tokenfix.response.token_ids" not in a


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_parser_reply_keeps_ids_and_leaves_the_text_key_to_the_decoder(serve, tracing, qwen, stream):
    text = "<think>\nEasy one.\n</think>\n\nParis."
    server = serve([Reply(text)], reasoning_parser=True)
    client = client_for(server, tracing)
    resp = client.chat.completions.create(model=server.model, messages=MSGS, stream=stream)
    if stream:
        for _ in resp:
            pass
    a = only_span(tracing).attributes
    assert list(a["tokenfix.response.token_ids"]) == server.generations[0].token_ids
    assert qwen.decode(list(a["tokenfix.response.token_ids"]), skip_special_tokens=True) == text
    assert "gen_ai.completion.0.content" not in a
    assert a["tokenfix.capture.content"] == "\n\nParis."
    assert a["tokenfix.capture.reasoning"] == "\nEasy one.\n"


def _echo_script(body, index):
    return Reply("Answer to " + body["messages"][-1]["content"], split=0.3)


def test_concurrent_threads_each_get_their_own_span_and_ids(serve, tracing, qwen):
    from concurrent.futures import ThreadPoolExecutor

    server = serve(_echo_script)
    client = client_for(server, tracing)

    def agent(n):
        with tracing.tracer.start_as_current_span(f"agent-{n}") as root:
            question = f"question {n}"
            stream = n % 2 == 0
            resp = client.chat.completions.create(model=server.model, stream=stream,
                                                  messages=[{"role": "user", "content": question}])
            if stream:
                for _ in resp:
                    pass
            return root.get_span_context().span_id, question

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(agent, range(24)))
    spans = {s.parent.span_id: s for s in tracing.llm_spans()}
    assert len(spans) == 24
    for parent_id, question in results:
        ids = list(spans[parent_id].attributes["tokenfix.response.token_ids"])
        assert qwen.decode(ids, skip_special_tokens=True) == "Answer to " + question
        prompt = qwen.decode(list(spans[parent_id].attributes["tokenfix.prompt.token_ids"]))
        assert question + "<|im_end|>" in prompt


def test_concurrent_async_tasks_each_get_their_own_span_and_ids(serve, tracing, qwen):
    server = serve(_echo_script)
    client = async_client_for(server, tracing)

    async def agent(n):
        with tracing.tracer.start_as_current_span(f"agent-{n}") as root:
            stream = await client.chat.completions.create(
                model=server.model, stream=True, messages=[{"role": "user", "content": f"task {n}"}])
            async for _ in stream:
                await asyncio.sleep(0)
            return root.get_span_context().span_id, f"task {n}"

    async def main():
        return await asyncio.gather(*(agent(n) for n in range(12)))

    results = asyncio.run(main())
    spans = {s.parent.span_id: s for s in tracing.llm_spans()}
    assert len(spans) == 12
    for parent_id, question in results:
        ids = list(spans[parent_id].attributes["tokenfix.response.token_ids"])
        assert qwen.decode(ids, skip_special_tokens=True) == "Answer to " + question


class _Redirect:
    """An httpx2 transport that sends every request to the local server (as a proxy would)."""

    def __init__(self, port):
        import httpx2

        self.port = port
        self.inner = httpx2.HTTPTransport()

    def handle_request(self, request):
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return self.inner.handle_request(request)

    def close(self):
        self.inner.close()


def test_hosted_openai_is_not_asked_for_token_ids_by_default(serve, tracing):
    import httpx2

    server = serve(["Hi.", "Hi again."])
    http = httpx2.Client(transport=_Redirect(server.port))
    client = openai.OpenAI(base_url="https://api.openai.com/v1", api_key="x", max_retries=0, http_client=http)
    instrument_openai(client, tracer_provider=tracing.provider)
    client.chat.completions.create(model=server.model, messages=MSGS)
    body = server.requests[0]["body"]
    assert "return_token_ids" not in body and "logprobs" not in body  # OpenAI would answer 400
    a = only_span(tracing).attributes
    assert a["server.address"] == "api.openai.com" and a["tokenfix.capture.status"] == "no_token_ids"
    assert "not requested" in a["tokenfix.capture.reason"]
    instrument_openai(client, tracer_provider=tracing.provider, request_token_ids=True)  # explicit wins
    client.chat.completions.create(model=server.model, messages=MSGS)
    assert server.requests[1]["body"]["return_token_ids"] is True


@pytest.mark.parametrize(("host", "hosted"), [
    ("api.openai.com", True), ("API.OpenAI.com.", True), ("my-east.openai.azure.com", True),
    ("127.0.0.1", False), ("vllm.internal", False), ("openai.com.example", False), (None, False),
])
def test_hosted_openai_detection(host, hosted):
    from otel_tokenfix.capture.run import is_hosted_openai, wanted

    assert is_hosted_openai(host) is hosted
    assert wanted(None, host) is (not hosted) and wanted(True, host) is True and wanted(False, host) is False


def test_a_non_openai_object_is_left_alone(caplog):
    class Lookalike:
        class chat:  # noqa: N801 - mimics client.chat.completions.create
            class completions:  # noqa: N801
                @staticmethod
                def create(**kwargs):
                    return "untouched"

    obj = Lookalike()
    assert instrument_openai(obj) is obj
    assert obj.chat.completions.create(model="m") == "untouched"
    assert not is_instrumented(obj)
    assert "not an openai client" in caplog.text
