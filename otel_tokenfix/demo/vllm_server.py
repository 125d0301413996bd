"""A vLLM-like OpenAI-compatible server on 127.0.0.1 with scripted answers, for tests and the demo.

Why: correction is only worth something against what a real vLLM returns with ``return_token_ids`` and
``logprobs`` (top-level ``prompt_token_ids``, ``choices[i].token_ids``, per-token logprobs, a real chat
template, non-canonically sampled tokens). No weights are available offline, so the *answers* are
scripted, but everything around them (tokenization, template, JSON and SSE shapes, ``n``, streaming,
tool calls, errors, servers that ignore ``return_token_ids``) behaves like vLLM >= 0.10.2.

Usage::

    with VLLMLikeServer([Reply("Paris is the capital.", split=0.1)]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        client.chat.completions.create(model=server.model, messages=[...],
                                       extra_body={"return_token_ids": True}, logprobs=True)

Script: a list (queue) of replies consumed one per choice, or a callable ``(request_body, choice_index)
-> Reply | str``; without a script the server echoes the last user message. An exhausted queue answers
HTTP 500 so a test notices. Note the ``openai`` client retries 5xx/429 by default: use ``max_retries=0``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Union

from ..engine.table import bytes_to_unicode

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"

#: Request fields an OpenAI-strict server rejects (``strict=True`` mode answers 400 on them).
VLLM_ONLY_FIELDS = ("return_token_ids", "skip_special_tokens", "include_stop_str_in_output")


# --------------------------------------------------------------------------------------------- script


@dataclass(frozen=True)
class ToolCall:
    """A scripted function call; ``arguments`` is a dict (rendered as JSON) or a raw JSON string."""

    name: str
    arguments: Union[dict, str] = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class Reply:
    """One scripted answer (one choice).

    ``split``: a fraction of tokens to sample non-canonically (each such token is replaced by two valid
    sub-tokens that decode to the same text, as real models sometimes sample), or explicit token indices.
    ``error``: ``(http_status, message)`` -> the whole request fails. ``stream_error_after``: in a stream,
    send an error event after that many tokens.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    split: Union[float, Sequence[int]] = 0.0
    finish_reason: str | None = None
    error: tuple[int, str] | None = None
    stream_error_after: int | None = None


ScriptFn = Callable[[dict, int], Union[Reply, str]]
Script = Union[ScriptFn, Iterable[Union[Reply, str]], None]


class ScriptExhausted(RuntimeError):
    """The scripted queue had no reply left for a choice."""


class _Script:
    """Thread-safe view over a callable or a queue of replies."""

    def __init__(self, script: Script) -> None:
        self._fn: ScriptFn | None = script if callable(script) else None
        self._queue: deque[Reply | str] = deque() if callable(script) or script is None else deque(script)
        self._echo = script is None
        self._lock = threading.Lock()

    def push(self, *replies: Reply | str) -> None:
        with self._lock:
            self._echo = False
            self._queue.extend(replies)

    def next(self, body: dict, index: int) -> Reply:
        if self._fn is not None:
            got = self._fn(body, index)
        else:
            with self._lock:
                if self._queue:
                    got = self._queue.popleft()
                elif self._echo:
                    got = Reply("You said: " + _last_user_text(body))
                else:
                    raise ScriptExhausted("the scripted reply queue is empty")
        return Reply(got) if isinstance(got, str) else got


def _last_user_text(body: dict) -> str:
    if "prompt" in body:
        prompt = body["prompt"]
        return prompt if isinstance(prompt, str) else str(prompt)
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


