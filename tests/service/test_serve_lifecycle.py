"""SIGTERM with traces in flight (nothing acknowledged is lost), forwarding corrected spans to a next hop,
and a next hop that is down (spans reported as not delivered; triplets still written)."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from .otlp_payloads import agent_requests, span_count
from .serve_helpers import free_port, start_serve


def llm_span_ids(request) -> set[tuple[str, str]]:
    out = set()
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                if any(kv.key == "response_token_ids" for kv in s.attributes):
                    out.add((s.trace_id.hex(), s.span_id.hex()))
    return out


def send_grpc(sp):
    ch = grpc.insecure_channel(sp.grpc)
    stub = trace_service_pb2_grpc.TraceServiceStub(ch)

    def send(req) -> bool:
        try:
            stub.Export(req, timeout=10)
            return True
        except grpc.RpcError:
            return False

    return send, ch.close


def send_http(sp):
    client = httpx.Client(timeout=10)

    def send(req) -> bool:
        try:
            r = client.post(f"{sp.http}/v1/traces", content=req.SerializeToString(),
                            headers={"content-type": "application/x-protobuf"})
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    return send, client.close


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sigterm_with_traces_in_flight(protocol, qwen, qwen_dir, tmp_path):
    # traces are held for a long grace, so at SIGTERM every received trace is still in memory
    sp = start_serve(tmp_path / "t.jsonl", qwen_dir, "--root-grace", "120", "--hold-timeout", "600")
    requests, _ = agent_requests(qwen, 12, per_request=2)  # traces split over several requests
    acked: list = []
    errors: list = []
    started = threading.Event()

    send, close = (send_grpc if protocol == "grpc" else send_http)(sp)

    def sender() -> None:
        try:
            for i, req in enumerate(requests):
                if not send(req):
                    errors.append(i)
                    return
                acked.append(req)
                if i == len(requests) // 2:
                    started.set()
                time.sleep(0.02)
        finally:
            started.set()
            close()

    t = threading.Thread(target=sender)
    t.start()
    assert started.wait(60)
    assert sp.stop(signal.SIGTERM) == 0, sp.stderr_text()
    t.join(30)
    assert len(requests) // 2 <= len(acked) < len(requests) and errors  # the stop came mid-stream
    expected = set().union(*(llm_span_ids(r) for r in acked))
    records = sp.records()
    got = [(r["trace_id"], r["span_id"]) for r in records]
    assert len(got) == len(set(got)), "a span was written twice"
    assert expected <= set(got), f"lost {len(expected - set(got))} acknowledged LLM spans"
    assert {r["metadata"]["release_reason"] for r in records} <= {"shutdown"}
    # complete traces (root received before SIGTERM) are corrected, not just flushed
    assert any(r["metadata"]["status"] == "corrected" for r in records)
    assert "stopped:" in sp.stderr_text()


@pytest.fixture()
def next_hop(qwen_dir, tmp_path):
    sp = start_serve(tmp_path / "next.jsonl", qwen_dir, "--root-grace", "0.2")
    yield sp
    sp.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_forward_sends_corrected_spans(protocol, qwen, qwen_dir, tmp_path, next_hop):
    target = f"grpc://{next_hop.grpc}" if protocol == "grpc" else f"{next_hop.http}/v1/traces"
    sp = start_serve(tmp_path / "a.jsonl", qwen_dir, "--root-grace", "0", "--forward", target)
    requests, runs = agent_requests(qwen, 3)
    with grpc.insecure_channel(sp.grpc) as ch:
        for req in requests:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
    total = span_count(requests)
    sp.wait_for(lambda: sp.health()["forward"]["forwarded_spans"] == total, what="all spans forwarded")
    next_hop.wait_for(lambda: len(next_hop.records()) == 9, what="next hop triplets")
    assert sp.stop() == 0
    mine = {(r["trace_id"], r["index"]): r for r in sp.records()}
    theirs = {(r["trace_id"], r["index"]): r for r in next_hop.records()}
    assert mine.keys() == theirs.keys() and len(mine) == 9
    for k, rec in mine.items():
        # the next hop reads the corrected spans back (tokenfix.* attributes), it does not correct twice
        assert theirs[k]["response"] == rec["response"]
        assert theirs[k]["prompt"] == rec["prompt"]
        assert theirs[k]["metadata"]["status"] == rec["metadata"]["status"]
    assert sum(1 for r in theirs.values() if r["metadata"]["status"] == "corrected") == 6
    assert next_hop.health()["spans"] == total


def test_forward_target_down(qwen, qwen_dir, tmp_path):
    dead = f"grpc://127.0.0.1:{free_port()}"
    sp = start_serve(tmp_path / "a.jsonl", qwen_dir, "--root-grace", "0", "--forward", dead,
                     "--forward-max-elapsed", "1.5")
    requests, runs = agent_requests(qwen, 2)
    with grpc.insecure_channel(sp.grpc) as ch:
        for req in requests:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
    sp.wait_for(lambda: len(sp.records()) == 6, what="triplets despite the dead next hop")
    total = span_count(requests)
    sp.wait_for(lambda: sp.health()["forward"]["failed_spans"] == total, timeout=30, what="failures reported")
    health = sp.health()
    assert health["forward"]["retries"] >= 1 and health["forward"]["forwarded_spans"] == 0
    assert sp.stop() == 0
    assert "not delivered" in sp.stderr_text()
    assert sum(1 for r in sp.records() if r["metadata"]["status"] == "corrected") == 4
