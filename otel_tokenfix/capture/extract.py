"""Read token ids, logprobs, text and tool calls out of OpenAI-compatible responses and stream chunks.

Why pure and duck-typed: the ``openai`` client returns pydantic models whose vLLM-only fields
(``prompt_token_ids``, ``choices[i].token_ids``) are *extra* attributes, tests and other clients use
plain dicts, and both must be read the same way. Nothing here touches OpenTelemetry or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CHAT = "chat"
TEXT_COMPLETION = "text_completion"


def get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise (pydantic extras included)."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    value = getattr(obj, name, default)
    if value is default:
        extra = getattr(obj, "model_extra", None)
        if isinstance(extra, Mapping):
            return extra.get(name, default)
    return value


def int_ids(value: Any) -> list[int] | None:
    """A list of ints (a vLLM id list), or ``None`` for anything else."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        return None
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return None
    return list(value)


def _floats(values: Any) -> list[float] | None:
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        return None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        out.append(float(v))
    return out


def logprob_values(logprobs: Any, operation: str) -> list[float] | None:
    """Per-token logprobs: chat ``{content: [{logprob}]}``, completions ``{token_logprobs: [...]}``."""
    if logprobs is None:
        return None
    if operation == TEXT_COMPLETION or get(logprobs, "token_logprobs") is not None:
        return _floats(get(logprobs, "token_logprobs"))
    content = get(logprobs, "content")
    if content is None:
        return None
    return _floats([get(entry, "logprob") for entry in content])


@dataclass
class ToolCallData:
    id: str | None = None
    name: str = ""
    arguments: str = ""
    type: str = "function"


@dataclass
class ChoiceData:
    """One choice as the agent saw it."""

    index: int
    text: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCallData] = field(default_factory=list)
    prompt_token_ids: list[int] | None = None  # completions API: vLLM puts prompt ids per choice
    reasoning: str | None = None  # vLLM's reasoning parser moved <think>...</think> here

    @property
    def parsed(self) -> bool:
        """The server parsed part of the sampled text out of ``text`` (tool calls, reasoning), so ``text``
        is not what the ids decode to."""
        return bool(self.tool_calls) or bool(self.reasoning)


@dataclass
class ResponseData:
    """A whole response (or a collected stream)."""

    operation: str
    id: str | None = None
    model: str | None = None
    prompt_token_ids: list[int] | None = None
    choices: list[ChoiceData] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None

    def prompt_ids_for(self, choice: ChoiceData) -> list[int] | None:
        return self.prompt_token_ids if self.prompt_token_ids is not None else choice.prompt_token_ids


def _tool_calls(message: Any) -> list[ToolCallData]:
    out = []
    for call in get(message, "tool_calls") or []:
        fn = get(call, "function")
        out.append(
            ToolCallData(
                id=get(call, "id"),
                name=get(fn, "name") or "",
                arguments=get(fn, "arguments") or "",
                type=get(call, "type") or "function",
            )
        )
    return out


def _reasoning(obj: Any) -> str | None:
    """``reasoning_content`` (vLLM, DeepSeek) or ``reasoning`` (newer vLLM)."""
    for name in ("reasoning_content", "reasoning"):
        value = get(obj, name)
        if isinstance(value, str) and value:
            return value
    return None


def _usage(data: ResponseData, usage: Any) -> None:
    if usage is None:
        return
    prompt, completion = get(usage, "prompt_tokens"), get(usage, "completion_tokens")
    if isinstance(prompt, int):
        data.input_tokens = prompt
    if isinstance(completion, int):
        data.output_tokens = completion


def from_response(response: Any, operation: str) -> ResponseData:
    """A non-streamed chat completion or completion (pydantic model or dict)."""
    data = ResponseData(operation, id=get(response, "id"), model=get(response, "model"))
    data.prompt_token_ids = int_ids(get(response, "prompt_token_ids"))
    for pos, choice in enumerate(get(response, "choices") or []):
        index = get(choice, "index")
        item = ChoiceData(index=index if isinstance(index, int) else pos)
        if operation == CHAT:
            message = get(choice, "message")
            content = get(message, "content")
            item.text = content if isinstance(content, str) else None
            item.tool_calls = _tool_calls(message)
            item.reasoning = _reasoning(message)
        else:
            text = get(choice, "text")
            item.text = text if isinstance(text, str) else None
            item.prompt_token_ids = int_ids(get(choice, "prompt_token_ids"))
        item.token_ids = int_ids(get(choice, "token_ids"))
        item.logprobs = logprob_values(get(choice, "logprobs"), operation)
        reason = get(choice, "finish_reason")
        item.finish_reason = reason if isinstance(reason, str) else None
        data.choices.append(item)
    _usage(data, get(response, "usage"))
    return data


