"""Real ``otel-tokenfix serve`` processes for the crash, fuzz and security tests (and ``bench/soak.py``).

Why not the service tests' helper: these tests kill the process with SIGKILL and restart it on the
same spool, time the recovery, and count triplets by (trace_id, span_id); keeping the helper here means
a change in another folder cannot silently weaken the reliability figures.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_tokenfix.otlp.decode import attributes
from otel_tokenfix.service.child import ServeProcess
from otel_tokenfix.service.child import start_serve as _start

from .harness import (
    MODEL,
    Expect,
    Ledger,
    Sampler,
    Workload,
    _project,
    account,
    differential_check,
    run_agents,
)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Serve = ServeProcess  # one ``otel-tokenfix serve`` child process (the package's launcher)


def start_serve(
    output: Path,
    tokenizer_dir: Path | None,
    *args: str,
    http: str = "127.0.0.1:0",
    grpc: str = "",
    env: dict | None = None,
    timeout: float = 120.0,
) -> Serve:
    """Spawn ``serve`` (quiet logs) and wait for its ready line (which comes after any spool replay)."""
    tokenizer = f"{MODEL}={tokenizer_dir}" if tokenizer_dir is not None else None
    return _start(output, "--log-level", "warning", *args, tokenizer=tokenizer, http=http, grpc=grpc, env=env,
                  timeout=timeout, cwd=REPO)


# --- workload as OTLP requests ------------------------------------------------------------------------------
def workload_requests(tokenizer: Any, cfg: Workload, spans_per_request: int = 40) -> tuple[list[bytes], Ledger]:
    """Run the simulated agents against a plain SDK (no processor) and cut the ended spans, in end
    order, into OTLP/protobuf requests: traces interleave and many traces span several requests."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    ledger = run_agents(tp, Sampler(tokenizer), cfg)
    tp.shutdown()
    spans = list(mem.get_finished_spans())
    bodies = [
        encode_spans(spans[i : i + spans_per_request]).SerializeToString()
        for i in range(0, len(spans), spans_per_request)
    ]
    return bodies, ledger


