"""OTLP/HTTP receiver (``POST /v1/traces``: protobuf or JSON, optionally gzip) and ``GET /healthz``.

Why limits on both sizes: a gzip body of a few KB can inflate to gigabytes, so the compressed body is
read with a cap and the decompressor is fed incrementally with a cap on its output. Errors follow the
OTLP/HTTP spec: 400 with a ``google.rpc.Status`` body (protobuf or JSON, matching the request), 401 for
a bad token, 413 for oversize, 415 for an unsupported content type or encoding.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..otlp.decode import parse_request
from ..otlp.jsonfmt import OTLPJsonError, request_from_json
from .grpc_server import bearer_ok
from .pipeline import Pipeline, ServiceUnavailable

log = logging.getLogger("otel_tokenfix.service.http")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes (by Content-Length, then while streaming)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise BodyError(413, f"body of {length} bytes is over the {limit}-byte limit")
        except ValueError:
            raise BodyError(400, "bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"body over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (or zlib) with a cap on the output size."""
    d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise BodyError(413, f"decompressed body over the {limit}-byte limit")
        out += d.flush()
        if len(out) > limit:
            raise BodyError(413, f"decompressed body over the {limit}-byte limit")
        if not d.eof:
            raise BodyError(400, "truncated gzip body")
    except zlib.error as exc:
        raise BodyError(400, f"bad gzip body: {exc}") from exc
    return out


def _error(status: int, message: str, content_type: str, retry_after: float | None = None) -> Response:
    headers = {"retry-after": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    if content_type == JSON:
        return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)
    body = status_pb2.Status(code=status, message=message).SerializeToString()
    return Response(body, status_code=status, media_type=PROTOBUF, headers=headers)


def make_app(
    pipeline: Pipeline,
    *,
    token: str | None = None,
    max_body_bytes: int = 64 << 20,
    health: Callable[[], dict[str, Any]] | None = None,
    on_reject: Callable[[], None] | None = None,
) -> Starlette:
    reject = on_reject or (lambda: None)

    async def traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        kind = JSON if ctype == JSON else PROTOBUF
        if not bearer_ok(token, request.headers.get("authorization")):
            reject()
            return _error(401, "missing or wrong bearer token", kind)
        if ctype not in (PROTOBUF, JSON):
            reject()
            return _error(415, f"unsupported content type {ctype!r} (use {PROTOBUF} or {JSON})", PROTOBUF)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip"):
            reject()
            return _error(415, f"unsupported content encoding {encoding!r} (use gzip or none)", kind)
        if pipeline.closed:
            return _error(503, "shutting down", kind)
        if pipeline.saturated():  # refuse before reading the body: a full queue must not grow memory
            exc = pipeline.refuse_busy()
            return _error(503, str(exc), kind, exc.retry_after)
        try:
            body = await read_body(request, max_body_bytes)
            if encoding == "gzip":
                body = gunzip(body, max_body_bytes)
            if kind == JSON:
                message = request_from_json(body)
                raw = message.SerializeToString()
            else:
                message = parse_request(body)
                raw = body
        except BodyError as exc:
            reject()
            return _error(exc.status, str(exc), kind)
        except (DecodeError, OTLPJsonError) as exc:
            reject()
            return _error(400, f"malformed ExportTraceServiceRequest: {exc}", kind)
        try:
            await run_in_threadpool(pipeline.submit, message, raw)
        except ServiceUnavailable as exc:
            return _error(503, str(exc), kind, exc.retry_after)
        except Exception as exc:  # noqa: BLE001 - the service stays up
            pipeline.stats.internal_errors += 1
            log.exception("export failed")
            return _error(500, f"internal error: {type(exc).__name__}", kind)
        response = ExportTraceServiceResponse()
        if kind == JSON:
            return JSONResponse(json_format.MessageToDict(response))
        return Response(response.SerializeToString(), media_type=PROTOBUF)

    async def healthz(request: Request) -> Response:
        info = health() if health is not None else {}
        ok = not pipeline.closed
        return Response(json.dumps({"status": "ok" if ok else "shutting down", **info}),
                        status_code=200 if ok else 503, media_type=JSON)

    return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/healthz", healthz)])

