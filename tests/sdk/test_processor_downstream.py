"""The processor hands spans straight to an SDK ``BatchSpanProcessor``'s queue only when that is exactly what
its ``on_end`` would do; what reaches the exporter is the same as with the bare processor, sampled or not."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from otel_tokenfix.sdk import downstream
from otel_tokenfix.sdk.processor import TokenFixSpanProcessor


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.names.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS


class RecordOnlyOdd(Sampler):
    """Records every span but samples (exports) only those whose name ends in an even digit: the recorded,
    unsampled ones reach ``on_end`` and must be dropped by the batch processor's sampled check."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None):
        decision = Decision.RECORD_AND_SAMPLE if int(name[-1]) % 2 == 0 else Decision.RECORD_ONLY
        return SamplingResult(decision, attributes)

    def get_description(self) -> str:
        return "record-only-odd"


def test_batch_emit_only_for_an_unmodified_batch_span_processor() -> None:
    bsp = BatchSpanProcessor(Collect())
    assert downstream.batch_emit(bsp) == bsp._batch_processor.emit  # noqa: SLF001

    class Overriding(BatchSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:  # does more than the SDK's: must be called
            super().on_end(span)

    class Inheriting(BatchSpanProcessor):
        pass

    assert downstream.batch_emit(Overriding(Collect())) is None
    assert downstream.batch_emit(Inheriting(Collect())) is not None  # the SDK's own on_end
    assert downstream.batch_emit(SimpleSpanProcessor(Collect())) is None
    assert downstream.batch_emit(object()) is None
    for p in (bsp,):
        p.shutdown()


def test_a_changed_sdk_on_end_is_not_bypassed(monkeypatch) -> None:
    """If the SDK's ``on_end`` compiles to anything but the two statements we replicate, we call it."""

    def on_end_with_metrics(self, span):  # same names, one more statement
        if not (span.context and span.context.trace_flags.sampled):
            return
        self._batch_processor.emit(span)  # noqa: SLF001
        self._batch_processor.emit(span)  # noqa: SLF001

    monkeypatch.setattr(BatchSpanProcessor, "on_end", on_end_with_metrics)
    bsp = BatchSpanProcessor(Collect())
    try:
        assert downstream.batch_emit(bsp) is None
    finally:
        bsp.shutdown()


def _run(processor_for: str) -> list[str]:
    exporter = Collect()
    bsp = BatchSpanProcessor(exporter, schedule_delay_millis=60_000)
    processor = bsp if processor_for == "bare" else TokenFixSpanProcessor(bsp, timer_interval=None)
    provider = TracerProvider(sampler=RecordOnlyOdd())
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for i in range(3):
        with tracer.start_as_current_span(f"root{i}0"):
            for j in range(1, 5):
                with tracer.start_as_current_span(f"child{i}{j}"):
                    pass
            with tracer.start_as_current_span(f"llm{i}6", attributes={"response_token_ids": (1, 2, 3)}):
                pass
    provider.shutdown()
    return sorted(exporter.names)


def test_wrapped_batch_processor_exports_exactly_what_the_bare_one_does() -> None:
    bare, wrapped = _run("bare"), _run("wrapped")
    assert wrapped == bare
    assert "child01" not in bare and "child02" in bare and "llm06" in bare  # the sampler did its job
    assert len(bare) == 12  # per trace: the root, children 2 and 4, the LLM span


def test_the_fast_path_is_really_taken_for_a_batch_span_processor() -> None:
    bsp = BatchSpanProcessor(Collect())
    processor = TokenFixSpanProcessor(bsp, timer_interval=None)
    assert processor._downstream_emit is not None  # noqa: SLF001
    processor.downstream = SimpleSpanProcessor(Collect())  # swapping downstream recomputes it
    assert processor._downstream_emit is None  # noqa: SLF001
    processor.shutdown()
    bsp.shutdown()


def test_batch_push_appends_only_where_emit_would_just_append(caplog) -> None:
    """Not shut down, queue not full: the span is appended (what emit does, without asking the kernel for the
    pid); otherwise emit runs, so a full queue or a shut-down processor drops, logs and counts as the SDK does."""
    bsp = BatchSpanProcessor(Collect(), max_queue_size=4, max_export_batch_size=4, schedule_delay_millis=60_000)
    queue_processor = bsp._batch_processor  # noqa: SLF001
    push = downstream.batch_push(bsp)
    assert push is not None and push != queue_processor.emit
    worker_event = queue_processor._worker_awaken  # noqa: SLF001
    queue_processor._worker_awaken = threading.Event()  # noqa: SLF001 - watch the wake-up (the worker waits on its own)
    push_again = downstream.batch_push(bsp)  # captures this event
    for i in range(3):
        push_again(f"span{i}")
    assert list(queue_processor._queue) == ["span2", "span1", "span0"]  # noqa: SLF001 - appended on the left
    assert not queue_processor._worker_awaken.is_set()  # noqa: SLF001
    push_again("span3")  # a full batch: the worker is woken, as emit does
    assert queue_processor._worker_awaken.is_set()  # noqa: SLF001
    with caplog.at_level("WARNING"):
        push_again("span4")  # the queue is full: emit drops the oldest and says so
    assert "Queue full" in caplog.text and len(queue_processor._queue) == 4  # noqa: SLF001
    assert queue_processor._queue[0] == "span4"  # noqa: SLF001
    queue_processor._queue.clear()  # noqa: SLF001
    queue_processor._worker_awaken = worker_event  # noqa: SLF001 - so that shutdown wakes the worker
    bsp.shutdown()
    push_again("late")  # shut down: emit ignores it
    assert "late" not in queue_processor._queue  # noqa: SLF001


def test_a_changed_sdk_emit_is_called_not_replicated(monkeypatch) -> None:
    from opentelemetry.sdk._shared_internal import BatchProcessor

    real = BatchProcessor.emit

    def emit_and_count(self, data):  # does one thing more: must be called for every span
        real(self, data)

    monkeypatch.setattr(BatchProcessor, "emit", emit_and_count)
    bsp = BatchSpanProcessor(Collect())
    try:
        assert downstream.batch_push(bsp) == bsp._batch_processor.emit  # noqa: SLF001
    finally:
        bsp.shutdown()


def test_a_forked_child_reaches_the_queue_through_emit() -> None:
    """In the child the queue is the parent's until the SDK resets it: the processor recomputes its way to the
    queue at fork and spans ended in the child are exported by the child."""
    import os

    exporter = Collect()
    bsp = BatchSpanProcessor(exporter, schedule_delay_millis=60_000)
    processor = TokenFixSpanProcessor(bsp, timer_interval=None)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    pid = os.fork()
    if pid == 0:
        ok = processor._downstream_emit is not None  # noqa: SLF001
        with provider.get_tracer("t").start_as_current_span("in-child"):
            pass
        provider.force_flush()
        ok = ok and exporter.names == ["in-child"]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with provider.get_tracer("t").start_as_current_span("in-parent"):
        pass
    provider.shutdown()
    assert exporter.names == ["in-parent"]
