"""``serve --forward URL``: send corrected spans on to a next hop over OTLP (gRPC or HTTP/protobuf).

Why a queue and a thread: a slow or dead next hop must not stall intake or triplet writing (triplets
are the service's main product). Batches wait in a bounded queue; a failed send is retried with
exponential backoff for up to ``max_elapsed`` seconds, then dropped and *counted and logged*; when the
queue is full the oldest batch is dropped the same way. Nothing is lost silently.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..otlp.decode import SpanRef
from ..otlp.encode import build_request

log = logging.getLogger("otel_tokenfix.service.forward")

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRYABLE_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
}
_RETRYABLE_HTTP = {408, 429, 502, 503, 504}


class SendError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class ForwardStats:
    forwarded_spans: int = 0
    failed_spans: int = 0
    retries: int = 0
    queued_spans: int = 0


@dataclass(frozen=True)
class Target:
    protocol: str  # "grpc" | "http"
    address: str  # host:port for gRPC, full URL for HTTP
    secure: bool = False


def parse_target(url: str) -> Target:
    """``grpc://host:port`` / ``host:port`` -> OTLP/gRPC; ``http(s)://host:port[/path]`` -> OTLP/HTTP
    (``/v1/traces`` appended when the URL has no path)."""
    if "://" not in url:
        return Target("grpc", url)
    parsed = urlparse(url)
    if parsed.scheme in ("grpc", "grpcs"):
        return Target("grpc", parsed.netloc, secure=parsed.scheme == "grpcs")
    if parsed.scheme in ("http", "https"):
        path = parsed.path if parsed.path not in ("", "/") else "/v1/traces"
        return Target("http", f"{parsed.scheme}://{parsed.netloc}{path}", secure=parsed.scheme == "https")
    raise ValueError(f"unsupported forward URL {url!r} (use grpc://host:port or http://host:port/v1/traces)")


class Forwarder:
    """Bounded, retrying OTLP sender (one background thread)."""

    def __init__(
        self,
        url: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 10.0,
        max_queue_spans: int = 200_000,
        max_elapsed: float = 60.0,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        self.target = parse_target(url)
        self.headers = list(headers)
        self.timeout = timeout
        self.max_queue_spans = max_queue_spans
        self.max_elapsed = max_elapsed
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stats = ForwardStats()
        self._queue: deque[tuple[ExportTraceServiceRequest, int]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None
        self._channel: grpc.Channel | None = None
        self._call = None
        if self.target.protocol == "grpc":
            options = [("grpc.max_send_message_length", max_message_bytes),
                       ("grpc.max_receive_message_length", max_message_bytes)]
            if self.target.secure:
                self._channel = grpc.secure_channel(self.target.address, grpc.ssl_channel_credentials(), options)
            else:
                self._channel = grpc.insecure_channel(self.target.address, options)
            self._call = self._channel.unary_unary(
                _EXPORT,
                request_serializer=ExportTraceServiceRequest.SerializeToString,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
        self._thread = threading.Thread(target=self._run, name="tokenfix-forward", daemon=True)
        self._thread.start()

    # --- API -------------------------------------------------------------------------------------------
    def submit(self, items: Sequence[tuple[SpanRef, Span]]) -> None:
        if not items:
            return
        request = build_request(items)
        with self._cond:
            if self._closing:
                self._fail(len(items), "forwarder is closed")
                return
            self._queue.append((request, len(items)))
            self.stats.queued_spans += len(items)
            while self.stats.queued_spans > self.max_queue_spans and len(self._queue) > 1:
                _, n = self._queue.popleft()
                self.stats.queued_spans -= n
                self._fail(n, f"forward queue over {self.max_queue_spans} spans: dropped the oldest batch")
            self._cond.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (retrying until ``timeout``), then count the rest as failed."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()
        self._thread.join(timeout=max(0.0, timeout) + self.timeout + 1.0)
        if self._channel is not None:
            self._channel.close()

    # --- worker ----------------------------------------------------------------------------------------
    def _fail(self, spans: int, why: str) -> None:
        self.stats.failed_spans += spans
        log.error("forward to %s: %d span(s) not delivered: %s", self.target.address, spans, why)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                request, n = self._queue[0]
            delivered, why = self._send_with_retry(request)
            with self._cond:
                if self._queue and self._queue[0][0] is request:
                    self._queue.popleft()
                    self.stats.queued_spans -= n
                else:  # dropped meanwhile by the queue bound (already counted)
                    continue
            if delivered:
                self.stats.forwarded_spans += n
            else:
                self._fail(n, why)

    def _send_with_retry(self, request: ExportTraceServiceRequest) -> tuple[bool, str]:
        start = time.monotonic()
        delay = self.backoff
        while True:
            try:
                self._send(request)
                return True, ""
            except SendError as exc:
                why = str(exc)
                if not exc.retryable:
                    return False, why
            now = time.monotonic()
            with self._cond:
                deadline = self._deadline
            limit = start + self.max_elapsed
            if deadline is not None:
                limit = min(limit, deadline)
            if now + delay > limit:
                return False, f"{why} (gave up after {now - start:.1f}s)"
            self.stats.retries += 1
            log.warning("forward to %s failed (%s); retrying in %.1fs", self.target.address, why, delay)
            wake_at = time.monotonic() + delay
            with self._cond:  # sleep the backoff, but wake up when close() sets an earlier deadline
                self._cond.wait_for(lambda w=wake_at: self._deadline is not None and self._deadline < w, timeout=delay)
            delay = min(delay * 2, self.max_backoff)

    def _send(self, request: ExportTraceServiceRequest) -> None:
        if self._call is not None:
            try:
                self._call(request, timeout=self.timeout, metadata=self.headers or None)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                raise SendError(f"gRPC {code}", code in _RETRYABLE_GRPC) from exc
            return
        body = request.SerializeToString()
        req = urllib.request.Request(self.target.address, data=body, method="POST")
        req.add_header("Content-Type", "application/x-protobuf")
        for k, v in self.headers:
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - URL from the CLI
                resp.read()
        except urllib.error.HTTPError as exc:
            raise SendError(f"HTTP {exc.code}", exc.code in _RETRYABLE_HTTP) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise SendError(f"connection failed: {exc}", True) from exc
