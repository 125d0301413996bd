"""Captured spans -> TokenFixSpanProcessor -> TripletExporter: correct triplets after an agent's edit.

Real server on 127.0.0.1, real ``openai`` client (sync and async), real Qwen tokenizer, real SDK.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_tokenfix import TokenFixSpanProcessor, TripletExporter, instrument_openai, record_edit, record_reward
from otel_tokenfix.capture import choice_response_id
from otel_tokenfix.demo.vllm_server import Reply, ToolCall

MSGS = [{"role": "user", "content": "Is Paris the capital of France?"}]
ANSWER = "I think that, honestly, Paris is the capital of France and has been for centuries."
EDITED = "Paris is the capital of France and has been for centuries."


class Pipeline:
    """What a user installs: the processor wrapping the exporting processor of the triplet exporter."""

    def __init__(self, tokenizer) -> None:
        self.records: list = []
        self.exporter = TripletExporter(self.records, tokenizers=tokenizer, timer=False)
        self.processor = TokenFixSpanProcessor(
            SimpleSpanProcessor(self.exporter), tokenizers=tokenizer, timer_interval=None
        )
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("agent")

    def flush(self) -> list:
        self.provider.force_flush()
        self.exporter.force_flush()  # SimpleSpanProcessor does not flush its exporter
        return sorted(self.records, key=lambda r: r.index)


@pytest.fixture
def pipeline(qwen):
    p = Pipeline(qwen)
    yield p
    p.provider.shutdown()


def client_for(server, pipeline, cls=openai.OpenAI):
    client = cls(base_url=server.base_url, api_key="x", max_retries=0)
    return instrument_openai(client, tracer_provider=pipeline.provider)


def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def assert_corrected(rec, gen, prompt_ids, edited, qwen, reward=None):
    """Exactly the edited text; sampled ids (and logprobs) kept outside the edit; the prompt unchanged."""
    assert rec.prompt_ids == prompt_ids
    assert qwen.decode(rec.response_ids, skip_special_tokens=True) == edited
    assert rec.response_ids[-1] == gen.token_ids[-1] == 151645  # the sampled <|im_end|> is kept
    assert rec.provenance[-1] in (1, 2)
    assert 0 in rec.provenance  # something was inserted or re-tokenized at the edit
    k = common_prefix(rec.response_ids, gen.token_ids)
    assert all(p == 1 for p in rec.provenance[:k])
    assert rec.log_probs is not None and len(rec.log_probs) == len(rec.response_ids)
    assert rec.log_probs[:k] == pytest.approx(gen.logprobs[:k])  # the sampled prefix keeps its logprobs
    assert rec.reward == reward
    assert rec.metadata["status"] in ("corrected", "fallback") and rec.metadata["edits"] == 1


def prompt_of(server, messages=MSGS):
    tok = server.tokenizer
    return tok.encode(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)


def run_sync_agent(server, pipeline, reward=None):
    client = client_for(server, pipeline)
    with pipeline.tracer.start_as_current_span("agent.run"):
        with pipeline.tracer.start_as_current_span("agent.step"):
            resp = client.chat.completions.create(model=server.model, messages=MSGS)
            text = resp.choices[0].message.content
            assert text == ANSWER
            assert record_edit(text.replace("I think that, honestly, ", ""))
        if reward is not None:
            record_reward(reward, tracer_provider=pipeline.provider)
    return pipeline.flush()


def test_sync_call_and_edit_give_a_corrected_triplet(serve, pipeline, qwen):
    server = serve([Reply(ANSWER, split=0.25)], seed=11)
    (rec,) = run_sync_agent(server, pipeline)
    gen = server.generations[0]
    assert gen.split_positions  # non-canonical samples are in play
    assert rec.metadata["original_token_ids"] == gen.token_ids
    assert_corrected(rec, gen, prompt_of(server), EDITED, qwen)
    # tokens after the edit are the sampled ones (suffix kept), not a re-tokenization
    tail = common_prefix(rec.response_ids[::-1], gen.token_ids[::-1])
    assert tail >= 5


def test_reward_and_completeness_reach_the_triplet(serve, pipeline, qwen):
    """The root is forwarded before the LLM spans it releases: the exporter must still see one trace."""
    server = serve([Reply(ANSWER, split=0.25)], seed=11)
    (rec,) = run_sync_agent(server, pipeline, reward=1.0)
    assert rec.reward == 1.0 and rec.metadata["complete"] is True


def test_stream_call_edit_gives_a_corrected_triplet(serve, pipeline, qwen):
    server = serve([Reply(ANSWER, split=0.3)], seed=5)
    client = client_for(server, pipeline)
    with pipeline.tracer.start_as_current_span("agent.run"):
        stream = client.chat.completions.create(model=server.model, messages=MSGS, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        record_edit(text.replace("I think that, honestly, ", ""))
    (rec,) = pipeline.flush()
    assert_corrected(rec, server.generations[0], prompt_of(server), EDITED, qwen)


def test_async_call_and_async_stream_two_turns(serve, pipeline, qwen):
    server = serve([Reply(ANSWER, split=0.2), Reply("Yes, it is.")])
    client = client_for(server, pipeline, openai.AsyncOpenAI)

    async def agent():
        with pipeline.tracer.start_as_current_span("agent.run"):
            resp = await client.chat.completions.create(model=server.model, messages=MSGS)
            edited = resp.choices[0].message.content.replace("I think that, honestly, ", "")
            record_edit(edited)
            history = MSGS + [{"role": "assistant", "content": edited}, {"role": "user", "content": "Sure?"}]
            stream = await client.chat.completions.create(model=server.model, messages=history, stream=True)
            async for _ in stream:
                pass
            return history

    history = asyncio.run(agent())
    first, second = pipeline.flush()
    assert_corrected(first, server.generations[0], prompt_of(server), EDITED, qwen)
    assert second.response_ids == server.generations[1].token_ids and set(second.provenance) == {1}
    # the next prompt holds the edited text as the server tokenized it
    assert second.prompt_ids == prompt_of(server, history)


def test_n_2_edit_of_choice_1_targets_its_own_span(serve, pipeline, qwen):
    server = serve([Reply("Paris."), Reply(ANSWER, split=0.2)])
    client = client_for(server, pipeline)
    with pipeline.tracer.start_as_current_span("agent.run"):
        resp = client.chat.completions.create(model=server.model, messages=MSGS, n=2)
        edited = resp.choices[1].message.content.replace("I think that, honestly, ", "")
        record_edit(edited, target=choice_response_id(resp.id, 1))
    records = pipeline.flush()
    assert len(records) == 2
    by_ids = {tuple(r.metadata.get("original_token_ids", r.response_ids)): r for r in records}
    plain = by_ids[tuple(server.generations[0].token_ids)]
    edited_rec = by_ids[tuple(server.generations[1].token_ids)]
    assert plain.response_ids == server.generations[0].token_ids and set(plain.provenance) == {1}
    assert_corrected(edited_rec, server.generations[1], prompt_of(server), EDITED, qwen)


def test_tool_call_json_repair_is_corrected_on_the_raw_text(serve, pipeline, qwen):
    broken = ToolCall("search", '{"query": "capital of France",}')  # the model sampled invalid JSON
    server = serve([Reply("Let me check.", tool_calls=(broken,), split=0.2)])
    client = client_for(server, pipeline)
    with pipeline.tracer.start_as_current_span("agent.run"):
        resp = client.chat.completions.create(model=server.model, messages=MSGS)
        ids = resp.choices[0].token_ids
        raw = qwen.decode(ids, skip_special_tokens=True)  # what the ids say, tool call included
        repaired = raw.replace('France",}', 'France"}')
        assert repaired != raw
        record_edit(repaired)
    (rec,) = pipeline.flush()
    assert qwen.decode(rec.response_ids, skip_special_tokens=True) == repaired
    assert 151657 in rec.response_ids and 151658 in rec.response_ids  # <tool_call> tokens kept as sampled
    k = common_prefix(rec.response_ids, ids)
    assert k > 10 and all(p == 1 for p in rec.provenance[:k])


def test_no_ids_server_gives_no_triplet_and_the_span_says_why(serve, pipeline, qwen):
    server = serve([ANSWER], token_ids=False)
    client = client_for(server, pipeline)
    with pipeline.tracer.start_as_current_span("agent.run"):
        client.chat.completions.create(model=server.model, messages=MSGS)
        record_edit(EDITED)
    assert pipeline.flush() == []
    assert pipeline.exporter.stats.triplets == 0
    assert pipeline.exporter.stats.edit_issues == 1  # the edit found no LLM span with ids
