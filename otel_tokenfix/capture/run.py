"""One captured call: its span (ours, or another instrumentation's LLM span), its result, its stream.

Why separate from the patching: this is the OpenTelemetry side (start, reuse, annotate and end spans;
follow a stream to its end) and it must never raise into user code, so every entry point here catches
its own failures and logs them at debug level.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import attributes as A
from .extract import CHAT, ResponseData, StreamCollector, from_response

_LOG = logging.getLogger("otel_tokenfix.capture")

#: Attribute keys by which an LLM span of another instrumentation is recognised.
_OTHER_LLM_KEYS = ("gen_ai.system", "gen_ai.operation.name", "gen_ai.provider.name")


@dataclass(frozen=True)
class CaptureOptions:
    """How calls are captured (see :func:`otel_tokenfix.instrument_openai`)."""

    #: ``None`` (auto): ask every server except hosted OpenAI endpoints (see :func:`is_hosted_openai`)
    request_token_ids: bool | None = None
    request_logprobs: bool | None = None
    capture_content: bool | None = None
    record_text: bool = True
    provider_name: str = "openai"
    agentlightning_keys: bool = False
    reuse_llm_span: bool = True
    tracer_provider: Any = None

    def attribute_options(self) -> A.AttributeOptions:
        return A.AttributeOptions(
            capture_content=A.content_enabled(self.capture_content),
            record_text=self.record_text,
            provider_name=self.provider_name,
            agentlightning_keys=self.agentlightning_keys,
        )


def _unset(kwargs: Mapping[str, Any], name: str) -> bool:
    """Not passed, or passed as ``openai.omit`` / ``NOT_GIVEN`` (an explicit ``None``/``False`` is a choice)."""
    if name not in kwargs:
        return True
    return type(kwargs[name]).__name__ in ("Omit", "NotGiven")


#: Hosted APIs that reject unknown request fields (HTTP 400) and never return token ids.
HOSTED_OPENAI_HOSTS = ("api.openai.com",)
HOSTED_OPENAI_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com")


def is_hosted_openai(host: str | None) -> bool:
    if not host:
        return False
    host = host.lower().rstrip(".")
    return host in HOSTED_OPENAI_HOSTS or host.endswith(HOSTED_OPENAI_SUFFIXES)


def wanted(flag: bool | None, host: str | None) -> bool:
    """An explicit flag wins; ``None`` asks every server but hosted OpenAI (whose API would answer 400)."""
    return flag if flag is not None else not is_hosted_openai(host)


def prepare_kwargs(
    kwargs: dict[str, Any], opts: CaptureOptions, operation: str, host: str | None = None
) -> dict[str, Any]:
    """Ask for token ids and logprobs through ``extra_body``, never overriding what the user set."""
    want_ids, want_lp = wanted(opts.request_token_ids, host), wanted(opts.request_logprobs, host)
    if not (want_ids or want_lp):
        return kwargs
    extra_in = kwargs.get("extra_body")
    if extra_in is not None and not isinstance(extra_in, Mapping):
        return kwargs  # something we do not understand: leave the request alone
    extra = dict(extra_in or {})
    if want_ids and "return_token_ids" not in extra:
        extra["return_token_ids"] = True
    if want_lp and "logprobs" not in extra and _unset(kwargs, "logprobs"):
        extra["logprobs"] = True if operation == CHAT else 0
    out = dict(kwargs)
    out["extra_body"] = extra
    return out


def server_of(resource: Any) -> tuple[str | None, int | None]:
    try:
        url = resource._client.base_url
        return (url.host or None), (url.port or (443 if url.scheme == "https" else 80))
    except Exception:  # noqa: BLE001 - a client without a base_url still works
        return None, None


def _reusable_llm_span(span: Any) -> bool:
    """Is the current span an LLM span opened by another instrumentation (OpenLLMetry, OpenInference)?"""
    if not span.is_recording():
        return False
    attrs = getattr(span, "attributes", None)
    if not isinstance(attrs, Mapping) or A.RESPONSE_IDS in attrs or A.CAPTURE_STATUS in attrs:
        return False
    if attrs.get("openinference.span.kind") == "LLM":
        return True
    return getattr(span, "kind", None) == SpanKind.CLIENT and any(k in attrs for k in _OTHER_LLM_KEYS)


class CallRun:
    """The span side of one call. Build with :meth:`start`; every method is safe to call (never raises)."""

    def __init__(self, opts: CaptureOptions, operation: str, kwargs: dict[str, Any], resource: Any) -> None:
        self.opts = opts
        self.attr_opts = opts.attribute_options()
        self.operation = operation
        self.tracer = trace.get_tracer("otel_tokenfix.capture", tracer_provider=opts.tracer_provider)
        server = server_of(resource)
        self.kwargs = prepare_kwargs(kwargs, opts, operation, server[0])
        self.requested_ids = wanted(opts.request_token_ids, server[0])
        self.request_attrs = A.request_attributes(operation, kwargs, self.attr_opts, server)
        self.name = A.span_name(operation, kwargs.get("model"))
        self.start_ns = time.time_ns()
        current = trace.get_current_span()
        self.owned = not (opts.reuse_llm_span and _reusable_llm_span(current))
        if self.owned:
            self.span = self.tracer.start_span(
                self.name, kind=SpanKind.CLIENT, attributes=self.request_attrs, start_time=self.start_ns
            )
        else:
            self.span = current
            self._set(self.request_attrs)
        self._ended = False
        self._lock = threading.Lock()

    @classmethod
    def start(cls, opts: CaptureOptions, operation: str, kwargs: dict[str, Any], resource: Any) -> CallRun | None:
        try:
            return cls(opts, operation, kwargs, resource)
        except Exception:  # noqa: BLE001 - telemetry must not break the call
            _LOG.debug("tokenfix capture: could not start a span", exc_info=True)
            return None

    def activated(self) -> contextlib.AbstractContextManager[Any]:
        """Make our span current during the HTTP call (so HTTP-level spans nest under it)."""
        if not self.owned:
            return contextlib.nullcontext()
        return trace.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False)

    def _set(self, attrs: Mapping[str, Any]) -> None:
        """On our span set everything; on another instrumentation's span add ``tokenfix.*`` keys and the
        text key, and only the GenAI keys it has not set itself."""
        if self.owned:
            self.span.set_attributes(dict(attrs))
            return
        have = getattr(self.span, "attributes", None) or {}
        out = {k: v for k, v in attrs.items() if k.startswith("tokenfix.") or k == A.COMPLETION_TEXT or k not in have}
        self.span.set_attributes(out)

    # ---- outcomes
    def _claim(self) -> bool:
        """True for the first outcome only: a span is ended exactly once."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def _end(self) -> None:
        if self.owned:
            with contextlib.suppress(Exception):
                self.span.end()

    def fail(self, exc: BaseException, data: ResponseData | None = None) -> None:
        if not self._claim():
            return
        try:
            if data is not None and data.choices:
                self._record(data, complete=False)
            self._set({A.CAPTURE_STATUS: A.STATUS_ERROR, A.CAPTURE_REASON: f"{type(exc).__name__}: {exc}"[:500]})
            if self.owned:
                self.span.set_attribute(A.ERROR_TYPE, type(exc).__qualname__)
                self.span.record_exception(exc)
                self.span.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
        except Exception:  # noqa: BLE001
            _LOG.debug("tokenfix capture: could not record a failure", exc_info=True)
        finally:
            self._end()

    def unsupported(self, reason: str) -> None:
        if not self._claim():
            return
        try:
            self._set({A.CAPTURE_STATUS: A.STATUS_UNSUPPORTED, A.CAPTURE_REASON: reason})
        except Exception:  # noqa: BLE001
            _LOG.debug("tokenfix capture: could not annotate a span", exc_info=True)
        finally:
            self._end()

    def succeed(self, data: ResponseData, *, complete: bool = True) -> None:
        if not self._claim():
            return
        try:
            self._record(data, complete=complete)
        except Exception:  # noqa: BLE001
            _LOG.debug("tokenfix capture: could not record a response", exc_info=True)
        finally:
            self._end()

    def _record(self, data: ResponseData, *, complete: bool) -> None:
        choices = sorted(data.choices, key=lambda c: c.index)
        n = len(choices)
        if not choices:
            if complete:
                self._set({A.CAPTURE_STATUS: A.STATUS_NO_IDS, A.CAPTURE_REASON: "the response has no choices"})
            else:
                reason = "the stream was closed before any choice was read"
                self._set({A.CAPTURE_STATUS: A.STATUS_INCOMPLETE, A.CAPTURE_REASON: reason})
            return
        reasons = tuple(c.finish_reason for c in choices if c.finish_reason)
        # Choices 1..n-1 on child spans, ended before the call span so that choice 0 stays the most
        # recent LLM span (the default target of an edit without a target).
        parent_ctx = trace.set_span_in_context(self.span)
        for choice in choices[1:]:
            attrs = dict(self.request_attrs)
            attrs.update(A.response_attributes(
                    data, choice, self.attr_opts, complete=complete, n_choices=n, requested=self.requested_ids
                ))
            child = self.tracer.start_span(
                self.name, context=parent_ctx, kind=SpanKind.INTERNAL, attributes=attrs, start_time=self.start_ns
            )
            child.end()
        first = A.response_attributes(
            data, choices[0], self.attr_opts, complete=complete, n_choices=n, requested=self.requested_ids
        )
        if n > 1 and reasons:
            first[A.FINISH_REASONS] = reasons
        if n > 1 and data.output_tokens is not None:
            first[A.OUTPUT_TOKENS] = data.output_tokens  # the call span carries the call's usage
        self._set(first)

    # ---- results
    def handle_result(self, result: Any) -> Any:
        """Record a returned value; streams are followed in place. Returns ``result`` unchanged."""
        try:
            self._handle(result)
        except Exception:  # noqa: BLE001
            _LOG.debug("tokenfix capture: could not read a result", exc_info=True)
            self.unsupported("the result could not be read")
        return result

    def _handle(self, result: Any) -> None:
        if _is_stream(result):
            follow_stream(result, self)
            return
        if hasattr(result, "http_response") and hasattr(result, "parse"):
            if _streamed_raw(result):
                self.unsupported("with_streaming_response results are not read (the body belongs to the caller)")
                return
            result = result.parse()  # LegacyAPIResponse caches the parse, the caller gets the same object
            if inspect.isawaitable(result):  # a future openai whose async parse is a coroutine
                with contextlib.suppress(Exception):
                    result.close()
                self.unsupported("an awaitable raw response is not read")
                return
            if _is_stream(result):
                follow_stream(result, self)
                return
        if hasattr(result, "choices") or isinstance(result, Mapping):
            self.succeed(from_response(result, self.operation))
        else:
            self.unsupported(f"unexpected result type {type(result).__name__}")


