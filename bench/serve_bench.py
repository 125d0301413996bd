"""Spans/s ingested by ``otel-tokenfix serve`` over OTLP/gRPC from a separate sender process.

Two workloads: (a) traces without LLM spans (10 spans each), (b) traces with one 1k-token LLM span and one
edit each (root + LLM span + the agent step carrying the edit). "Ingested" means end to end: from the
first request sent until the service has released every trace (corrected it and written its triplets;
``--root-grace 0``). Measured in the same run: the raw OTLP decode rate of the same request bytes
(``ParseFromString``, and parse + SpanView + reading each span's attributes as the middle does), and the
same pipeline run in this process, split into the token engine's part and the rest.

    .venv/bin/python -m bench.serve_bench [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# --- request construction ----------------------------------------------------------------------------------
def _kv(key, value):
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from otel_tokenfix.otlp.encode import set_any_value

    kv = KeyValue(key=key)
    set_any_value(kv.value, value)
    return kv


def _request(spans_by_trace):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([_kv("service.name", "bench-agent"), _kv("host.name", "bench")])
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    for spans in spans_by_trace:
        ss.spans.extend(spans)
    return req.SerializeToString()


def _requests(traces, per_request: int) -> list[bytes]:
    """Request bodies of ``per_request`` traces each."""
    return [_request(traces[i : i + per_request]) for i in range(0, len(traces), per_request)]


def plain_traces(n_traces: int, per_request: int, rng: random.Random) -> list[bytes]:
    """Traces of 10 spans (a root and 9 children with a few attributes each), no LLM span."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    traces = []
    t0 = 1_700_000_000_000_000_000
    for _ in range(n_traces):
        tid = rng.getrandbits(128).to_bytes(16, "big")
        root_id = rng.getrandbits(64).to_bytes(8, "big")
        spans = []
        for k in range(9):
            s = Span(trace_id=tid, span_id=rng.getrandbits(64).to_bytes(8, "big"), parent_span_id=root_id,
                     name=f"tool.call.{k}", start_time_unix_nano=t0 + k * 1000, end_time_unix_nano=t0 + k * 1000 + 900,
                     kind=Span.SPAN_KIND_INTERNAL, flags=0x100)
            s.attributes.extend([_kv("tool.name", f"search{k}"), _kv("tool.args", '{"q": "capital of France"}'),
                                 _kv("retry", k % 3), _kv("ok", True), _kv("latency_ms", 12.5)])
            spans.append(s)
        root = Span(trace_id=tid, span_id=root_id, name="agent.run", start_time_unix_nano=t0,
                    end_time_unix_nano=t0 + 10_000, flags=0x100)
        root.attributes.extend([_kv("agent.name", "bench"), _kv("episode", 1)])
        spans.append(root)
        traces.append(spans)
    return _requests(traces, per_request)


