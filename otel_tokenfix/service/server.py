"""``otel-tokenfix serve``: run the gRPC and HTTP receivers around one :class:`Pipeline`.

Shutdown order (SIGTERM/SIGINT, or :meth:`TokenFixService.stop`): health says NOT_SERVING, both
receivers stop accepting and let in-flight requests finish, then every held trace is released (corrected
with the edits seen so far, or marked incomplete), every triplet is flushed, and the forward queue gets
``forward_timeout`` seconds to drain. Nothing received is dropped without a counter and a log line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .forward import Forwarder
from .grpc_server import GrpcReceiver
from .pipeline import Pipeline, PipelineOptions

log = logging.getLogger("otel_tokenfix.service")

ENV_TOKENIZERS = "OTEL_TOKENFIX_TOKENIZERS"  # "MODEL=DIR,MODEL2=DIR2" and/or a bare "DIR" default
ENV_DEFAULT_TOKENIZER = "OTEL_TOKENFIX_DEFAULT_TOKENIZER"
ENV_TOKEN = "OTEL_TOKENFIX_TOKEN"


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host defaults to loopback); ``[::1]:PORT`` for IPv6."""
    value = value.strip()
    if value.isdigit():
        return default_host, int(value)
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_tokenizer_specs(specs: list[str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``MODEL=SPEC`` pairs and a bare ``SPEC`` as the default (key ``*``); SPEC is a directory, a tokenizer
    file or ``builtin:qwen``. ``OTEL_TOKENFIX_TOKENIZERS`` and ``OTEL_TOKENFIX_DEFAULT_TOKENIZER`` (the SDK
    path's variables) come first, so the command line wins."""
    env = os.environ if env is None else env
    items: list[str] = []
    raw = env.get(ENV_TOKENIZERS, "")
    items.extend(p for p in (s.strip() for s in raw.split(",")) if p)
    default = (env.get(ENV_DEFAULT_TOKENIZER) or "").strip()
    out: dict[str, str] = {"*": default} if default else {}
    items.extend(specs)
    for item in items:
        model, sep, path = item.partition("=")
        if sep and model and not os.path.exists(item) and not item.startswith("builtin:"):
            out[model.strip()] = path.strip()
        else:
            out["*"] = item.strip()
    return out


def load_tokenizers(specs: Mapping[str, str]) -> Any:
    """Load (and warm) every tokenizer now, once per directory, and return the SDK path's
    ``TokenizerResolver`` over them: model names match the same way on both doors (exact, case-insensitive,
    last path component, then the default)."""
    from ..sdk.tokenizers import TokenizerResolver, load_spec

    cache: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    for model, spec in specs.items():
        key = spec if spec.startswith("builtin:") else os.path.realpath(spec)
        if key not in cache:
            cache[key] = load_spec(spec)
            warm_up(cache[key])
        loaded[model] = cache[key]
    default = loaded.pop("*", None)
    if not loaded and default is None:
        return {}
    return TokenizerResolver(loaded, default)


def warm_up(tokenizer: Any) -> None:
    """Run one tiny correction so the engine's per-tokenizer table (seconds for a 150k vocabulary) is
    built before the service says it is ready, not on the first trace."""
    from ..engine import correct_text

    try:
        ids = tokenizer.encode("The capital is Lyon.", add_special_tokens=False)
        correct_text(tokenizer, ids, "The capital is Paris.")
    except Exception as exc:  # noqa: BLE001 - a tokenizer the engine rejects is reported per span later
        log.warning("tokenizer warm-up failed: %s", exc)


@dataclass
class ServeConfig:
    grpc: str | None = "127.0.0.1:4327"
    http: str | None = "127.0.0.1:4328"
    output: str = "tokenfix-triplets.jsonl"
    fsync: bool = False
    #: a mapping model -> tokenizer, a ``TokenizerResolver`` or one tokenizer (see ``as_lookup``)
    tokenizers: Any = field(default_factory=dict)
    tokenizer_names: list[str] = field(default_factory=list)
    token: str | None = None
    forward: str | None = None
    forward_headers: list[tuple[str, str]] = field(default_factory=list)
    forward_timeout: float = 10.0
    forward_max_elapsed: float = 60.0
    max_message_bytes: int = 64 << 20
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    shutdown_grace: float = 10.0
    stats_interval: float = 10.0
    spool: str | None = None


class _HttpThread:
    """uvicorn on a socket we bound ourselves (port 0 works; the real port is known before start)."""

    def __init__(self, app: Any, host: str, port: int, grace: float = 10.0) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.sock.setblocking(False)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=int(max(1, grace)))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="tokenfix-http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("HTTP server did not start")

    def stop(self, grace: float) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=grace + 2.0)


class TokenFixService:
    def __init__(self, config: ServeConfig) -> None:
        from ..triplets.sinks import JsonlSink

        self.config = config
        self.rejected = 0
        self.forwarder = None
        if config.forward:
            self.forwarder = Forwarder(config.forward, headers=config.forward_headers, timeout=config.forward_timeout,
                                       max_elapsed=config.forward_max_elapsed,
                                       max_message_bytes=config.max_message_bytes)
        sink = JsonlSink(config.output, fsync=config.fsync)
        journal = None
        record_filter = None
        if config.spool:
            from .journal import SpoolJournal

            journal = SpoolJournal(config.spool, config.output)
            record_filter = journal.fresh
        self.journal = journal
        self.pipeline = Pipeline(tokenizers=config.tokenizers, sink=sink, options=config.pipeline,
                                 forwarder=self.forwarder, journal=journal, record_filter=record_filter)
        self.grpc: GrpcReceiver | None = None
        self.http: _HttpThread | None = None
        if config.grpc:
            host, port = parse_hostport(config.grpc)
            self.grpc = GrpcReceiver(self.pipeline, host=host, port=port, token=config.token,
                                     max_message_bytes=config.max_message_bytes, on_reject=self._reject)
        if config.http:
            from .http_app import make_app

            host, port = parse_hostport(config.http)
            app = make_app(self.pipeline, token=config.token, max_body_bytes=config.max_message_bytes,
                           health=self.pipeline.snapshot, on_reject=self._reject)
            self.http = _HttpThread(app, host, port, config.shutdown_grace)
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False

    def _reject(self) -> None:
        with self.pipeline._lock:  # noqa: SLF001 - counters share the pipeline lock
            self.pipeline.stats.rejected_requests += 1

    @property
    def endpoints(self) -> dict[str, str]:
        out = {}
        if self.grpc:
            out["grpc"] = f"{_host(self.grpc.host)}:{self.grpc.port}"
        if self.http:
            out["http"] = f"http://{_host(self.http.host)}:{self.http.port}"
        return out

    def start(self) -> None:
        if self.journal is not None:
            replayed = self.journal.replay(self.pipeline)
            if replayed:
                log.info("spool: replayed %d unfinished request(s)", replayed)
        self.pipeline.start()
        if self.grpc:
            self.grpc.start()
        if self.http:
            self.http.start()

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
        grace = self.config.shutdown_grace
        log.info("shutting down: no new requests; finishing in-flight requests and held traces")
        threads = []
        if self.grpc:
            threads.append(threading.Thread(target=self.grpc.stop, args=(grace,)))
        if self.http:
            threads.append(threading.Thread(target=self.http.stop, args=(grace,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.pipeline.close(self.config.forward_timeout)
        if self.journal is not None:
            self.journal.close()
        log.info("stopped: %s", json.dumps(self.pipeline.snapshot(), sort_keys=True))
        self._stopped.set()

    def run_forever(self, ready: Any = None) -> None:
        """Start, serve until SIGTERM/SIGINT, shut down gracefully. ``ready(endpoints)`` after start."""
        stop_requested = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop_requested.set()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            settle_heap()
            if ready is not None:
                ready(self.endpoints)
            last, last_stats = time.monotonic(), None
            while not stop_requested.wait(0.2):
                if self.config.stats_interval > 0 and time.monotonic() - last >= self.config.stats_interval:
                    last = time.monotonic()
                    snap = self.pipeline.snapshot()
                    key = (snap["spans"], snap["triplets"], snap["rejected_requests"], snap["busy_requests"])
                    if key != last_stats:
                        last_stats = key
                        log.info("stats: %s", _summary(snap))
        finally:
            self.stop()
            for s, h in old.items():
                signal.signal(s, h)


def settle_heap() -> None:
    """Exempt what start-up built (tokenizers, engine tables: ~80k objects) from the cyclic garbage
    collector, once, in the serving process, and collect young objects less often.

    Why: a full collection walks every tracked object; with the tables alive each took 40-80 ms and ran
    every ~0.25 s under load (about a fifth of the service's time). Frozen objects are never walked or
    freed by the collector (reference counting still frees them), and start-up leaves no cyclic garbage
    worth keeping after the ``collect()`` below. ``OTEL_TOKENFIX_GC_FREEZE=0`` turns it off."""
    if os.environ.get("OTEL_TOKENFIX_GC_FREEZE", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


#: Young collections after this many net container allocations (CPython's default is 700). Why so many:
#: a request allocates tens of thousands of containers (span views, attribute indexes, 1k-element id and
#: log-prob lists) that all die once its traces are written; a young collection walks the ones still
#: alive, mostly those of requests in flight (each 1k-element list: every element): at 10k, the serve
#: benchmark spent 2-9% of its time in 6-28 ms young collections; at 100k none ran in a whole run, and
#: (a)/(b) gained ~10%. The bound stays: cyclic garbage waits for at most 100k allocations (a few tens of
#: MB), and a young collection then walks at most that many objects.
YOUNG_GC_THRESHOLD = 100_000


def _summary(snap: Mapping[str, Any]) -> str:
    keys = ("requests", "spans", "traces", "triplets", "corrected", "errors", "held_traces", "queued_spans",
            "rejected_requests", "busy_requests")
    text = " ".join(f"{k}={snap[k]}" for k in keys)
    fwd = snap.get("forward")
    if fwd:
        text += f" forwarded={fwd['forwarded_spans']} forward_failed={fwd['failed_spans']}"
    return text


def register_metrics(service: TokenFixService, meter_provider: Any = None) -> bool:
    """Observable counters of the service (``tokenfix.serve.*``) on ``meter_provider`` or the global one
    (a no-op unless one is configured, e.g. under ``opentelemetry-instrument`` with
    ``OTEL_METRICS_EXPORTER``). Returns False if they could not be registered."""
    try:
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions, Observation

        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("otel_tokenfix.service")
        names = ("requests", "spans", "traces", "triplets", "corrected", "fallback", "errors", "rejected_requests",
                 "busy_requests", "internal_errors")

        def counter(name: str) -> Any:
            def cb(options: CallbackOptions) -> list[Observation]:
                return [Observation(service.pipeline.snapshot()[name])]

            return cb

        for name in names:
            meter.create_observable_counter(f"tokenfix.serve.{name}", callbacks=[counter(name)])
        for name in ("held_spans", "held_traces", "queued_spans", "queued_ids"):
            meter.create_observable_gauge(f"tokenfix.serve.{name}", callbacks=[counter(name)])
        return True
    except Exception:  # noqa: BLE001 - metrics are optional
        log.debug("service metrics not registered", exc_info=True)
        return False