def _is_stream(obj: Any) -> bool:
    return type(obj).__name__ in ("Stream", "AsyncStream") and hasattr(obj, "response")


def _streamed_raw(result: Any) -> bool:
    name = type(result).__name__
    return name in ("APIResponse", "AsyncAPIResponse")


# ---- streams


class _StreamFollower:
    """Collects chunks as the caller reads them and ends the span once: at the end, on error, on close,
    or when the stream is garbage-collected unread."""

    def __init__(self, run: CallRun) -> None:
        self.run = run
        self.collector = StreamCollector(run.operation)
        self.broken = False

    def feed(self, chunk: Any) -> None:
        if self.broken:
            return
        try:
            self.collector.feed(chunk)
        except Exception:  # noqa: BLE001
            self.broken = True
            _LOG.debug("tokenfix capture: could not read a stream chunk", exc_info=True)

    def finish(self, complete: bool | None = None) -> None:
        try:
            if self.broken:
                self.run.unsupported("a stream chunk could not be read")
                return
            done = self.collector.finished if complete is None else complete
            self.run.succeed(self.collector.result(), complete=done)
        except Exception:  # noqa: BLE001
            _LOG.debug("tokenfix capture: could not finish a stream", exc_info=True)

    def fail(self, exc: BaseException) -> None:
        try:
            self.run.fail(exc, None if self.broken else self.collector.result())
        except Exception:  # noqa: BLE001
            _LOG.debug("tokenfix capture: could not fail a stream", exc_info=True)