# ------------------------------------------------------------------------------------ tokens (pure)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: byte-level BPE token strings -> raw bytes."""
    return {c: b for b, c in bytes_to_unicode().items()}


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenTable:
    """Per-tokenizer facts the server needs: vocabulary, special ids, raw bytes of a token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tok = tokenizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.special: frozenset[int] = frozenset(tokenizer.all_special_ids)
        self.added: frozenset[int] = frozenset(tokenizer.added_tokens_decoder)
        decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
        self.byte_level = "ByteLevel" in json.dumps(decoder)
        eos = tokenizer.eos_token_id
        self.eos_id: int | None = eos if isinstance(eos, int) else None

    def piece(self, token_id: int) -> str:
        return self.tok.convert_ids_to_tokens(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self.piece(token_id)
        if token_id in self.added:
            return piece.encode("utf-8")
        if self.byte_level:
            table = _byte_decoder()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
        m = _BYTE_FALLBACK.fullmatch(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def token_text(self, token_id: int) -> str:
        return self.tok.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False)) if text else []

    def split_token(self, token_id: int) -> tuple[int, int] | None:
        """Two valid sub-tokens whose concatenation is this token, or None (special or single char)."""
        if token_id in self.added:
            return None
        piece = self.piece(token_id)
        for k in range(len(piece) - 1, 0, -1):
            a, b = self.vocab.get(piece[:k]), self.vocab.get(piece[k:])
            if a is not None and b is not None and a not in self.added and b not in self.added:
                return a, b
        return None


@lru_cache(maxsize=8)
def _table_for(tokenizer_id: int, tokenizer: Any) -> TokenTable:  # noqa: ARG001 - id keys the cache
    return TokenTable(tokenizer)


def token_table(tokenizer: PreTrainedTokenizerBase) -> TokenTable:
    return _table_for(id(tokenizer), tokenizer)


def render_tool_calls(tool_calls: Sequence[ToolCall]) -> str:
    """Hermes/Qwen2.5 style: what the model samples for a tool call (vLLM's hermes parser reads it)."""
    out = []
    for call in tool_calls:
        payload = '{"name": ' + json.dumps(call.name) + ', "arguments": ' + call.arguments_json + "}"
        out.append("<tool_call>\n" + payload + "\n</tool_call>")
    return "\n".join(out)


@dataclass
class Generation:
    """One choice as the 'model' sampled it."""

    token_ids: list[int]
    logprobs: list[float]
    content_tokens: int  # leading tokens that are message content (the rest: tool calls / eos)
    finish_reason: str
    split_positions: list[int]


def generate(table: TokenTable, reply: Reply, *, seed: int, max_tokens: int | None = None) -> Generation:
    """Token ids + logprobs for a scripted reply (pure and deterministic for a seed)."""
    rng = random.Random(seed)
    text_ids = table.encode(reply.text)
    tool_text = render_tool_calls(reply.tool_calls)
    if tool_text and reply.text:
        tool_text = "\n\n" + tool_text
    tool_ids = table.encode(tool_text)
    base = text_ids + tool_ids
    if isinstance(reply.split, (int, float)) and not isinstance(reply.split, bool):
        chosen = {i for i in range(len(base)) if rng.random() < float(reply.split)}
    else:
        chosen = set(reply.split)
    ids: list[int] = []
    logprobs: list[float] = []
    splits: list[int] = []
    content_tokens = 0
    for i, token in enumerate(base):
        pieces = table.split_token(token) if i in chosen else None
        if pieces is not None:
            splits.append(len(ids))
            ids.extend(pieces)
            logprobs.extend([-round(rng.uniform(2.0, 6.0), 4), -round(rng.uniform(0.0, 0.5), 4)])
        else:
            ids.append(token)
            logprobs.append(-round(abs(rng.gauss(0.0, 0.35)), 4))
        if i == len(text_ids) - 1:
            content_tokens = len(ids)
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    if table.eos_id is not None and finish in ("stop", "tool_calls"):
        ids.append(table.eos_id)
        logprobs.append(-round(abs(rng.gauss(0.0, 0.05)), 4))
    if max_tokens is not None and len(ids) > max_tokens:
        ids, logprobs, finish = ids[:max_tokens], logprobs[:max_tokens], "length"
        content_tokens = min(content_tokens, max_tokens)
    return Generation(ids, logprobs, content_tokens, finish, splits)


# ------------------------------------------------------------------------------- request shaping


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def template_messages(messages: Sequence[dict]) -> list[dict]:
    """Normalise OpenAI messages for a plain ChatML template (tool calls/results rendered as Qwen does)."""
    out = []
    for m in messages:
        role = m.get("role", "user")
        text = _content_text(m.get("content"))
        if role == "assistant" and m.get("tool_calls"):
            calls = [
                ToolCall(c["function"]["name"], c["function"].get("arguments") or "{}")
                for c in m["tool_calls"]
                if isinstance(c, dict) and "function" in c
            ]
            rendered = render_tool_calls(calls)
            text = text + ("\n\n" if text else "") + rendered
        elif role == "tool":
            role, text = "user", "<tool_response>\n" + text + "\n</tool_response>"
        elif role == "developer":
            role = "system"
        out.append({"role": role, "content": text})
    return out


def prompt_ids_for_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict]) -> list[int]:
    rendered = tokenizer.apply_chat_template(template_messages(messages), tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(rendered, add_special_tokens=False))


