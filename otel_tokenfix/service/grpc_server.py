"""OTLP/gRPC receiver (TraceService/Export) and the standard gRPC health service.

Why a generic handler with raw bytes instead of the generated servicer: grpcio answers a request it
cannot deserialize with INTERNAL; OTLP asks for INVALID_ARGUMENT, and the spool needs the exact bytes.
So the handler parses the body itself. Size limits are grpcio's (RESOURCE_EXHAUSTED beyond them).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ..otlp.decode import parse_request
from .pipeline import Pipeline, ServiceUnavailable

log = logging.getLogger("otel_tokenfix.service.grpc")

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
_RESPONSE = ExportTraceServiceResponse().SerializeToString()


def bearer_ok(token: str | None, header: str | None) -> bool:
    """Constant-time check of an ``authorization: Bearer <token>`` header (no token: always ok)."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


class GrpcReceiver:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        host: str,
        port: int,
        token: str | None = None,
        max_message_bytes: int = 64 << 20,
        workers: int = 4,
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.token = token
        self.on_reject = on_reject or (lambda: None)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tokenfix-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {"Export": grpc.unary_unary_rpc_method_handler(self._export, request_deserializer=None,
                                                           response_serializer=None)},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC on {host}:{port}")
        self.host = host

    def start(self) -> None:
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        """Stop accepting new RPCs; in-flight ones get ``grace`` seconds to finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1.0)

    def _export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        if self.token:
            header = dict(context.invocation_metadata()).get("authorization")
            if not bearer_ok(self.token, header if isinstance(header, str) else None):
                self.on_reject()
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if self.pipeline.saturated():  # refuse before parsing: a full queue must not grow memory
            self._unavailable(context, self.pipeline.refuse_busy())
        try:
            request = parse_request(body)
        except DecodeError as exc:
            self.on_reject()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ExportTraceServiceRequest: {exc}")
        if self.pipeline.closed:
            context.abort(grpc.StatusCode.UNAVAILABLE, "shutting down")
        try:
            self.pipeline.submit(request, body)
        except ServiceUnavailable as exc:
            self._unavailable(context, exc)
        except Exception as exc:  # noqa: BLE001 - the service stays up; the sender may retry
            self.pipeline.stats.internal_errors += 1
            log.exception("export failed")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        return _RESPONSE

    @staticmethod
    def _unavailable(context: grpc.ServicerContext, exc: ServiceUnavailable) -> None:
        """Abort with UNAVAILABLE; with a ``google.rpc.RetryInfo`` detail when a delay is known (the OTLP
        spec's throttling signal, honoured by the Collector's exporters)."""
        if exc.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(exc.retry_after * 1e9))
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=str(exc), details=[detail])
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
