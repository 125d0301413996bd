"""Malformed, oversize and unauthenticated requests get the protocol's error status; the service stays up
and still corrects the valid traffic that follows."""

from __future__ import annotations

import gzip
import json

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from otel_tokenfix.otlp.jsonfmt import request_to_json

from .otlp_payloads import agent_requests
from .serve_helpers import start_serve

TOKEN = "s3cret-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def serve(qwen_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-errors") / "triplets.jsonl"
    sp = start_serve(out, qwen_dir, "--root-grace", "0", "--token", TOKEN, "--max-message-mib", "1")
    yield sp
    assert sp.stop() == 0, sp.stderr_text()


@pytest.fixture(scope="module")
def payloads(qwen):
    requests, runs = agent_requests(qwen, 4)
    return requests, runs


def raw_call(sp, body: bytes, metadata=AUTH):
    with grpc.insecure_channel(sp.grpc, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        return call(body, metadata=metadata, timeout=10)


def grpc_code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code()


def test_grpc_errors_then_valid(serve, payloads):
    requests, runs = payloads
    good = requests[0].SerializeToString()
    assert grpc_code(lambda: raw_call(serve, good[: len(good) // 2])) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_code(lambda: raw_call(serve, b"\xff\xff\xff\xff garbage")) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_code(lambda: raw_call(serve, good, metadata=())) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(lambda: raw_call(serve, good, metadata=(("authorization", "Bearer nope"),))) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(lambda: raw_call(serve, b"\x0a" + b"\x80" * 3 + b"\x01" + b"x" * (2 << 20))) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(serve.grpc) as ch:  # the typed client, as SDK exporters use it
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(requests[0], metadata=AUTH, timeout=10)
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    tid = format(runs[0].trace_id, "032x")
    serve.wait_for(lambda: len([r for r in serve.records() if r["trace_id"] == tid]) == 3, what="valid trace")
    assert serve.health()["rejected_requests"] >= 4  # the oversize one never reaches the handler


def post(sp, body: bytes, ctype="application/x-protobuf", token=TOKEN, encoding=None):
    headers = {"content-type": ctype}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if encoding:
        headers["content-encoding"] = encoding
    return httpx.post(f"{sp.http}/v1/traces", content=body, headers=headers, timeout=20)


def test_http_errors_then_valid(serve, payloads):
    requests, runs = payloads
    good = requests[1].SerializeToString()
    r = post(serve, good[:-7])
    assert r.status_code == 400
    status = status_pb2.Status.FromString(r.content)
    assert status.code == 400 and "malformed" in status.message
    assert post(serve, good, ctype="text/plain").status_code == 415
    assert post(serve, good, encoding="br").status_code == 415
    assert post(serve, good, token=None).status_code == 401
    assert post(serve, good, token="wrong").status_code == 401
    assert post(serve, b"\x1f\x8b\x08\x00not really gzip", encoding="gzip").status_code == 400
    assert post(serve, gzip.compress(good)[:-10], encoding="gzip").status_code == 400  # truncated gzip
    assert post(serve, b"x" * (1 << 20 + 1)).status_code == 413  # over the 1 MiB limit
    bomb = gzip.compress(b"\x00" * (8 << 20))  # ~8 KB that inflates to 8 MiB
    assert len(bomb) < 64 << 10
    assert post(serve, bomb, encoding="gzip").status_code == 413
    r = post(serve, b"{not json", ctype="application/json")
    assert r.status_code == 400 and r.json()["code"] == 400
    assert post(serve, b"[1, 2]", ctype="application/json").status_code == 400
    # valid: protobuf+gzip and JSON (hex ids, as OTLP/JSON writes them)
    assert post(serve, gzip.compress(good), encoding="gzip").status_code == 200
    r = post(serve, request_to_json(requests[2]).encode(), ctype="application/json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert json.loads(r.content) == {}
    tids = {format(runs[k].trace_id, "032x") for k in (1, 2)}
    serve.wait_for(lambda: len([r for r in serve.records() if r["trace_id"] in tids]) == 6, what="valid traces")
    health = serve.health()
    assert health["status"] == "ok" and health["internal_errors"] == 0
    assert health["rejected_requests"] >= 12
    corrected = [r for r in serve.records() if r["trace_id"] in tids and r["metadata"]["status"] == "corrected"]
    assert len(corrected) == 4
