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
