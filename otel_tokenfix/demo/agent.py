"""The demo's RAG agent: think -> search -> think -> answer, with the official ``openai`` client.

Why it looks like a user's agent: it is traced with plain OpenTelemetry (a root span per rollout, a span
per step, the LLM spans from ``instrument_openai``), and it edits model output exactly where real agents
do, after the LLM call has ended, recording each edit with ``record_edit`` and the outcome with
``record_reward``. Nothing here knows about correction: that happens in the span processor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from .. import record_edit, record_reward
from . import edits
from .script import GOLD_FACTS, HEDGE, MODEL, QUESTION, SYSTEM_PROMPT
from .tools import search


@dataclass
class CallLog:
    """What the agent saw from one LLM call and what it did to it (the demo's report reads this)."""

    step: str
    response_id: str
    prompt_ids: list[int]
    original_ids: list[int]
    original_text: str
    logprobs: list[float] | None
    edits: list[tuple[str, str]] = field(default_factory=list)  # (edit kind, full text after it)

    @property
    def final_text(self) -> str:
        return self.edits[-1][1] if self.edits else self.original_text


@dataclass
class AgentResult:
    answer: str
    reward: float
    calls: list[CallLog]
    trace_id: str


def _extra(obj: Any, name: str) -> Any:
    """A vLLM extension field on an openai pydantic object (kept in ``model_extra``)."""
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


class RagAgent:
    """A two-step agent. ``client`` is an ``openai.OpenAI`` pointed at the server."""

    def __init__(self, client: Any, tracer_provider: Any, *, model: str = MODEL) -> None:
        self.client = client
        self.model = model
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer("otel_tokenfix.demo", tracer_provider=tracer_provider)

    def _chat(self, step: str, messages: list[dict[str, str]]) -> CallLog:
        # no extra_body here: instrument_openai asks the server for token ids and logprobs
        resp = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0.7)
        choice = resp.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        return CallLog(
            step=step,
            response_id=resp.id,
            prompt_ids=list(_extra(resp, "prompt_token_ids") or []),
            original_ids=list(_extra(choice, "token_ids") or []),
            original_text=choice.message.content or "",
            logprobs=[c.logprob for c in content] if content else None,
        )

    def _edit(self, call: CallLog, kind: str, new_text: str) -> str:
        """Apply one edit if it changes the text, and record it against the call's response id."""
        if new_text != call.final_text:
            call.edits.append((kind, new_text))
            record_edit(new_text, target=call.response_id, source=kind)
        return call.final_text

    def run(self, question: str = QUESTION) -> AgentResult:
        calls: list[CallLog] = []
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        with self.tracer.start_as_current_span("rag_agent.run") as root:
            root.set_attribute("agent.question", question)
            # step 1: think, then call the search tool
            with self.tracer.start_as_current_span("agent.step", attributes={"agent.step": "search"}):
                call = self._chat("search", messages)
                calls.append(call)
                # a tool turn keeps its reasoning in the history; only the broken JSON is repaired
                self._edit(call, "repair tool JSON", edits.repair_tool_json(call.final_text))
                tool = edits.parse_tool_call(call.final_text) or {}
                query = str((tool.get("arguments") or {}).get("query", question))
            with self.tracer.start_as_current_span("tool.search", attributes={"tool.query": query}):
                hits = search(query)
            messages.append({"role": "assistant", "content": call.final_text})
            observation = "\n".join(f"[{doc_id}] {text}" for doc_id, text in hits)
            messages.append({"role": "tool", "content": json.dumps({"results": observation}, ensure_ascii=False)})
            # step 2: think, then answer
            with self.tracer.start_as_current_span("agent.step", attributes={"agent.step": "answer"}):
                call = self._chat("answer", messages)
                calls.append(call)
                # the final answer is cleaned up before the user sees it
                self._edit(call, "strip <think>", edits.strip_think(call.final_text))
                self._edit(call, "delete hedge", edits.delete_phrase(call.final_text, HEDGE))
                self._edit(call, "reorder sentences", edits.reorder_sentences(call.final_text, GOLD_FACTS[0]))
            answer = call.final_text
            reward = float(all(fact in answer for fact in GOLD_FACTS))
            with self.tracer.start_as_current_span("agent.reward"):
                # the demo does not set a global provider (tests run it more than once), so it names its own
                record_reward(reward, tracer_provider=self.tracer_provider)
            trace_id = format(root.get_span_context().trace_id, "032x")
        return AgentResult(answer=answer, reward=reward, calls=calls, trace_id=trace_id)
