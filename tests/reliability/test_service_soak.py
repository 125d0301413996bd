"""Exactly once through the service: every span sent to ``otel-tokenfix serve`` is forwarded to the next
hop exactly once (corrected LLM spans passing the differential check) and every LLM span gives exactly
one triplet — under concurrent senders, traces split across requests, then a graceful stop."""

from __future__ import annotations

import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_tokenfix.otlp.decode import attributes

from .harness import Workload, _project, account, differential_check, format_table
from .service_harness import Sender, expected_keys, read_triplets, start_serve, triplet_view


class NextHop:
    """A minimal OTLP/HTTP receiver standing in for the user's backend: counts every span by id."""

    def __init__(self) -> None:
        hop = self
        self.lock = threading.Lock()
        self.received: Counter[tuple[int, int]] = Counter()
        self.spans: dict[int, dict] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = ExportTraceServiceRequest.FromString(body)
                with hop.lock:
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            for sp in ss.spans:
                                key = (int.from_bytes(sp.trace_id, "big"), int.from_bytes(sp.span_id, "big"))
                                hop.received[key] += 1
                                attrs = attributes(sp.attributes)
                                if "tokenfix.status" in attrs:
                                    hop.spans[key[1]] = _project(attrs)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def qwen_dir(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen.save_pretrained(path)
    return path


@pytest.mark.soak
def test_service_forwards_every_span_once_and_writes_every_triplet_once(qwen, qwen_dir, tmp_path):
    from .service_harness import workload_requests

    spans = int(os.environ.get("OTEL_TOKENFIX_SOAK_SPANS", "40000")) // 4
    bodies, ledger = workload_requests(qwen, Workload(threads=8, spans=spans, seed=29), spans_per_request=25)
    hop = NextHop()
    out = tmp_path / "triplets.jsonl"
    serve = start_serve(out, qwen_dir, "--root-grace", "0.5", "--forward", hop.url)
    try:
        sender = Sender(f"{serve.http}/v1/traces", bodies, threads=6)
        sender.start()
        sender.join()
        rc = serve.stop()
    finally:
        hop.close()
    acc = account(ledger.ended, hop.received)
    records = read_triplets(out)
    got = Counter((r["trace_id"], r["span_id"]) for r in records)
    want = expected_keys(ledger)
    fwd_check = differential_check(qwen, ledger.llm, hop.spans)
    trip_check = differential_check(qwen, ledger.llm, triplet_view(records))
    rows = [
        ("requests / spans / LLM spans sent", f"{len(bodies)} / {len(ledger.ended)} / {len(ledger.llm)}"),
        ("spans forwarded", f"{acc.received}"),
        (
            "forwarded: missing / duplicated / unexpected",
            f"{len(acc.missing)} / {len(acc.duplicated)} / {len(acc.unexpected)}",
        ),
        ("triplets: expected / written / duplicated", f"{len(want)} / {len(got)} / {sum(n > 1 for n in got.values())}"),
        ("forwarded LLM spans checked / wrong", f"{fwd_check.checked} / {fwd_check.wrong}"),
        (
            "triplets checked / wrong / edited but not corrected",
            f"{trip_check.checked} / {trip_check.wrong} / {len(trip_check.not_corrected)}",
        ),
    ]
    print("\n" + format_table(rows))
    assert rc == 0, serve.stderr_text()
    assert acc.exact, dict(rows)
    assert set(got) == want and set(got.values()) == {1}, dict(rows)
    edited = sum(1 for e in ledger.llm.values() if e.edits)
    assert fwd_check.checked >= edited and fwd_check.wrong == 0 and not fwd_check.not_corrected, dict(rows)
    assert trip_check.wrong == 0 and not trip_check.not_corrected, dict(rows)
