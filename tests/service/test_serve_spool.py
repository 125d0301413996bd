"""`serve --spool DIR`: requests acknowledged before a SIGKILL are replayed at the next start, and each
triplet is written exactly once (the ones already in the sink are not written again)."""

from __future__ import annotations

import signal

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from .otlp_payloads import agent_requests
from .serve_helpers import start_serve


def test_spool_replays_after_sigkill(qwen, qwen_dir, tmp_path):
    out, spool = tmp_path / "t.jsonl", tmp_path / "spool"
    requests, runs = agent_requests(qwen, 6)
    # first life: 3 traces released at once (grace 0), then a long grace holds the other 3 when killed
    sp = start_serve(out, qwen_dir, "--root-grace", "0", "--spool", str(spool))
    with grpc.insecure_channel(sp.grpc) as ch:
        for req in requests[:3]:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
    sp.wait_for(lambda: len(sp.records()) == 9, what="first traces written")
    assert sp.stop() == 0
    sp = start_serve(out, qwen_dir, "--root-grace", "600", "--spool", str(spool))
    with grpc.insecure_channel(sp.grpc) as ch:
        for req in requests[3:]:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
    assert len(sp.records()) == 9  # held, not written yet
    sp.stop(signal.SIGKILL)
    assert len(sp.records()) == 9
    # next life replays the three acknowledged, unfinished traces
    sp = start_serve(out, qwen_dir, "--root-grace", "0", "--spool", str(spool))
    sp.wait_for(lambda: len(sp.records()) == 18, what="replayed traces")
    assert sp.stop() == 0
    records = sp.records()
    keys = [(r["trace_id"], r["index"]) for r in records]
    assert len(keys) == len(set(keys)) == 18
    assert {r["trace_id"] for r in records} == {format(r.trace_id, "032x") for r in runs}
    assert sum(r["metadata"]["status"] == "corrected" for r in records) == 12
