"""Hostile OTLP payloads against a real ``otel-tokenfix serve`` process, and its security properties:
nothing crashes the service, every rejection gets the protocol's status and a reason and is counted,
nothing is evaluated, the token, body and decompressed-size limits hold, loopback by default."""

from __future__ import annotations

import gzip
import json
import os
import socket
import zlib

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_tokenfix.service.server import ServeConfig, parse_hostport

from . import hostile
from .service_harness import start_serve

TOKEN = "s3cret-t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PB = {"content-type": "application/x-protobuf"}
OK_BODY = hostile.otlp_request(
    [
        {
            "trace_id": b"\x01" * 16,
            "span_id": b"\x02" * 8,
            "parent_span_id": b"",
            "name": "root",
            "start": 1,
            "end": 2,
            "flags": 0,
            "kind": 1,
            "attributes": {},
            "events": [],
            "resource": {},
        }
    ]
)


@pytest.fixture(scope="module")
def qwen_dir(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def serve(qwen_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "triplets.jsonl"
    sp = start_serve(
        out, qwen_dir, "--token", TOKEN, "--root-grace", "0.1", "--max-message-mib", "8", grpc="127.0.0.1:0"
    )
    sp.output = out
    yield sp
    if sp.alive():
        sp.stop()


def health(sp) -> dict:
    r = httpx.get(f"{sp.http}/healthz", timeout=10)
    assert r.status_code == 200
    return r.json()


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


@pytest.fixture(autouse=True)
def no_canary():
    if os.path.exists(hostile.CANARY):
        os.remove(hostile.CANARY)
    yield
    assert not os.path.exists(hostile.CANARY), "input was evaluated as code"


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile.otlp_body)
def test_hostile_otlp_never_crashes_the_service_and_every_rejection_is_explained(serve, body):
    before = health(serve)["rejected_requests"]
    r = httpx.post(f"{serve.http}/v1/traces", content=body, headers={**PB, **AUTH}, timeout=60)
    assert r.status_code in (200, 400, 413), (r.status_code, r.text[:300])
    if r.status_code != 200:
        from google.rpc import status_pb2

        status = status_pb2.Status.FromString(r.content)
        assert status.message, "a rejection must say why"
        assert health(serve)["rejected_requests"] == before + 1
    assert serve.alive(), serve.stderr_text()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile.otlp_json_body, gz=st.booleans())
def test_hostile_otlp_json_never_crashes_the_service_and_every_rejection_is_explained(serve, body, gz):
    before = health(serve)["rejected_requests"]
    headers = {"content-type": "application/json", **AUTH}
    if gz:
        body, headers = gzip.compress(body), {**headers, "content-encoding": "gzip"}
    r = httpx.post(f"{serve.http}/v1/traces", content=body, headers=headers, timeout=60)
    assert r.status_code in (200, 400, 413), (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.json().get("message"), "a rejection must say why"
        assert health(serve)["rejected_requests"] == before + 1
    assert serve.alive(), serve.stderr_text()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile.otlp_body)
def test_hostile_otlp_over_grpc_gets_a_status_never_a_crash(serve, body):
    with grpc.insecure_channel(serve.grpc) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        try:
            assert export(body, timeout=60, metadata=(("authorization", f"Bearer {TOKEN}"),)) == b""
        except grpc.RpcError as err:
            assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
                err.code(),
                err.details(),
            )
            assert err.details()
    assert serve.alive(), serve.stderr_text()


def test_after_the_fuzz_the_service_is_healthy_and_stops_cleanly(serve):
    """Runs after the fuzz (same module-scoped process): held hostile traces are released, nothing
    internal failed, SIGTERM exits 0, every triplet line is valid JSON."""
    info = health(serve)
    assert info["internal_errors"] == 0, serve.stderr_text()
    assert serve.stop() == 0, serve.stderr_text()
    for line in serve.output.read_bytes().splitlines() if serve.output.exists() else []:
        json.loads(line)


# --- security ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """No tokenizer needed: these requests never get that far."""
    out = tmp_path_factory.mktemp("guarded") / "triplets.jsonl"
    sp = start_serve(out, None, "--token", TOKEN, "--max-message-mib", "1", grpc="127.0.0.1:0")
    yield sp
    if sp.alive():
        sp.stop()


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}, {"authorization": f"Basic {TOKEN}"}]
)
def test_http_refuses_requests_without_the_token(guarded, headers):
    r = httpx.post(f"{guarded.http}/v1/traces", content=OK_BODY, headers={**PB, **headers}, timeout=10)
    assert r.status_code == 401
    ok = httpx.post(f"{guarded.http}/v1/traces", content=OK_BODY, headers={**PB, **AUTH}, timeout=10)
    assert ok.status_code == 200


def test_grpc_refuses_requests_without_the_token(guarded):
    with grpc.insecure_channel(guarded.grpc) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as err:
            export(OK_BODY, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            export(OK_BODY, timeout=10, metadata=(("authorization", "Bearer nope"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert export(OK_BODY, timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),)) == b""
        with pytest.raises(grpc.RpcError) as err:  # over the 1 MiB limit
            export(b"\x0a" + bytes(2 << 20), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_body_over_the_limit_is_refused(guarded):
    big = bytes(2 << 20)
    r = httpx.post(f"{guarded.http}/v1/traces", content=big, headers={**PB, **AUTH}, timeout=30)
    assert r.status_code == 413

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(4):
            yield bytes(512 << 10)

    r = httpx.post(f"{guarded.http}/v1/traces", content=chunks(), headers={**PB, **AUTH}, timeout=30)
    assert r.status_code == 413
    assert guarded.alive()


def test_gzip_bomb_is_refused_without_inflating_it(guarded):
    """~1 MiB of gzip that inflates to 1 GiB: refused with 413, and the service's peak memory stays far
    below what inflating it would take."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    bomb = b"".join(comp.compress(block) for _ in range(1024)) + comp.flush()
    assert len(bomb) < (1 << 20)
    peak_before = rss_kib(guarded.proc.pid)
    r = httpx.post(
        f"{guarded.http}/v1/traces", content=bomb, headers={**PB, **AUTH, "content-encoding": "gzip"}, timeout=60
    )
    assert r.status_code == 413
    growth_mib = (rss_kib(guarded.proc.pid) - peak_before) / 1024
    assert growth_mib < 64, growth_mib
    small = gzip.compress(OK_BODY)
    r = httpx.post(
        f"{guarded.http}/v1/traces", content=small, headers={**PB, **AUTH, "content-encoding": "gzip"}, timeout=10
    )
    assert r.status_code == 200
    assert guarded.alive()


def test_binds_loopback_unless_told_otherwise(guarded):
    assert parse_hostport(ServeConfig().http)[0] == "127.0.0.1"
    assert parse_hostport(ServeConfig().grpc)[0] == "127.0.0.1"
    assert parse_hostport("4318") == ("127.0.0.1", 4318)
    assert guarded.http.startswith("http://127.0.0.1:")
    # the listening sockets of the process are on 127.0.0.1 only
    port = int(guarded.http.rsplit(":", 1)[1])
    other = _non_loopback_address()
    if other is not None:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((other, port)) != 0, f"reachable on {other}"


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outward interface
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr
