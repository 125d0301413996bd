"""A real SDK pipeline around TokenFixSpanProcessor: TracerProvider -> processor -> SimpleSpanProcessor ->
InMemorySpanExporter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_tokenfix.sdk.processor import TokenFixSpanProcessor

IM_END = 151645


@dataclass
class Pipeline:
    provider: TracerProvider
    tracer: Any
    exporter: InMemorySpanExporter
    processor: TokenFixSpanProcessor

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]


def make_pipeline(tokenizers: Any = None, downstream: Any = None, **kw: Any) -> Pipeline:
    exporter = InMemorySpanExporter()
    kw.setdefault("timer_interval", None)
    kw.setdefault("root_grace", 0)
    processor = TokenFixSpanProcessor(downstream or SimpleSpanProcessor(exporter), tokenizers=tokenizers, **kw)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return Pipeline(provider, provider.get_tracer("test"), exporter, processor)


def qwen_ids(tok: Any, text: str, eos: bool = True) -> list[int]:
    ids = tok.encode(text, add_special_tokens=False)
    return ids + [IM_END] if eos else ids