def prompt_ids_for_completion(tokenizer: PreTrainedTokenizerBase, prompt: Any) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return list(prompt)
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return list(tokenizer.encode(str(prompt), add_special_tokens=True))


def _max_tokens(body: dict) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return int(value) if isinstance(value, int) and value > 0 else None


def _logprob_entry(table: TokenTable, token: int, logprob: float, top: int) -> dict:
    text = table.token_text(token)
    entry: dict[str, Any] = {"token": text, "logprob": logprob, "bytes": list(table.token_bytes(token))}
    entry["top_logprobs"] = [{"token": text, "logprob": logprob, "bytes": entry["bytes"]}][:top]
    return entry


# ---------------------------------------------------------------------------------------- the app


def split_reasoning(text: str) -> tuple[str | None, str]:
    """What vLLM's reasoning parser (``--reasoning-parser qwen3``/``deepseek_r1``) returns: the text up to
    ``</think>`` as ``reasoning_content`` (without ``<think>``), the rest as ``content``."""
    end = text.find("</think>")
    if end >= 0:
        return text[:end].removeprefix("<think>"), text[end + len("</think>") :]
    if text.startswith("<think>"):
        return text[len("<think>") :], ""
    return None, text


class _State:
    def __init__(
        self, script: Script, tokenizer: Any, model: str, token_ids: bool, strict: bool, seed: int, reasoning: bool
    ) -> None:
        self.reasoning_parser = reasoning
        self.script = _Script(script)
        self._tokenizer = tokenizer
        self.model = model
        self.token_ids = token_ids
        self.strict = strict
        self.seed = seed
        self.requests: list[dict] = []
        self.generations: list[Generation] = []
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            from otel_tokenfix.tokenizers.builtin import qwen_tokenizer

            self._tokenizer = qwen_tokenizer()
        return self._tokenizer

    def next_seed(self) -> int:
        with self._lock:
            self._counter += 1
            return self.seed * 1_000_003 + self._counter


def _error(status: int, message: str, kind: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    kind = kind or ("BadRequestError" if status < 500 else "InternalServerError")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status)


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