def llm_traces(tok, n_traces: int, per_request: int, rng: random.Random, tokens: int = 1000) -> list[bytes]:
    """Traces of root + one LLM span (``tokens`` sampled ids, logprobs) + a step span editing one word."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    words = ("the model answered that the capital of France is Lyon and then explained why Paris is larger "
             "while Rome remains the capital of Italy and Madrid the capital of Spain").split()
    text_rng = random.Random(7)
    pieces: list[str] = []
    while len(tok.encode(" ".join(pieces), add_special_tokens=False)) < tokens:
        pieces.extend(text_rng.choice(words) for _ in range(50))
    ids = tok.encode(" ".join(pieces), add_special_tokens=False)[:tokens]
    text = tok.decode(ids)
    prompt = tok.encode("Tell me about European capitals.", add_special_tokens=False)
    variants = []
    for v in range(8):  # a few different edit points
        at = text.find(" Lyon", len(text) * v // 9)
        at = at if at >= 0 else text.find(" Lyon")
        variants.append(text[:at] + " Paris" + text[at + 5:])
    traces = []
    t0 = 1_700_000_000_000_000_000
    for n in range(n_traces):
        # distinct per span, as in real traces: equal strings would hit the middle's parse cache
        logprobs = [round(-0.01 * ((i + n) % 50) - 1e-6 * n, 6) for i in range(len(ids))]
        tid = rng.getrandbits(128).to_bytes(16, "big")
        root_id = rng.getrandbits(64).to_bytes(8, "big")
        llm_id = rng.getrandbits(64).to_bytes(8, "big")
        llm = Span(trace_id=tid, span_id=llm_id, parent_span_id=root_id, name="openai.chat.completion",
                   start_time_unix_nano=t0 + 10, end_time_unix_nano=t0 + 500, flags=0x100)
        llm.attributes.extend([
            _kv("prompt_token_ids", prompt), _kv("response_token_ids", ids), _kv("gen_ai.request.model", "qwen2.5"),
            _kv("gen_ai.response.id", f"chatcmpl-{n}"), _kv("gen_ai.completion.0.content", text),
            _kv("logprobs.content", json.dumps([{"token": "", "logprob": lp} for lp in logprobs])),
        ])
        step = Span(trace_id=tid, span_id=rng.getrandbits(64).to_bytes(8, "big"), parent_span_id=root_id,
                    name="agent.step", start_time_unix_nano=t0 + 600, end_time_unix_nano=t0 + 700, flags=0x100)
        ev = step.events.add(name="text.edited", time_unix_nano=t0 + 650)
        ev.attributes.extend([_kv("tokenfix.edit.text", variants[n % len(variants)]),
                              _kv("tokenfix.edit.target.span_id", llm_id.hex())])
        root = Span(trace_id=tid, span_id=root_id, name="agent.run", start_time_unix_nano=t0,
                    end_time_unix_nano=t0 + 1000, flags=0x100)
        traces.append([llm, step, root])
    return _requests(traces, per_request)


# --- the sender process -------------------------------------------------------------------------------------
def _write_requests(path: Path, requests: list[bytes]) -> None:
    with path.open("wb") as fh:
        for body in requests:
            fh.write(struct.pack(">I", len(body)))
            fh.write(body)


def _read_requests(path: str) -> list[bytes]:
    data = Path(path).read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        out.append(data[off + 4: off + 4 + n])
        off += 4 + n
    return out


def _sender(path: str, target: str, in_flight: int, start_q) -> None:
    import grpc

    requests = _read_requests(path)
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 256 << 20)]) as ch:
        call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        grpc.channel_ready_future(ch).result(timeout=30)
        start_q.put(time.time())
        pending = []
        for body in requests:
            pending.append(call.future(body, timeout=600))
            if len(pending) >= in_flight:
                pending.pop(0).result()
        for f in pending:
            f.result()
    start_q.put(time.time())


# --- measurement --------------------------------------------------------------------------------------------
def _health(http: str) -> dict:
    with urllib.request.urlopen(f"{http}/healthz", timeout=10) as resp:
        return json.loads(resp.read())


def _start_serve(out: Path, tok_dir: Path) -> tuple[subprocess.Popen, str, str]:
    cmd = [sys.executable, "-m", "otel_tokenfix.cli.main", "serve", "-o", str(out), "--grpc", "127.0.0.1:0",
           "--http", "127.0.0.1:0", "--root-grace", "0", "--stats-interval", "0", "--log-level", "warning",
           "--tokenizer", f"qwen2.5={tok_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("otel-tokenfix serve ready"):
        proc.kill()
        raise RuntimeError(f"serve did not start: {line!r}")
    parts = dict(p.split("=", 1) for p in line.split()[3:])
    return proc, parts["grpc"], parts["http"]


def measure_serve(requests: list[bytes], n_spans: int, n_traces: int, tok_dir: Path, tmp: Path, name: str) -> dict:
    out = tmp / f"{name}.jsonl"
    proc, grpc_addr, http = _start_serve(out, tok_dir)
    try:
        path = tmp / f"{name}.bin"
        _write_requests(path, requests)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        sender = ctx.Process(target=_sender, args=(str(path), grpc_addr, 4, q))
        sender.start()
        t0 = q.get(timeout=120)
        while True:
            h = _health(http)
            if h["traces"] >= n_traces and h["spans"] >= n_spans:
                break
            if proc.poll() is not None:
                raise RuntimeError("serve died")
            time.sleep(0.01)
        t1 = time.time()
        sent_done = q.get(timeout=60)
        sender.join(30)
        return {"spans": h["spans"], "traces": h["traces"], "triplets": h["triplets"], "corrected": h["corrected"],
                "seconds": t1 - t0, "send_seconds": sent_done - t0, "internal_errors": h["internal_errors"]}
    finally:
        proc.terminate()
        proc.wait(60)


def measure_decode(requests: list[bytes], repeat: int = 2) -> tuple[float, float]:
    """Seconds to (parse) and (parse + SpanView + read every attribute) all ``requests``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from otel_tokenfix.otlp.decode import request_views

    best_parse = best_views = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for body in requests:
            ExportTraceServiceRequest.FromString(body)
        best_parse = min(best_parse, time.perf_counter() - t)
        t = time.perf_counter()
        for body in requests:
            for view in request_views(ExportTraceServiceRequest.FromString(body)):
                for key in view.attributes:
                    view.attributes[key]
        best_views = min(best_views, time.perf_counter() - t)
    return best_parse, best_views


