"""Fixtures for capture tests: a real TracerProvider with an in-memory exporter and the vLLM-like server."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_tokenfix.demo.vllm_server import VLLMLikeServer


class Tracing:
    """A provider whose finished spans land in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.capture")

    def spans(self, name_prefix: str = "") -> list:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(name_prefix)]

    def llm_spans(self) -> list:
        return [s for s in self.exporter.get_finished_spans() if "gen_ai.operation.name" in s.attributes]


@pytest.fixture
def tracing():
    t = Tracing()
    yield t
    t.provider.shutdown()


@pytest.fixture
def serve(qwen):
    """``serve(script, **options)`` starts a server (stopped at teardown)."""
    started: list[VLLMLikeServer] = []

    def start(script=None, **options) -> VLLMLikeServer:
        server = VLLMLikeServer(script, tokenizer=qwen, **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def no_global_patch():
    """Make sure a test that patches the openai classes globally restores them."""
    from otel_tokenfix import uninstrument_openai

    yield
    uninstrument_openai()
