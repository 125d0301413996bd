"""Span attributes for a captured call: OTel GenAI conventions plus the ``tokenfix.*`` keys correction reads.

Why pure: which key holds what is the contract with ``trace/conventions.py`` (prompt/response ids,
logprobs, the response text under ``gen_ai.completion.0.content``); keeping it in plain functions makes
that contract testable without a tracer. Message content (prompts, tool arguments, output messages) is
only added when the user opts in, as the GenAI conventions require; the response *text* is recorded by
default because correction diffs edits against exactly that text (``record_text=False`` turns it off;
correction then decodes the ids instead).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otel_tokenfix.trace import conventions as conv

from .extract import CHAT, ChoiceData, ResponseData, get

# GenAI semantic conventions (defined here: the Python constants upstream are marked deprecated).
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
CHOICE_COUNT = "gen_ai.request.choice.count"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
COMPLETION_TEXT = "gen_ai.completion.0.content"  # the first key conventions.read_text looks at
TOOL_CALL_PREFIX = "gen_ai.completion.0.tool_calls"

# Our capture keys.
CAPTURE_STATUS = "tokenfix.capture.status"
CAPTURE_REASON = "tokenfix.capture.reason"
CHOICE_INDEX = "tokenfix.choice.index"
#: The message content when the server parsed tool calls or reasoning out of the sampled text (it is not
#: what the ids decode to, so it does not go under a text key correction reads), and that reasoning.
PARSED_CONTENT = "tokenfix.capture.content"
PARSED_REASONING = "tokenfix.capture.reasoning"
PROMPT_IDS = conv.PROMPT_IDS
RESPONSE_IDS = conv.RESPONSE_IDS
#: Sampled logprobs, as a compact JSON string ``[{"logprob": x}, ...]``: the key (and shape, a subset of
#: OpenAI's ``logprobs.content``) that conventions.read_logprobs and agent-lightning read. The corrected
#: copy of a span carries the corrected ones under ``tokenfix.response.logprobs``.
LOGPROBS_CONTENT = "logprobs.content"

#: ``tokenfix.capture.status`` values.
STATUS_OK = "ok"
STATUS_NO_IDS = "no_token_ids"
STATUS_INCOMPLETE = "incomplete"
STATUS_ERROR = "error"
STATUS_UNSUPPORTED = "unsupported_response"

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def content_enabled(explicit: bool | None) -> bool:
    """The opt-in for message content: the parameter, else the standard environment variable."""
    if explicit is not None:
        return explicit
    return os.environ.get(CONTENT_ENV, "").strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class AttributeOptions:
    capture_content: bool = False
    record_text: bool = True
    provider_name: str = "openai"
    #: also write agent-lightning v0.x keys ``prompt_token_ids`` / ``response_token_ids``
    agentlightning_keys: bool = False


def _given(value: Any) -> bool:
    return value is not None and type(value).__name__ not in ("Omit", "NotGiven")


def span_name(operation: str, model: Any) -> str:
    return f"{operation} {model}" if isinstance(model, str) and model else operation


def request_attributes(
    operation: str, kwargs: Mapping[str, Any], opts: AttributeOptions, server: tuple[str | None, int | None]
) -> dict[str, Any]:
    """Attributes known before the call (so they are there even when it fails)."""
    attrs: dict[str, Any] = {OPERATION: operation, PROVIDER: opts.provider_name}
    model = kwargs.get("model")
    if isinstance(model, str):
        attrs[REQUEST_MODEL] = model
    for name, key in _REQUEST_PARAMS.items():
        value = kwargs.get(name)
        if _given(value) and isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs[key] = value
    n = kwargs.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attrs[CHOICE_COUNT] = n
    stop = kwargs.get("stop")
    if isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        attrs["gen_ai.request.stop_sequences"] = tuple(stop)
    host, port = server
    if host:
        attrs[SERVER_ADDRESS] = host
    if port:
        attrs[SERVER_PORT] = port
    if opts.capture_content:
        messages = _input_messages(operation, kwargs)
        if messages is not None:
            attrs[INPUT_MESSAGES] = json.dumps(messages, ensure_ascii=False, default=str)
    return attrs


def _input_messages(operation: str, kwargs: Mapping[str, Any]) -> list[dict] | None:
    if operation != CHAT:
        prompt = kwargs.get("prompt")
        if isinstance(prompt, str):
            return [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        return None
    out = []
    for message in kwargs.get("messages") or []:
        parts: list[dict] = []
        content = get(message, "content")
        if isinstance(content, str):
            parts.append({"type": "text", "content": content})
        elif isinstance(content, list):
            for part in content:
                if get(part, "type") == "text":
                    parts.append({"type": "text", "content": get(part, "text")})
        for call in get(message, "tool_calls") or []:
            fn = get(call, "function")
            parts.append(
                {"type": "tool_call", "id": get(call, "id"), "name": get(fn, "name"), "arguments": get(fn, "arguments")}
            )
        role = get(message, "role") or "user"
        if role == "tool":
            parts = [
                {
                    "type": "tool_call_response",
                    "id": get(message, "tool_call_id"),
                    "response": content if isinstance(content, str) else None,
                }
            ]
        out.append({"role": role, "parts": parts})
    return out


def _output_message(choice: ChoiceData) -> dict:
    parts: list[dict] = []
    if choice.text:
        parts.append({"type": "text", "content": choice.text})
    for call in choice.tool_calls:
        parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments})
    out: dict[str, Any] = {"role": "assistant", "parts": parts}
    if choice.finish_reason:
        out["finish_reason"] = choice.finish_reason
    return out


NOT_REQUESTED = "token ids were not requested (request_token_ids=False, or a hosted OpenAI endpoint)"


def capture_status(
    data: ResponseData, choice: ChoiceData, *, complete: bool = True, requested: bool = True
) -> tuple[str, str | None]:
    """``tokenfix.capture.status`` and a reason, so correction can say *why* a span has no ids."""
    if choice.token_ids is None and not requested:
        return STATUS_NO_IDS, NOT_REQUESTED
    if choice.token_ids is None:
        return STATUS_NO_IDS, "the server returned no choices[].token_ids (does it support return_token_ids?)"
    if data.prompt_ids_for(choice) is None:
        return STATUS_NO_IDS, "the server returned no prompt_token_ids"
    if not complete:
        return STATUS_INCOMPLETE, "the stream was closed before it finished; ids cover what the agent received"
    if choice.logprobs is not None and len(choice.logprobs) != len(choice.token_ids):
        return STATUS_OK, f"logprobs dropped: {len(choice.logprobs)} logprobs for {len(choice.token_ids)} ids"
    return STATUS_OK, None


def response_attributes(
    data: ResponseData,
    choice: ChoiceData,
    opts: AttributeOptions,
    *,
    complete: bool = True,
    n_choices: int = 1,
    requested: bool = True,
) -> dict[str, Any]:
    """Attributes of one choice's span (choice 0 goes on the call span, others on child spans)."""
    attrs: dict[str, Any] = {}
    if data.id:
        attrs[RESPONSE_ID] = choice_response_id(data.id, choice.index)
    if data.model:
        attrs[RESPONSE_MODEL] = data.model
    if n_choices > 1:
        attrs[CHOICE_INDEX] = choice.index
    if choice.finish_reason:
        attrs[FINISH_REASONS] = (choice.finish_reason,)
    if data.input_tokens is not None:
        attrs[INPUT_TOKENS] = data.input_tokens
    if data.output_tokens is not None:
        out = data.output_tokens if n_choices == 1 else (len(choice.token_ids) if choice.token_ids else None)
        if out is not None:
            attrs[OUTPUT_TOKENS] = out
    elif choice.token_ids is not None:
        attrs[OUTPUT_TOKENS] = len(choice.token_ids)
    prompt_ids = data.prompt_ids_for(choice)
    if prompt_ids is not None:
        attrs[PROMPT_IDS] = tuple(prompt_ids)
    if choice.token_ids is not None:
        attrs[RESPONSE_IDS] = tuple(choice.token_ids)
        lps = choice.logprobs
        if lps is not None and len(lps) == len(choice.token_ids) and all(math.isfinite(x) for x in lps):
            attrs[LOGPROBS_CONTENT] = logprobs_json(choice.logprobs)
        if opts.agentlightning_keys and prompt_ids is not None:
            attrs["prompt_token_ids"] = tuple(prompt_ids)
            attrs["response_token_ids"] = tuple(choice.token_ids)
    # The text the agent saw. When the server parsed tool calls or reasoning out of the sampled text, the
    # content is not what the ids decode to, so it stays off the text keys: correction decodes the ids.
    if opts.record_text and choice.text is not None:
        attrs[PARSED_CONTENT if choice.parsed else COMPLETION_TEXT] = choice.text
    if opts.record_text and choice.reasoning:
        attrs[PARSED_REASONING] = choice.reasoning
    for j, call in enumerate(choice.tool_calls):
        attrs[f"{TOOL_CALL_PREFIX}.{j}.name"] = call.name
        if call.id:
            attrs[f"{TOOL_CALL_PREFIX}.{j}.id"] = call.id
        if opts.capture_content:
            attrs[f"{TOOL_CALL_PREFIX}.{j}.arguments"] = call.arguments
    if opts.capture_content and not choice.parsed:
        # With tool calls or reasoning, conventions.read_text would take the text parts for the response
        # text, which is not what the ids decode to; they are recorded above instead.
        attrs[OUTPUT_MESSAGES] = json.dumps([_output_message(choice)], ensure_ascii=False)
    status, reason = capture_status(data, choice, complete=complete, requested=requested)
    attrs[CAPTURE_STATUS] = status
    if reason:
        attrs[CAPTURE_REASON] = reason
    return attrs


def logprobs_json(values: list[float]) -> str:
    return "[" + ",".join('{"logprob":' + repr(float(v)) + "}" for v in values) + "]"


def choice_response_id(response_id: str, index: int) -> str:
    """The ``gen_ai.response.id`` recorded for choice ``index`` (choice 0 keeps the API's id).

    Choices of one response share an id; distinct ids keep an edit's ``target.response_id`` unambiguous
    and keep id-deduplicating consumers (agent-lightning) from dropping choices.
    """
    return response_id if index == 0 else f"{response_id}#{index}"