def measure_inprocess(requests: list[bytes], tok, tmp: Path, repeat: int = 3) -> tuple[float, float]:
    """(seconds, engine seconds) of the service pipeline run in this process on the same request bytes,
    with the serving process's settings (root grace 0, JSONL sink, GC): parse, SpanViews, assembly, correction,
    records, write; the median of ``repeat`` runs. The engine part is the time inside the corrector's calls
    of the token engine, so "non-engine" = everything the service adds around it (no gRPC here)."""
    import statistics

    import otel_tokenfix.trace.corrector as corrector
    from otel_tokenfix.otlp.decode import parse_request
    from otel_tokenfix.service.pipeline import Pipeline, PipelineOptions
    from otel_tokenfix.service.server import settle_heap
    from otel_tokenfix.triplets.sinks import JsonlSink

    settle_heap()  # the serving process's collector settings (its start-up heap frozen)
    engine = [0.0]
    real = corrector._apply

    def timed(*args):
        t = time.perf_counter()
        try:
            return real(*args)
        finally:
            engine[0] += time.perf_counter() - t

    runs = []
    corrector._apply = timed
    try:
        for k in range(repeat):
            engine[0] = 0.0
            pipeline = Pipeline(tokenizers={"qwen2.5": tok}, sink=JsonlSink(tmp / f"inproc-{k}.jsonl"),
                                options=PipelineOptions(root_grace=0))
            t = time.perf_counter()
            for body in requests:
                pipeline.submit(parse_request(body), body)
            pipeline.close()
            runs.append((time.perf_counter() - t, engine[0]))
    finally:
        corrector._apply = real
    total = statistics.median(r[0] for r in runs)
    return total, next(e for t, e in runs if t == total)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the workload sizes")
    args = ap.parse_args(argv)
    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer

    tok = qwen_tokenizer()
    from otel_tokenfix.service.server import warm_up

    warm_up(tok)  # the engine's tables, as serve builds them at start (not counted in-process either)
    rng = random.Random(1)
    n_plain = max(10, int(6000 * args.scale))  # traces of 10 spans
    n_llm = max(10, int(3000 * args.scale))  # traces of 3 spans, one LLM span
    workloads = {
        "(a) no LLM spans": (plain_traces(n_plain, 50, rng), n_plain * 10, n_plain, n_plain * 10),
        "(b) 1k-token LLM span + 1 edit": (llm_traces(tok, n_llm, 25, rng), n_llm * 3, n_llm, n_llm),
    }
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tok_dir = tmp / "qwen"
        tok.save_pretrained(tok_dir)
        for name, (requests, n_spans, n_traces, unit) in workloads.items():
            parse_s, views_s = measure_decode(requests)
            r = measure_serve(requests, n_spans, n_traces, tok_dir, tmp, name.split()[0].strip("()"))
            mb = sum(len(b) for b in requests) / 1e6
            inproc = measure_inprocess(requests, tok, tmp)
            rows.append((name, n_spans, unit, r, parse_s, views_s, mb, inproc))
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'workload':32} {'spans':>6} {'MB':>6} {'end-to-end spans/s':>19} {'(unit)/s':>9} "
          f"{'acked spans/s':>14} {'parse spans/s':>14} {'parse+all-attrs spans/s':>24}")
    for name, n_spans, unit, r, parse_s, views_s, mb, _ in rows:
        serve_rate = n_spans / r["seconds"]
        unit_rate = unit / r["seconds"]
        acked = n_spans / r["send_seconds"]
        print(f"{name:32} {n_spans:>6} {mb:>6.1f} {serve_rate:>19,.0f} {unit_rate:>9,.0f} {acked:>14,.0f} "
              f"{n_spans / parse_s:>14,.0f} {n_spans / views_s:>24,.0f}")
    targets = {"(a) no LLM spans": 30_000, "(b) 1k-token LLM span + 1 edit": 3_000}
    print("ratios (same run): end-to-end (unit)/s vs its target; end-to-end spans/s vs the raw decode rates")
    for name, n_spans, unit, r, parse_s, views_s, *_ in rows:
        unit_rate, serve_rate = unit / r["seconds"], n_spans / r["seconds"]
        print(f"  {name:32} {unit_rate / targets[name]:>6.1%} of target {targets[name]:,}/s; "
              f"{serve_rate * parse_s / n_spans:>6.2%} of parse, {serve_rate * views_s / n_spans:>6.1%} of "
              f"parse+all-attrs")
    print("in process (same request bytes, no gRPC; median of 3): ms per unit, all / in the token engine / "
          "the rest (the service around the engine)")
    for name, _, unit, _, _, _, _, (total, engine) in rows:
        print(f"  {name:32} {total / unit * 1e3:8.3f} {engine / unit * 1e3:8.3f} {(total - engine) / unit * 1e3:8.3f}")
    for name, _, _, r, *_ in rows:
        print(f"  {name}: {r['traces']} traces, {r['triplets']} triplets, {r['corrected']} corrected, "
              f"{r['internal_errors']} internal errors, {r['seconds']:.2f}s end to end "
              f"(sender done after {r['send_seconds']:.2f}s)")
    print("end-to-end: first request sent -> every trace corrected and its triplets written; acked: until the "
          "sender's last request was acknowledged (spans held, correction queued); (unit)/s: end-to-end spans/s "
          "for (a), LLM spans/s for (b). Targets: (a) >= 30k spans/s, (b) >= 3k LLM spans/s.")


if __name__ == "__main__":
    main()