class _Call:
    """One request's choices, generated up front (pure), then rendered as JSON or SSE."""

    def __init__(self, state: _State, body: dict, chat: bool) -> None:
        self.state, self.body, self.chat = state, body, chat
        self.table = token_table(state.tokenizer)
        self.want_ids = state.token_ids and bool(body.get("return_token_ids"))
        lp = body.get("logprobs")
        self.want_logprobs = bool(lp) if chat else (lp is not None and lp is not False)
        self.top = int(body.get("top_logprobs") or 0) if chat else int(lp or 0) if isinstance(lp, int) else 0
        self.n = max(1, int(body.get("n") or 1))
        if chat:
            self.prompt_ids = prompt_ids_for_chat(state.tokenizer, body.get("messages") or [])
        else:
            self.prompt_ids = prompt_ids_for_completion(state.tokenizer, body.get("prompt", ""))
        self.replies = [state.script.next(body, i) for i in range(self.n)]
        limit = _max_tokens(body)
        self.gens = [generate(self.table, r, seed=state.next_seed(), max_tokens=limit) for r in self.replies]
        state.generations.extend(self.gens)
        prefix = "chatcmpl-" if chat else "cmpl-"
        self.id = prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.failed = False

    @property
    def error(self) -> tuple[int, str] | None:
        return next((r.error for r in self.replies if r.error), None)

    def usage(self) -> dict:
        completion = sum(len(g.token_ids) for g in self.gens)
        prompt = len(self.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _tool_calls_json(self, reply: Reply, choice: int) -> list[dict]:
        return [
            {
                "id": f"chatcmpl-tool-{self.id[-8:]}{choice}{j}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json},
            }
            for j, c in enumerate(reply.tool_calls)
        ]

    def _content(self, reply: Reply, gen: Generation) -> str | None:
        if reply.tool_calls:
            text = self.table.decode(gen.token_ids[: gen.content_tokens])
            return text or None
        return self.table.decode(gen.token_ids)

    # ---- non-streaming
    def response(self) -> dict:
        choices = []
        for i, (reply, gen) in enumerate(zip(self.replies, self.gens, strict=False)):
            choice: dict[str, Any] = {"index": i, "finish_reason": gen.finish_reason, "stop_reason": None}
            entries = [
                _logprob_entry(self.table, t, lp, self.top) for t, lp in zip(gen.token_ids, gen.logprobs, strict=False)
            ]
            if self.chat:
                message: dict[str, Any] = {"role": "assistant", "content": self._content(reply, gen)}
                if self.state.reasoning_parser and message["content"] is not None:
                    reasoning, content = split_reasoning(message["content"])
                    message["reasoning_content"], message["content"] = reasoning, content
                message["tool_calls"] = self._tool_calls_json(reply, i) if reply.tool_calls else []
                choice["message"] = message
                choice["logprobs"] = {"content": entries} if self.want_logprobs else None
            else:
                choice["text"] = self.table.decode(gen.token_ids)
                choice["logprobs"] = self._legacy_logprobs(entries) if self.want_logprobs else None
                if self.state.token_ids:
                    choice["prompt_token_ids"] = self.prompt_ids if self.want_ids else None
            if self.state.token_ids:
                choice["token_ids"] = gen.token_ids if self.want_ids else None
            choices.append(choice)
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.state.model,
            "choices": choices,
            "usage": self.usage(),
        }
        if self.chat and self.state.token_ids:
            out["prompt_token_ids"] = self.prompt_ids if self.want_ids else None
        return out

    @staticmethod
    def _legacy_logprobs(entries: list[dict]) -> dict:
        offsets, pos = [], 0
        for e in entries:
            offsets.append(pos)
            pos += len(e["token"])
        return {
            "tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{e["token"]: e["logprob"]} for e in entries],
            "text_offset": offsets,
        }

    # ---- streaming
    def _chunk(self, choices: list[dict], **extra: Any) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.state.model,
            "choices": choices,
            **extra,
        }

    async def stream(self) -> AsyncIterator[bytes]:
        include_usage = bool((self.body.get("stream_options") or {}).get("include_usage"))
        first_extra: dict[str, Any] = {}
        if self.chat:
            if self.want_ids:
                first_extra["prompt_token_ids"] = self.prompt_ids
            roles = [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(self.n)
            ]
            yield _sse(self._chunk(roles, **first_extra))
        for i, (reply, gen) in enumerate(zip(self.replies, self.gens, strict=False)):
            async for chunk in self._stream_choice(i, reply, gen):
                yield chunk
            if self.failed:
                break  # like vLLM: the error event, then [DONE]
        if include_usage:
            yield _sse(self._chunk([], usage=self.usage()))
        yield _sse("[DONE]")

    async def _stream_choice(self, i: int, reply: Reply, gen: Generation) -> AsyncIterator[bytes]:
        emitted = ""
        parts = ("", "")  # reasoning, content emitted so far (reasoning-parser mode)
        last = len(gen.token_ids) - 1
        ends_with_eos = bool(gen.token_ids) and gen.token_ids[-1] == self.table.eos_id
        tools_at = last - 1 if ends_with_eos and last > 0 else last
        for k, (token, lp) in enumerate(zip(gen.token_ids, gen.logprobs, strict=False)):
            if reply.stream_error_after is not None and k >= reply.stream_error_after:
                self.failed = True
                yield _sse(
                    {"error": {"message": "scripted stream failure", "type": "InternalServerError", "code": 500}}
                )
                return
            in_content = k < gen.content_tokens or not reply.tool_calls
            text = ""
            if in_content:
                upto = (
                    gen.token_ids[: k + 1] if not reply.tool_calls else gen.token_ids[: min(k + 1, gen.content_tokens)]
                )
                decoded = self.table.decode(upto)
                if not decoded.endswith("\ufffd"):
                    text, emitted = decoded[len(emitted) :], decoded
            entry = _logprob_entry(self.table, token, lp, self.top)
            choice: dict[str, Any] = {"index": i, "finish_reason": None}
            if self.chat:
                delta: dict[str, Any] = {"content": text} if text else {}
                if self.state.reasoning_parser and text:
                    reasoning, content = split_reasoning(emitted)
                    now = (reasoning or "", content)
                    keys = ("reasoning_content", "content")
                    delta = {k: v[len(p) :] for k, v, p in zip(keys, now, parts, strict=True) if v[len(p) :]}
                    parts = now
                if reply.tool_calls and k == tools_at:
                    delta["tool_calls"] = [dict(c, index=j) for j, c in enumerate(self._tool_calls_json(reply, i))]
                choice["delta"] = delta
                choice["logprobs"] = {"content": [entry]} if self.want_logprobs else None
            else:
                choice["text"] = text
                choice["logprobs"] = self._legacy_logprobs([entry]) if self.want_logprobs else None
                if k == 0 and self.want_ids:
                    choice["prompt_token_ids"] = self.prompt_ids
            if self.want_ids:
                choice["token_ids"] = [token]
            if k == last:
                choice["finish_reason"] = gen.finish_reason
            yield _sse(self._chunk([choice]))
            await asyncio.sleep(0)
        if not gen.token_ids:
            done = {"index": i, "finish_reason": gen.finish_reason, "logprobs": None}
            done.update({"delta": {}} if self.chat else {"text": ""})
            yield _sse(self._chunk([done]))


