"""OTLP requests of real agent traces (real SDK spans, real Qwen ids), encoded by the SDK's own encoder."""

from __future__ import annotations

import sys
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import recorded_spans  # noqa: E402


def agent_requests(qwen, n_runs: int, per_request: int = 0, **kw):
    """(requests, runs): the spans of ``n_runs`` agent runs as OTLP requests (``per_request`` spans each,
    0 = one request per run), in the order the SDK ended them."""
    spans, runs = recorded_spans(qwen, n_runs, resource={"service.name": "agent"}, **kw)
    if per_request <= 0:
        by_trace: dict[int, list] = {}
        for s in spans:
            by_trace.setdefault(s.context.trace_id, []).append(s)
        return [encode_spans(group) for group in by_trace.values()], runs
    return [encode_spans(spans[i:i + per_request]) for i in range(0, len(spans), per_request)], runs


def span_count(requests: list[ExportTraceServiceRequest]) -> int:
    return sum(len(ss.spans) for r in requests for rs in r.resource_spans for ss in rs.scope_spans)
