"""A multi-turn agent traced with the real OpenTelemetry SDK: LLM spans carrying real Qwen token ids in
agent-lightning's shape, an edit of each answer on a later agent-step span, rewards in a chosen format.

Shared by the exporter tests (tests/sdk), the interop test (tests/interop) and the benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

IM_START, IM_END = 151644, 151645

TURNS = [
    ("What is the capital of France?", "The capital of France is Lyon.", "The capital of France is Paris."),
    ("And of Italy?", "The capital of Italy is Rome.", None),
    ("And of Spain? Answer in one word.", "Madrid, obviously.", "Madrid."),
]


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def user_turn(tok, text: str) -> list[int]:
    return [IM_START, *enc(tok, "user\n" + text), IM_END, *enc(tok, "\n"), IM_START, *enc(tok, "assistant\n")]


def reward_attributes(fmt: str, value: float) -> tuple[str, dict]:
    """(span name, attributes) of a reward span in one of agent-lightning's formats."""
    if fmt == "agl":
        return "agentlightning.annotation", {
            "agentlightning.reward.0.name": "primary",
            "agentlightning.reward.0.value": value,
        }
    if fmt == "agentops":
        return "reward_fn", {"agentops.task.output": json.dumps({"type": "reward", "value": value})}
    if fmt == "legacy":
        return "agentlightning.annotation", {"reward": value}
    raise ValueError(fmt)


@dataclass
class AgentRun:
    """What the agent did, to check records against."""

    prompts: list[list[int]] = field(default_factory=list)
    sampled: list[list[int]] = field(default_factory=list)
    final_texts: list[str] = field(default_factory=list)
    edited: list[bool] = field(default_factory=list)
    rewards: list[float | None] = field(default_factory=list)
    trace_id: int = 0
    span_ids: list[int] = field(default_factory=list)


def run_agent(
    tracer,
    tok,
    *,
    reward_format: str | None = "agl",
    rewards: tuple[float | None, ...] = (0.0, None, 1.0),
    edit: bool = True,
    turns=TURNS,
    name: str = "agent.run",
    target: str | None = None,
) -> AgentRun:
    """One episode: per turn an LLM span (prompt/response ids, logprobs, text, response id), then an
    agent-step span that edits the answer (``text.edited``, no target or ``target``="span"/"response"),
    then optionally a reward span. The next prompt holds the *edited* answer re-tokenized by the server.
    """
    run = AgentRun()
    with tracer.start_as_current_span(name) as root:
        run.trace_id = root.get_span_context().trace_id
        history: list[int] = []
        for k, (question, answer, edited) in enumerate(turns):
            prompt = [*history, *user_turn(tok, question)]
            sampled = [*enc(tok, answer), IM_END]
            attrs = {
                "prompt_token_ids": prompt,
                "response_token_ids": sampled,
                "gen_ai.request.model": "qwen2.5",
                "gen_ai.response.id": f"chatcmpl-{run.trace_id:x}-{k}",
                "gen_ai.completion.0.content": answer,
                "logprobs.content": json.dumps(
                    [{"token": "", "logprob": -0.01 * (i + 1)} for i in range(len(sampled))]
                ),
            }
            with tracer.start_as_current_span("openai.chat.completion", attributes=attrs) as llm:
                span_id = llm.get_span_context().span_id
            final = answer
            if edit and edited is not None:
                with tracer.start_as_current_span("agent.step") as step:
                    ev = {"tokenfix.edit.text": edited, "tokenfix.edit.source": "test"}
                    if target == "span":
                        ev["tokenfix.edit.target.span_id"] = format(span_id, "016x")
                    elif target == "response":
                        ev["tokenfix.edit.target.response_id"] = attrs["gen_ai.response.id"]
                    step.add_event("text.edited", ev)
                final = edited
            reward = rewards[k] if k < len(rewards) else None
            if reward_format is not None and reward is not None:
                rname, rattrs = reward_attributes(reward_format, reward)
                with tracer.start_as_current_span(rname, attributes=rattrs):
                    pass
            run.prompts.append(prompt)
            run.sampled.append(sampled)
            run.final_texts.append(final)
            run.edited.append(final != answer)
            run.rewards.append(reward if reward_format is not None else None)
            run.span_ids.append(span_id)
            history = [*prompt, *enc(tok, final), IM_END, *enc(tok, "\n")]
    return run


def recorded_spans(tok, n_runs: int = 1, resource: dict | None = None, **kw):
    """Run the agent ``n_runs`` times on a provider with an in-memory exporter; (spans, runs)."""
    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {}))
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("test")
    runs = [run_agent(tracer, tok, **kw) for _ in range(n_runs)]
    provider.shutdown()
    return list(mem.get_finished_spans()), runs
