"""Agent -> the real Collector -> `otel-tokenfix serve`; the Collector's raw file -> `convert`; and the
load-balancing Collector in front of two serve instances (every trace on one instance, corrected once)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from service.serve_helpers import REPO, start_serve

from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.triplets.sinks import MemorySink

from .collector_helpers import start_collector

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import run_agent  # noqa: E402

# the first run may build the Collector (minutes on 2 cores) inside the fixture
pytestmark = [pytest.mark.collector, pytest.mark.timeout(3600)]


def run_agents(qwen, exporter, n_runs: int) -> tuple[list, list[dict], int]:
    """Agents exporting OTLP to ``exporter``; also the in-process TripletExporter as the reference."""
    reference = MemorySink()
    spans = MemorySink()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    provider.add_span_processor(SimpleSpanProcessor(TripletExporter(reference, tokenizers={"qwen2.5": qwen},
                                                                    root_grace=0.0, timer=False)))
    counter = _Counter()
    provider.add_span_processor(counter)
    tracer = provider.get_tracer("agent")
    runs = [run_agent(tracer, qwen) for _ in range(n_runs)]
    provider.shutdown()
    del spans
    return runs, [r.to_dict() for r in reference.records], counter.n


class _Counter:
    """A span processor counting ended spans (what the agent sent)."""

    def __init__(self) -> None:
        self.n = 0

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span) -> None:
        self.n += 1

    def _on_ending(self, span) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def comparable(rec: dict) -> dict:
    """A record without the release reason (serve holds a root grace behind a Collector; in-process not)."""
    out = json.loads(json.dumps(rec))
    out["metadata"].pop("release_reason", None)
    return out


def by_key(records) -> dict:
    return {(r["trace_id"], r["index"]): r for r in records}


def same(a, b) -> bool:
    return {k: comparable(v) for k, v in by_key(a).items()} == {k: comparable(v) for k, v in by_key(b).items()}


def convert(src: Path, out: Path, qwen_dir: Path) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "otel_tokenfix.cli.main", "convert", str(src), "-o", str(out), "--no-progress",
         "--tokenizer", f"qwen2.5={qwen_dir}"], capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_agent_gateway_to_serve_and_file_to_convert(collector_bin, qwen, qwen_dir, tmp_path):
    serve = start_serve(tmp_path / "serve.jsonl", qwen_dir, "--root-grace", "2")
    raw = tmp_path / "raw-spans.jsonl"
    col = start_collector(collector_bin, "agent-gateway.yaml",
                          {"TOKENFIX_SERVE_ENDPOINT": serve.grpc, "OTELCOL_RAW_FILE": str(raw)})
    try:
        runs, expected, sent = run_agents(qwen, GrpcExporter(endpoint=col.grpc, insecure=True), 5)
        serve.wait_for(lambda: len(serve.records()) >= len(expected), timeout=60, what="triplets via the Collector")
    finally:
        assert col.stop() == 0, col.text()
    assert serve.stop() == 0, serve.stderr_text()
    got = serve.records()
    assert len(got) == len(expected) == 15
    assert same(got, expected)
    assert sum(1 for r in got if r["metadata"]["status"] == "corrected") == 10

    # the Collector's file exporter wrote the raw spans: convert gives the same triplets as serve
    lines = raw.read_text().splitlines()
    assert lines and all(line.startswith("{") for line in lines)
    assert sum(len(s["spans"]) for line in lines for rs in json.loads(line)["resourceSpans"]
               for s in rs["scopeSpans"]) == sent
    converted = convert(raw, tmp_path / "conv.jsonl", qwen_dir)
    # identical but for the release reason: in a file the last traces end at end-of-file, not a grace
    assert same(converted, got)
    gz = tmp_path / "raw-spans.jsonl.gz"
    with raw.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert by_key(convert(gz, tmp_path / "conv-gz.jsonl", qwen_dir)) == by_key(converted)


def test_loadbalancing_collector_routes_traces_to_two_serves(collector_bin, qwen, qwen_dir, tmp_path):
    a = start_serve(tmp_path / "a.jsonl", qwen_dir, "--root-grace", "2")
    b = start_serve(tmp_path / "b.jsonl", qwen_dir, "--root-grace", "2")
    col = start_collector(collector_bin, "loadbalancing.yaml", {"TOKENFIX_SERVE_0": a.grpc, "TOKENFIX_SERVE_1": b.grpc})
    n = 16
    try:
        runs, expected, sent = run_agents(qwen, HttpExporter(endpoint=f"http://{col.http}/v1/traces"), n)
        a.wait_for(lambda: len(a.records()) + len(b.records()) >= 3 * n, timeout=60, what="triplets on a+b")
        a.wait_for(lambda: a.health()["spans"] + b.health()["spans"] >= sent, timeout=30, what="every span")
        a.wait_for(lambda: a.health()["held_spans"] + b.health()["held_spans"] == 0, timeout=30, what="all released")
        spans_a, spans_b = a.health()["spans"], b.health()["spans"]
    finally:
        assert col.stop() == 0, col.text()
    assert a.stop() == 0 and b.stop() == 0
    assert spans_a + spans_b == sent, "a span was lost or duplicated"
    where: dict[str, set[str]] = defaultdict(set)
    for name, sp in (("a", a), ("b", b)):
        for r in sp.records():
            where[r["trace_id"]].add(name)
    assert len(where) == n
    assert all(len(v) == 1 for v in where.values()), "a trace was split across instances"
    assert {"a", "b"} == set().union(*where.values()), "all traces went to one instance"
    got = a.records() + b.records()
    assert len(got) == len(by_key(got)) == 3 * n, "a call was corrected twice or lost"
    assert same(got, expected)
    # each instance saw whole traces: every trace's spans are on the instance holding its LLM spans
    assert sum(1 for r in got if r["metadata"]["status"] == "corrected") == 2 * n


def test_serve_forwards_corrected_spans_to_offline_file_collector(collector_bin, qwen, qwen_dir, tmp_path):
    """serve --forward -> a Collector with offline-file.yaml: the file holds the corrected spans (tokenfix.*
    attributes, corrected ids under the original key), and convert reads them back to the same triplets."""
    spans_file = tmp_path / "forwarded.jsonl"
    sink_col = start_collector(collector_bin, "offline-file.yaml", {"OTELCOL_SPANS_FILE": str(spans_file)})
    serve = start_serve(tmp_path / "serve.jsonl", qwen_dir, "--root-grace", "0",
                        "--forward", f"grpc://{sink_col.grpc}")
    try:
        runs, expected, sent = run_agents(qwen, GrpcExporter(endpoint=serve.grpc, insecure=True), 3)
        serve.wait_for(lambda: serve.health()["forward"]["forwarded_spans"] == sent, what="spans forwarded")
        assert serve.stop() == 0, serve.stderr_text()
    finally:
        assert sink_col.stop() == 0, sink_col.text()
    got = serve.records()
    assert same(got, expected)
    spans = [s for line in spans_file.read_text().splitlines() for rs in json.loads(line)["resourceSpans"]
             for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert len(spans) == sent
    status = {}
    for s in spans:
        attrs = {a["key"]: a["value"] for a in s.get("attributes", [])}
        if "tokenfix.status" in attrs:
            status[s["spanId"]] = attrs["tokenfix.status"]["stringValue"]
    assert sorted(status.values()) == ["corrected"] * 6 + ["unchanged"] * 3  # every LLM span is marked
    assert "debug" in sink_col.text() or "Traces" in sink_col.text()  # the debug exporter logged batches
    converted = convert(spans_file, tmp_path / "conv.jsonl", qwen_dir)
    assert same(converted, got)