def _follow_sync(iterator: Any, follower: _StreamFollower) -> Any:
    try:
        for chunk in iterator:
            follower.feed(chunk)
            yield chunk
    except GeneratorExit:
        follower.finish()
        raise
    except BaseException as exc:
        follower.fail(exc)
        raise
    follower.finish()


async def _follow_async(iterator: Any, follower: _StreamFollower) -> Any:
    try:
        async for chunk in iterator:
            follower.feed(chunk)
            yield chunk
    except GeneratorExit:
        follower.finish()
        raise
    except BaseException as exc:
        follower.fail(exc)
        raise
    follower.finish()


def follow_stream(stream: Any, run: CallRun) -> None:
    """Wrap ``stream._iterator`` and ``stream.close`` in place: the caller keeps the very same
    ``openai.Stream`` object (isinstance checks, helpers such as ``chat.completions.stream()``)."""
    iterator = getattr(stream, "_iterator", None)
    if iterator is None:
        run.unsupported("this openai version's stream has no _iterator to follow")
        return
    follower = _StreamFollower(run)
    is_async = type(stream).__name__ == "AsyncStream"
    stream._iterator = _follow_async(iterator, follower) if is_async else _follow_sync(iterator, follower)
    ref = weakref.ref(stream)  # no strong self-reference: an unread stream can still be collected
    if is_async:

        async def close() -> None:
            follower.finish()
            target = ref()
            if target is not None:
                await type(target).close(target)

    else:

        def close() -> None:
            follower.finish()
            target = ref()
            if target is not None:
                type(target).close(target)

    stream.close = close
    weakref.finalize(stream, follower.finish)
