"""The spool wired into the service pipeline, in process: the two ways a crash could duplicate or lose
triplets that a plain SIGKILL run hits only by chance, made deterministic."""

from __future__ import annotations

import shutil
import threading
from collections import Counter

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_tokenfix.otlp.decode import parse_request
from otel_tokenfix.service.journal import SpoolJournal
from otel_tokenfix.service.pipeline import Pipeline, PipelineOptions
from otel_tokenfix.triplets.sinks import JsonlSink

from .harness import MODEL
from .service_harness import read_triplets


def two_traces(qwen):
    """Trace 1: root + LLM span with an edit; trace 2 likewise. Returns the finished spans."""
    mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("t")
    for text, edited in (("Hello world, how are you?", "Hello there, how are you?"), ("One two three", "One 2 three")):
        ids = qwen.encode(text, add_special_tokens=False) + [151645]
        with tracer.start_as_current_span("agent") as root:
            with tracer.start_as_current_span(
                "chat",
                attributes={
                    "gen_ai.request.model": MODEL,
                    "tokenfix.response.token_ids": ids,
                    "tokenfix.prompt.token_ids": [1, 2, 3],
                    "gen_ai.completion.0.content": text,
                },
            ):
                pass
            root.add_event("text.edited", {"tokenfix.edit.text": edited})
    tp.shutdown()
    return list(mem.get_finished_spans())


def pipeline(qwen, spool_dir, out, journal=None):
    journal = journal or SpoolJournal(spool_dir, out)
    pipe = Pipeline(
        tokenizers={MODEL: qwen},
        sink=JsonlSink(out),
        journal=journal,
        record_filter=journal.fresh,
        options=PipelineOptions(root_grace=0.0),
    )
    return pipe, journal


def submit(pipe, body: bytes) -> None:
    pipe.submit(parse_request(body), body)


def keys(out) -> Counter:
    return Counter((r["trace_id"], r["span_id"]) for r in read_triplets(out))


def test_request_replayed_and_resent_by_the_client_gives_one_triplet_per_span(qwen, tmp_path):
    """The service fsynced a request and died before acknowledging it: the restart replays it from
    the spool *and* the client sends it again. Each LLM span still gets exactly one triplet."""
    spans = two_traces(qwen)
    body = encode_spans(spans).SerializeToString()
    out, spool_dir = tmp_path / "t.jsonl", tmp_path / "spool"
    pipe, journal = pipeline(qwen, spool_dir, out)
    journal.accepted(body, {s.context.trace_id for s in spans})  # durable, then SIGKILL before the ack
    journal.spool.close()
    pipe2, journal2 = pipeline(qwen, spool_dir, out)
    assert journal2.replay(pipe2) == 1
    submit(pipe2, body)  # the client's retry
    pipe2.close()
    journal2.close()
    got = keys(out)
    assert len(got) == 2 and set(got.values()) == {1}, got


class PausingJournal(SpoolJournal):
    """Lets a test hold one request handler between 'journaled' and 'handed to the assembly', the
    window in which another handler can release and flush the same trace."""

    def __init__(self, *args, pause_on: bytes, **kwargs):
        super().__init__(*args, **kwargs)
        self.pause_on = pause_on
        self.paused = threading.Event()
        self.resume = threading.Event()

    def accepted(self, raw, trace_ids):
        super().accepted(raw, trace_ids)
        if raw == self.pause_on:
            self.paused.set()
            self.resume.wait(30)


def test_request_accepted_while_its_trace_is_released_is_not_committed_early(qwen, tmp_path):
    """Two handler threads: request B (a late span of trace T) is journaled, then T is released and
    flushed from request A before B's span reaches the assembly. A crash right then (a copy of the
    spool and the output taken at that moment) must still produce B's triplet after the restart."""
    spans = two_traces(qwen)
    trace_t = spans[0].context.trace_id
    in_t = [s for s in spans if s.context.trace_id == trace_t]
    late = [s for s in in_t if s.name == "chat"]
    body_a = encode_spans([s for s in in_t if s.name != "chat"]).SerializeToString()
    body_b = encode_spans(late).SerializeToString()
    out, spool_dir = tmp_path / "t.jsonl", tmp_path / "spool"
    pipe, journal = pipeline(qwen, spool_dir, out, PausingJournal(spool_dir, out, pause_on=body_b))
    handler_b = threading.Thread(target=submit, args=(pipe, body_b), daemon=True)
    handler_b.start()
    assert journal.paused.wait(30)
    submit(pipe, body_a)  # T's root arrives; root_grace 0: T is released and flushed now
    crash = tmp_path / "crash"  # the disk as a SIGKILL right now would leave it
    shutil.copytree(spool_dir, crash / "spool")
    if out.exists():
        shutil.copy(out, crash / "t.jsonl")
    journal.resume.set()
    handler_b.join(30)
    pipe.close()
    journal.close()
    pipe2, journal2 = pipeline(qwen, crash / "spool", crash / "t.jsonl")
    journal2.replay(pipe2)
    pipe2.close()
    journal2.close()
    got = keys(crash / "t.jsonl")
    assert got[(format(trace_t, "032x"), format(late[0].context.span_id, "016x"))] == 1, got
