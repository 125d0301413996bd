"""The service's own counters as OTel metrics (real MeterProvider + InMemoryMetricReader) and /healthz,
on an in-process TokenFixService with real sockets."""

from __future__ import annotations

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_tokenfix.service.pipeline import PipelineOptions
from otel_tokenfix.service.server import ServeConfig, TokenFixService, register_metrics

from .otlp_payloads import agent_requests, span_count


def metric_values(reader) -> dict[str, float]:
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = sum(p.value for p in m.data.data_points)
    return out


def test_service_metrics_and_health(qwen, tmp_path):
    config = ServeConfig(grpc="127.0.0.1:0", http="127.0.0.1:0", output=str(tmp_path / "t.jsonl"),
                         tokenizers={"qwen2.5": qwen}, pipeline=PipelineOptions(root_grace=0), stats_interval=0)
    service = TokenFixService(config)
    reader = InMemoryMetricReader()
    assert register_metrics(service, MeterProvider(metric_readers=[reader]))
    service.start()
    try:
        requests, runs = agent_requests(qwen, 2)
        with grpc.insecure_channel(service.endpoints["grpc"]) as ch:
            for req in requests:
                trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
        assert service.pipeline.wait_idle(30)
        values = metric_values(reader)
        assert values["tokenfix.serve.spans"] == span_count(requests)
        assert values["tokenfix.serve.triplets"] == 6 and values["tokenfix.serve.corrected"] == 4
        assert values["tokenfix.serve.held_spans"] == 0 and values["tokenfix.serve.requests"] == 2
        health = httpx.get(f"{service.endpoints['http']}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["triplets"] == 6
    finally:
        service.stop()
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 6
