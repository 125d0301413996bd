"""``instrument_openai``: token ids, logprobs and the response text onto LLM spans of the ``openai`` client.

Why: correction needs the sampled ids on each LLM span, and most agents call a vLLM (or another
OpenAI-compatible) server through the official client while the common instrumentations record text
and counts only. One call wraps ``chat.completions.create``/``parse`` and ``completions.create`` (sync
and async):
globally on the classes (``client=None``) or on one client instance. Idempotent; ``uninstrument_openai``
restores. The wrapper never raises into user code; the user's API errors propagate unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .extract import CHAT, TEXT_COMPLETION
from .run import CallRun, CaptureOptions

_LOG = logging.getLogger("otel_tokenfix.capture")

#: (module, class, operation, async?) of every resource we wrap, and the methods wrapped on it.
_TARGETS: tuple[tuple[str, str, str, bool], ...] = (
    ("openai.resources.chat.completions", "Completions", CHAT, False),
    ("openai.resources.chat.completions", "AsyncCompletions", CHAT, True),
    ("openai.resources.completions", "Completions", TEXT_COMPLETION, False),
    ("openai.resources.completions", "AsyncCompletions", TEXT_COMPLETION, True),
)
#: ``create`` everywhere; chat's ``parse`` (structured outputs) posts on its own, so it is wrapped too.
#: (``chat.completions.stream()`` goes through ``create``.)
_METHODS: dict[str, tuple[str, ...]] = {CHAT: ("create", "parse"), TEXT_COMPLETION: ("create",)}

#: Set while a captured call runs: a nested wrapped call (instance over class patch, raw-response
#: wrappers) passes straight through, so one call gives one span.
_IN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_tokenfix_capture_in_call", default=False)

_MARK = "_otel_tokenfix_capture"


@dataclass
class _Holder:
    """Mutable options of one patch: re-instrumenting updates them; uninstrumenting deactivates."""

    opts: CaptureOptions
    operation: str
    active: bool = True


@dataclass
class _Registry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    classes: dict[tuple[type, str], tuple[Any, Callable[..., Any], _Holder]] = field(default_factory=dict)
    instances: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)


_REG = _Registry()


def _make_wrapper(call: Callable[..., Any], holder: _Holder, is_async: bool, bound_resource: Any = None) -> Any:
    """A wrapper for ``call``; for class patches ``call`` is the function (first arg: the resource)."""

    def _resource(args: tuple[Any, ...]) -> Any:
        return bound_resource if bound_resource is not None else (args[0] if args else None)

    if is_async:

        @functools.wraps(call)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            if not holder.active or _IN_CALL.get():
                return await call(*args, **kwargs)
            run = CallRun.start(holder.opts, holder.operation, kwargs, _resource(args))
            if run is None:
                return await call(*args, **kwargs)
            token = _IN_CALL.set(True)
            try:
                with run.activated():
                    result = await call(*args, **run.kwargs)
            except BaseException as exc:
                run.fail(exc)
                raise
            finally:
                _IN_CALL.reset(token)
            return run.handle_result(result)

        setattr(async_wrapper, _MARK, holder)
        return async_wrapper

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not holder.active or _IN_CALL.get():
            return call(*args, **kwargs)
        run = CallRun.start(holder.opts, holder.operation, kwargs, _resource(args))
        if run is None:
            return call(*args, **kwargs)
        token = _IN_CALL.set(True)
        try:
            with run.activated():
                result = call(*args, **run.kwargs)
        except BaseException as exc:
            run.fail(exc)
            raise
        finally:
            _IN_CALL.reset(token)
        return run.handle_result(result)

    setattr(wrapper, _MARK, holder)
    return wrapper


def _classes() -> list[tuple[type, str, bool]]:
    out = []
    for module, name, operation, is_async in _TARGETS:
        try:
            out.append((getattr(importlib.import_module(module), name), operation, is_async))
        except (ImportError, AttributeError):
            _LOG.debug("tokenfix capture: %s.%s not found in this openai version", module, name)
    return out


def _unwrapped(func: Any) -> Any:
    """The original method below our own wrapper (never wrap ours twice)."""
    while getattr(func, _MARK, None) is not None:
        func = func.__wrapped__
    return func


def instrument_openai(
    client: Any = None,
    *,
    request_token_ids: bool | None = None,
    request_logprobs: bool | None = None,
    capture_content: bool | None = None,
    record_text: bool = True,
    provider_name: str = "openai",
    agentlightning_keys: bool = False,
    reuse_llm_span: bool = True,
    tracer_provider: Any = None,
) -> Any:
    """Capture token ids on every chat-completions / completions call (all clients, or just ``client``).

    - ``request_token_ids`` / ``request_logprobs``: add ``return_token_ids: true`` / ``logprobs`` to the
      request body (``extra_body``) unless the caller set them. ``None`` (default): for every server but
      hosted OpenAI endpoints, whose API rejects unknown fields; ``False`` for other such servers (the
      span then says ``tokenfix.capture.status = "no_token_ids"``).
    - ``capture_content``: record prompts and output messages (default: the env var
      ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). ``record_text``: record the response
      text correction diffs edits against (``gen_ai.completion.0.content``) even without that opt-in.
    - ``reuse_llm_span``: when the current span is an LLM span of another instrumentation (OpenLLMetry,
      OpenInference), add our attributes to it instead of opening a second span.
    - ``agentlightning_keys``: also write ``prompt_token_ids`` / ``response_token_ids``.

    Calling it again updates the options. Returns ``client`` (handy: ``c = instrument_openai(OpenAI())``).
    """
    opts = CaptureOptions(
        request_token_ids=request_token_ids,
        request_logprobs=request_logprobs,
        capture_content=capture_content,
        record_text=record_text,
        provider_name=provider_name,
        agentlightning_keys=agentlightning_keys,
        reuse_llm_span=reuse_llm_span,
        tracer_provider=tracer_provider,
    )
    try:
        if client is None:
            _instrument_classes(opts)
        else:
            _instrument_client(client, opts)
    except Exception:  # noqa: BLE001 - instrumentation must never break the application
        _LOG.warning("otel_tokenfix: instrument_openai failed; calls are not captured", exc_info=True)
    return client


def _instrument_classes(opts: CaptureOptions) -> None:
    with _REG.lock:
        for cls, operation, is_async in _classes():
            for method in _METHODS[operation]:
                entry = _REG.classes.get((cls, method))
                current = cls.__dict__.get(method)
                if entry is not None and (current is entry[1] or _holder_in_chain(current, entry[2])):
                    entry[2].opts = opts
                    entry[2].active = True
                    continue
                original = _unwrapped(current) if current is not None else None
                if original is None:
                    continue
                holder = _Holder(opts, operation)
                wrapper = _make_wrapper(original, holder, is_async)
                setattr(cls, method, wrapper)
                _REG.classes[(cls, method)] = (original, wrapper, holder)


def _holder_in_chain(func: Any, holder: _Holder) -> bool:
    """Is our wrapper somewhere below ``func`` (another instrumentation wrapped ours)?"""
    seen = 0
    while func is not None and seen < 16:
        if getattr(func, _MARK, None) is holder:
            return True
        func = getattr(func, "__wrapped__", None)
        seen += 1
    return False


def _resources(client: Any) -> list[tuple[Any, str, bool]]:
    """The client's chat-completions and completions resources (only the ``openai`` package's own)."""
    from openai.resources.chat.completions import AsyncCompletions as AsyncChat
    from openai.resources.chat.completions import Completions as Chat
    from openai.resources.completions import AsyncCompletions as AsyncText
    from openai.resources.completions import Completions as Text

    out = []
    chat = getattr(getattr(client, "chat", None), "completions", None)
    if isinstance(chat, (Chat, AsyncChat)):
        out.append((chat, CHAT, isinstance(chat, AsyncChat)))
    text = getattr(client, "completions", None)
    if isinstance(text, (Text, AsyncText)):
        out.append((text, TEXT_COMPLETION, isinstance(text, AsyncText)))
    if not out:
        _LOG.warning("otel_tokenfix: %s is not an openai client; nothing instrumented", type(client).__name__)
    return out


def _instrument_client(client: Any, opts: CaptureOptions) -> None:
    with _REG.lock:
        holders = _REG.instances.get(client)
        if holders:
            for holder in holders:
                holder.opts = opts
                holder.active = True
            return
        holders = []
        for resource, operation, is_async in _resources(client):
            for method in _METHODS[operation]:
                found = getattr(type(resource), method, None)
                if found is None:
                    continue
                # below our own class patch (if any), so a patched instance is captured once
                holder = _Holder(opts, operation)
                call = functools.partial(_unwrapped(found), resource)
                setattr(resource, method, _make_wrapper(call, holder, is_async, bound_resource=resource))
                holders.append(holder)
        _REG.instances[client] = holders


def uninstrument_openai(client: Any = None) -> None:
    """Undo :func:`instrument_openai` (for ``client``, or the global class patches when ``None``).

    If another instrumentation has wrapped ours since, ours is switched off in place (pass-through).
    """
    try:
        with _REG.lock:
            if client is None:
                for (cls, method), (original, wrapper, holder) in list(_REG.classes.items()):
                    holder.active = False
                    if cls.__dict__.get(method) is wrapper:
                        setattr(cls, method, original)
                        del _REG.classes[(cls, method)]
                return
            holders = _REG.instances.pop(client, None) or []
            for holder in holders:
                holder.active = False
            for resource, operation, _ in _resources(client):
                for method in _METHODS[operation]:
                    if getattr(resource.__dict__.get(method), _MARK, None) is not None:
                        delattr(resource, method)
    except Exception:  # noqa: BLE001
        _LOG.warning("otel_tokenfix: uninstrument_openai failed", exc_info=True)


def is_instrumented(client: Any = None) -> bool:
    """Whether calls (of ``client``, or of every client when ``None``) are captured."""
    if client is None:
        return any(h.active for _, _, h in _REG.classes.values())
    return bool(_REG.instances.get(client))