def build_app(state: _State) -> Any:
    """The Starlette app: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def handle(request: Request, chat: bool) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not JSON")
        state.requests.append({"path": request.url.path, "body": body, "headers": dict(request.headers)})
        if state.strict:
            unknown = [k for k in VLLM_ONLY_FIELDS if k in body]
            if unknown:
                return _error(400, f"Unrecognized request argument supplied: {unknown[0]}", "invalid_request_error")
        if body.get("model") != state.model:
            return _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        try:
            call = _Call(state, body, chat)
        except ScriptExhausted as exc:
            return _error(500, str(exc))
        if call.error:
            return _error(*call.error)
        if body.get("stream"):
            return StreamingResponse(call.stream(), media_type="text/event-stream")
        return JSONResponse(call.response())

    async def chat(request: Request) -> Response:
        return await handle(request, chat=True)

    async def completions(request: Request) -> Response:
        return await handle(request, chat=False)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": state.model, "object": "model", "owned_by": "vllm"}]})

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


# ------------------------------------------------------------------------------- the thread runner


class VLLMLikeServer:
    """Runs the app with uvicorn in a background thread on a free 127.0.0.1 port (context manager).

    ``token_ids=False``: a server that ignores ``return_token_ids`` (like OpenAI or an older vLLM).
    ``strict=True``: a server that rejects vLLM-only request fields with HTTP 400.
    ``reasoning_parser=True``: like ``vllm serve --reasoning-parser``: ``<think>...</think>`` goes to
    ``reasoning_content``, the rest to ``content`` (so ``content`` is not what the ids decode to).
    ``requests`` records every received request body; ``generations`` every sampled choice.
    """

    def __init__(
        self,
        script: Script = None,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        model: str = DEFAULT_MODEL,
        token_ids: bool = True,
        strict: bool = False,
        reasoning_parser: bool = False,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.state = _State(script, tokenizer, model, token_ids, strict, seed, reasoning_parser)
        self.host, self._port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._bound_port: int | None = None

    @property
    def model(self) -> str:
        return self.state.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.state.tokenizer

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("server not started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI`` (ends in ``/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        return self.state.requests

    @property
    def generations(self) -> list[Generation]:
        return self.state.generations

    def push(self, *replies: Reply | str) -> None:
        """Queue more scripted replies (one per choice)."""
        self.state.script.push(*replies)

    def start(self, timeout: float = 20.0) -> VLLMLikeServer:
        import uvicorn

        _ = self.state.tokenizer  # load before serving so the first request is not slow
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._sock = sock
        self._bound_port = sock.getsockname()[1]
        config = uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="vllm-like-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the vLLM-like server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> VLLMLikeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use: python -m otel_tokenfix.demo.vllm_server
    """Serve echo replies until Ctrl-C (for trying a client by hand)."""
    with VLLMLikeServer() as server:
        print(f"vLLM-like server on {server.base_url} (model {server.model}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
