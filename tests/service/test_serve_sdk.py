"""The Python SDK's OTLPSpanExporter (gRPC and HTTP) -> a real `otel-tokenfix serve` process -> the same
triplets as the in-process TripletExporter for the same traces; corrected spans forwarded on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.triplets.sinks import MemorySink

from .serve_helpers import start_serve

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import run_agent  # noqa: E402


@pytest.fixture(scope="module")
def serve(qwen_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "triplets.jsonl"
    sp = start_serve(out, qwen_dir, "--root-grace", "0")
    yield sp
    assert sp.stop() == 0, sp.stderr_text()


def sdk_exporter(protocol: str, sp):
    if protocol == "grpc":
        return GrpcExporter(endpoint=sp.grpc, insecure=True)
    return HttpExporter(endpoint=f"{sp.http}/v1/traces")


def run_agents(qwen, exporter, n_runs: int, **kw):
    """Agents traced once, exported two ways: OTLP to serve, and the in-process TripletExporter."""
    reference = MemorySink()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent", "agentlightning.rollout_id": "r1"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    exporter_in_process = TripletExporter(reference, tokenizers={"qwen2.5": qwen}, root_grace=0.0, timer=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter_in_process))
    tracer = provider.get_tracer("agent")
    runs = [run_agent(tracer, qwen, **kw) for _ in range(n_runs)]
    provider.shutdown()
    return runs, [r.to_dict() for r in reference.records]


def key(rec: dict) -> tuple:
    return rec["trace_id"], rec["index"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_otlp_to_serve_matches_in_process(protocol, serve, qwen):
    runs, expected = run_agents(qwen, sdk_exporter(protocol, serve), 3)
    traces = {format(r.trace_id, "032x") for r in runs}
    assert len(expected) == 9 and sum(1 for r in expected if r["metadata"]["status"] == "corrected") == 6

    def got():
        return sorted((r for r in serve.records() if r["trace_id"] in traces), key=key)

    serve.wait_for(lambda: len(got()) >= len(expected), what="triplets of 3 traces")
    for g, e in zip(got(), sorted(expected, key=key), strict=True):
        gm, em = g["metadata"], e["metadata"]
        assert gm == em, {k: (gm.get(k), em.get(k)) for k in set(gm) | set(em) if gm.get(k) != em.get(k)}
        assert g == e
    assert len(got()) == len(expected)
    health = serve.health()
    assert health["status"] == "ok" and health["internal_errors"] == 0 and health["rejected_requests"] == 0