class _ChoiceAcc:
    """Per-choice accumulator for a stream."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.ids: list[int] = []
        self.saw_ids = False
        self.logprobs: list[float] = []
        self.logprobs_ok = True
        self.saw_logprobs = False
        self.finish_reason: str | None = None
        self.tools: dict[int, ToolCallData] = {}
        self.prompt_ids: list[int] | None = None

    def result(self, server_sends_ids: bool = False) -> ChoiceData:
        """``server_sends_ids``: prompt ids arrived, so a choice without id chunks has an empty id list."""
        has_ids = self.saw_ids or server_sends_ids or self.prompt_ids is not None
        return ChoiceData(
            index=self.index,
            text="".join(self.text) if self.text or not self.tools else None,
            token_ids=list(self.ids) if has_ids else None,
            logprobs=list(self.logprobs) if self.saw_logprobs and self.logprobs_ok else None,
            finish_reason=self.finish_reason,
            tool_calls=[self.tools[k] for k in sorted(self.tools)],
            prompt_token_ids=self.prompt_ids,
            reasoning="".join(self.reasoning) or None,
        )


class StreamCollector:
    """Folds stream chunks into a :class:`ResponseData`, exactly as the chunks told the agent.

    vLLM with ``return_token_ids`` sends ``prompt_token_ids`` on the first chunk and the ids of each
    delta in ``choices[i].token_ids``; text is the concatenation of the deltas the agent received.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.data = ResponseData(operation)
        self._choices: dict[int, _ChoiceAcc] = {}
        self.chunks = 0

    def feed(self, chunk: Any) -> None:
        self.chunks += 1
        data = self.data
        if data.id is None:
            data.id = get(chunk, "id")
        if data.model is None:
            data.model = get(chunk, "model")
        if data.prompt_token_ids is None:
            data.prompt_token_ids = int_ids(get(chunk, "prompt_token_ids"))
        _usage(data, get(chunk, "usage"))
        for choice in get(chunk, "choices") or []:
            index = get(choice, "index")
            index = index if isinstance(index, int) else 0
            acc = self._choices.get(index)
            if acc is None:
                acc = self._choices[index] = _ChoiceAcc(index)
            self._feed_choice(acc, choice)

    def _feed_choice(self, acc: _ChoiceAcc, choice: Any) -> None:
        if self.operation == CHAT:
            delta = get(choice, "delta")
            content = get(delta, "content")
            if isinstance(content, str) and content:
                acc.text.append(content)
            reasoning = _reasoning(delta)
            if reasoning:
                acc.reasoning.append(reasoning)
            for call in get(delta, "tool_calls") or []:
                self._feed_tool(acc, call)
        else:
            text = get(choice, "text")
            if isinstance(text, str) and text:
                acc.text.append(text)
            if acc.prompt_ids is None:
                acc.prompt_ids = int_ids(get(choice, "prompt_token_ids"))
        ids = int_ids(get(choice, "token_ids"))
        if ids is not None:
            acc.saw_ids = True
            acc.ids.extend(ids)
        raw = get(choice, "logprobs")
        if raw is not None:
            values = logprob_values(raw, self.operation)
            acc.saw_logprobs = True
            if values is None:
                acc.logprobs_ok = False
            else:
                acc.logprobs.extend(values)
        reason = get(choice, "finish_reason")
        if isinstance(reason, str):
            acc.finish_reason = reason

    @staticmethod
    def _feed_tool(acc: _ChoiceAcc, call: Any) -> None:
        index = get(call, "index")
        index = index if isinstance(index, int) else len(acc.tools)
        tool = acc.tools.get(index)
        if tool is None:
            tool = acc.tools[index] = ToolCallData()
        if get(call, "id"):
            tool.id = get(call, "id")
        if get(call, "type"):
            tool.type = get(call, "type")
        fn = get(call, "function")
        name, args = get(fn, "name"), get(fn, "arguments")
        if isinstance(name, str):
            tool.name += name
        if isinstance(args, str):
            tool.arguments += args

    @property
    def finished(self) -> bool:
        """Every choice seen so far got a finish reason (the stream was read to its end)."""
        return bool(self._choices) and all(c.finish_reason for c in self._choices.values())

    def result(self) -> ResponseData:
        sends_ids = self.data.prompt_token_ids is not None
        self.data.choices = [self._choices[k].result(sends_ids) for k in sorted(self._choices)]
        return self.data