@dataclass
class Sender:
    """Posts requests like an OTLP exporter: retries on connection errors, timeouts, 429/5xx until
    acknowledged. Several threads, so a SIGKILL lands with requests in flight."""

    url: str  # http://HOST:PORT/v1/traces, or grpc://HOST:PORT
    bodies: list[bytes]
    threads: int = 4
    pace: float = 0.0  # seconds each sender thread waits between requests (a stream, not a burst)
    headers: dict = field(default_factory=lambda: {"content-type": "application/x-protobuf"})
    acked: set[int] = field(default_factory=set)
    attempts: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0
    _workers: list[threading.Thread] = field(default_factory=list)

    def set_url(self, url: str) -> None:
        with self.lock:
            self.url = url

    def _take(self) -> int | None:
        with self.lock:
            if self._next >= len(self.bodies):
                return None
            i = self._next
            self._next += 1
            return i

    def _post(self, client: Any, i: int) -> None:
        while True:
            with self.lock:
                url = self.url
                self.attempts += 1
            if url.startswith("grpc://"):
                if self._post_grpc(url[7:], i):
                    return
            else:
                try:
                    r = client.post(url, content=self.bodies[i], headers=self.headers, timeout=30)
                    if r.status_code == 200:
                        with self.lock:
                            self.acked.add(i)
                        return
                    if r.status_code not in (429, 502, 503, 504):
                        raise AssertionError(f"request {i} rejected: {r.status_code} {r.text[:200]}")
                except Exception as exc:  # connection refused/reset while the service is down: retry
                    if isinstance(exc, AssertionError):
                        raise
            with self.lock:
                self.retries += 1
            time.sleep(0.05)

    def _post_grpc(self, target: str, i: int) -> bool:
        """One OTLP/gRPC Export; a fresh channel per attempt (no reconnect backoff after a restart)."""
        import grpc

        retryable = (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        with grpc.insecure_channel(target) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            try:
                export(self.bodies[i], timeout=30)
            except grpc.RpcError as err:
                if err.code() not in retryable:
                    raise AssertionError(f"request {i} rejected: {err.code()} {err.details()}") from None
                return False
        with self.lock:
            self.acked.add(i)
        return True

    def start(self) -> None:
        import httpx

        def work() -> None:
            with httpx.Client() as client:
                while (i := self._take()) is not None:
                    self._post(client, i)
                    if self.pace:
                        time.sleep(self.pace)

        self._workers = [threading.Thread(target=work, daemon=True) for _ in range(self.threads)]
        for t in self._workers:
            t.start()

    def join(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        assert len(self.acked) == len(self.bodies), f"only {len(self.acked)} of {len(self.bodies)} acknowledged"


def read_triplets(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def triplet_view(records: list[dict]) -> dict[int, dict[str, Any]]:
    """Triplet records as the span attributes the differential check reads (keyed by span id)."""
    out: dict[int, dict[str, Any]] = {}
    for r in records:
        meta = r.get("metadata") or {}
        out[int(r["span_id"], 16)] = {
            "tokenfix.status": meta.get("status"),
            "tokenfix.method": meta.get("method", "<none>"),
            "tokenfix.response.token_ids": r["response"]["token_ids"],
        }
    return out


def expected_keys(ledger: Ledger) -> set[tuple[str, str]]:
    return {(format(e.trace_id, "032x"), format(e.span_id, "016x")) for e in ledger.llm.values()}


def run_crash_recovery(
    tokenizer: Any,
    *,
    traces: int = 600,
    tokenizer_dir: Path | None = None,
    workdir: Path | None = None,
    spool: bool = True,
    kill_after: float = 0.4,
    seed: int = 21,
    protocol: str = "http",
) -> tuple[list[tuple[str, str]], bool]:
    """Send a workload to ``serve --spool``; SIGKILL it once ``kill_after`` of the requests are
    acknowledged (others in flight), restart it on the same spool and output while the sender keeps
    retrying, then SIGTERM. Every LLM span must have exactly one triplet, and each must pass the
    differential check. With ``spool=False`` the same run shows what a crash loses without it."""
    import tempfile

    tmp = Path(workdir or tempfile.mkdtemp(prefix="tokenfix-crash-"))
    if tokenizer_dir is None:
        tokenizer_dir = tmp / "tokenizer"
        tokenizer.save_pretrained(tokenizer_dir)
    out = tmp / "triplets.jsonl"
    spool_dir = tmp / "spool"
    cfg = Workload(threads=8, spans=traces * 8, seed=seed, p_llm_root=0.0)
    bodies, ledger = workload_requests(tokenizer, cfg, spans_per_request=20)
    port, gport = free_port(), free_port()
    args = ["--root-grace", "0.5"] + (["--spool", str(spool_dir)] if spool else [])
    addr = {"http": f"127.0.0.1:{port}", "grpc": f"127.0.0.1:{gport}"}
    serve = start_serve(out, tokenizer_dir, *args, **addr)
    cold_start_s = serve.ready_s
    url = f"grpc://{serve.grpc}" if protocol == "grpc" else f"{serve.http}/v1/traces"
    sender = Sender(url, bodies, pace=0.05)
    t_start = time.monotonic()
    sender.start()
    target = int(len(bodies) * kill_after)
    # kill once enough is acknowledged *and* some triplets are on disk: the restart must then both
    # replay held traces and skip triplets already written
    while time.monotonic() - t_start < 300:
        if len(sender.acked) >= target and (not out.exists() or out.stat().st_size > 0):
            if out.exists():
                break
        time.sleep(0.005)
    in_flight = sender._next - len(sender.acked)
    serve.kill9()
    t_kill = time.monotonic()
    acked_at_kill = len(sender.acked)
    lines_at_kill = len(read_triplets(out))
    serve = start_serve(out, tokenizer_dir, *args, **addr)
    recovery_s = time.monotonic() - t_kill
    sender.join()
    rc = serve.stop()
    spool_left = sum(p.stat().st_size for p in spool_dir.glob("spool-*.log")) if spool else 0
    records = read_triplets(out)
    got = Counter((r["trace_id"], r["span_id"]) for r in records)
    want = expected_keys(ledger)
    missing = want - set(got)
    dups = {k: n for k, n in got.items() if n > 1}
    unexpected = set(got) - want
    check = differential_check(tokenizer, ledger.llm, triplet_view(records))
    ok = rc == 0 and not missing and not dups and not unexpected and check.wrong == 0 and lines_at_kill > 0
    mode = "with --spool" if spool else "without --spool"
    rows = [
        (f"OTLP/{protocol} requests sent ({mode})", f"{len(bodies)} ({sum(len(b) for b in bodies) / 2**20:.1f} MiB)"),
        ("spans / LLM spans sent", f"{len(ledger.ended)} / {len(ledger.llm)}"),
        ("acknowledged before SIGKILL / in flight at SIGKILL", f"{acked_at_kill} / {in_flight}"),
        ("triplet lines on disk at SIGKILL", f"{lines_at_kill}"),
        ("sender retries (service down or restarting)", f"{sender.retries}"),
        ("cold start to ready (for comparison)", f"{cold_start_s:.2f} s"),
        ("recovery: SIGKILL -> restarted, spool replayed, ready", f"{recovery_s:.2f} s"),
        ("triplets expected / written", f"{len(want)} / {sum(got.values())}"),
        ("missing / duplicated / unexpected triplets", f"{len(missing)} / {len(dups)} / {len(unexpected)}"),
        ("differential check: decode mismatch / lost tokens", f"{len(check.text_mismatch)} / {len(check.lost_tokens)}"),
        ("exit code after SIGTERM", f"{rc}"),
        ("spool bytes left after the clean stop", f"{spool_left}"),
    ]
    return rows, ok


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


def run_service_soak(
    tokenizer: Any,
    *,
    spans: int = 10_000,
    tokenizer_dir: Path | None = None,
    workdir: Path | None = None,
    seed: int = 29,
) -> tuple[list[tuple[str, str]], bool]:
    """Workload -> 6 concurrent OTLP/HTTP senders -> ``serve --forward`` -> a counting next hop; then
    SIGTERM. Every span forwarded once, every LLM span one triplet, both pass the differential check."""
    import tempfile

    tmp = Path(workdir or tempfile.mkdtemp(prefix="tokenfix-service-soak-"))
    if tokenizer_dir is None:
        tokenizer_dir = tmp / "tokenizer"
        tokenizer.save_pretrained(tokenizer_dir)
    bodies, ledger = workload_requests(tokenizer, Workload(threads=8, spans=spans, seed=seed), spans_per_request=25)
    hop = NextHop()
    out = tmp / "triplets.jsonl"
    serve = start_serve(out, tokenizer_dir, "--root-grace", "0.5", "--forward", hop.url)
    t0 = time.monotonic()
    try:
        sender = Sender(f"{serve.http}/v1/traces", bodies, threads=6)
        sender.start()
        sender.join()
        rc = serve.stop()
    finally:
        hop.close()
    seconds = time.monotonic() - t0
    acc = account(ledger.ended, hop.received)
    records = read_triplets(out)
    got = Counter((r["trace_id"], r["span_id"]) for r in records)
    want = expected_keys(ledger)
    fwd_check = differential_check(tokenizer, ledger.llm, hop.spans)
    trip_check = differential_check(tokenizer, ledger.llm, triplet_view(records))
    edited = sum(1 for e in ledger.llm.values() if e.edits)
    rows = [
        ("requests / spans / LLM spans sent", f"{len(bodies)} / {len(ledger.ended)} / {len(ledger.llm)}"),
        ("spans forwarded to the next hop", f"{acc.received}"),
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
        ("wall time (send + graceful stop)", f"{seconds:.1f} s"),
        ("exit code after SIGTERM", f"{rc}"),
    ]
    ok = (
        rc == 0
        and acc.exact
        and set(got) == want
        and set(got.values()) == {1}
        and fwd_check.checked >= edited
        and fwd_check.wrong == 0
        and not fwd_check.not_corrected
        and trip_check.wrong == 0
        and not trip_check.not_corrected
    )
    return rows, ok


def expects_by_key(ledger: Ledger) -> dict[tuple[str, str], Expect]:
    return {(format(e.trace_id, "032x"), format(e.span_id, "016x")): e for e in ledger.llm.values()}


def random_bodies(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, 2000)) for _ in range(n)]


def rss_of(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process in MiB."""
    cur = peak = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def orphan_requests(n_spans: int, *, per_request: int = 100, tokens: int = 300, seed: int = 9) -> list[bytes]:
    """LLM spans whose parent never arrives (each its own trace): a flood of never-completing traces."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    rng = random.Random(seed)
    bodies = []
    for start in range(0, n_spans, per_request):
        req = ExportTraceServiceRequest()
        spans = req.resource_spans.add().scope_spans.add().spans
        for _ in range(min(per_request, n_spans - start)):
            sp = spans.add()
            sp.trace_id = rng.getrandbits(128).to_bytes(16, "big")
            sp.span_id = rng.getrandbits(64).to_bytes(8, "big")
            sp.parent_span_id = rng.getrandbits(64).to_bytes(8, "big")  # a root that never comes
            sp.name = "chat"
            sp.start_time_unix_nano, sp.end_time_unix_nano = 1, 2
            ids = AnyValue()
            ids.array_value.values.extend(AnyValue(int_value=rng.randrange(1000, 150000)) for _ in range(tokens))
            sp.attributes.extend(
                [
                    KeyValue(key="gen_ai.request.model", value=AnyValue(string_value=MODEL)),
                    KeyValue(key="tokenfix.response.token_ids", value=ids),
                ]
            )
        bodies.append(req.SerializeToString())
    return bodies
