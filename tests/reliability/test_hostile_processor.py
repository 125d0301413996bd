"""Hostile span content through the real SDK processor: nothing raises into the host application,
every span that enters leaves exactly once, nothing is ever evaluated, and rejections are explained."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags

from . import hostile
from .harness import MODEL, FlakyCountingProcessor

STATUSES = {"corrected", "unchanged", "fallback", "error"}
_RESOURCE = Resource.create({"service.name": "hostile"})


def make_span(shape: dict) -> ReadableSpan:
    trace_id = shape["trace"]
    ctx = SpanContext(trace_id, shape["span"], is_remote=False, trace_flags=TraceFlags(1))
    parent = None
    if shape["parent"] is not None:
        parent = SpanContext(trace_id, shape["parent"], is_remote=shape["remote"], trace_flags=TraceFlags(1))
    start = shape["start"]
    events = [Event(name, attributes=attrs, timestamp=start + i) for i, (name, attrs) in enumerate(shape["events"])]
    return ReadableSpan(
        name="chat" if shape["attributes"] else "step",
        context=ctx,
        parent=parent,
        resource=_RESOURCE,
        attributes={"gen_ai.request.model": MODEL, **shape["attributes"]},
        events=events,
        start_time=start,
        end_time=start + shape["duration"],
    )


def new_processor(qwen, **kwargs):
    from otel_tokenfix import TokenFixSpanProcessor

    down = FlakyCountingProcessor(p_raise=0.2, p_stall=0, keep=lambda s: True)
    proc = TokenFixSpanProcessor(down, tokenizers={MODEL: qwen}, **kwargs)
    return proc, down


@pytest.fixture(autouse=True)
def no_canary():
    if os.path.exists(hostile.CANARY):
        os.remove(hostile.CANARY)
    yield
    assert not os.path.exists(hostile.CANARY), "input was evaluated as code"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=hostile.trace_batch, flush_midway=st.booleans())
def test_hostile_spans_leave_exactly_once_and_never_raise(qwen, batch, flush_midway):
    proc, down = new_processor(qwen)
    fed: Counter[tuple[int, int]] = Counter()
    claims_status: set[int] = set()  # spans whose *input* already carried a tokenfix.status
    for i, shape in enumerate(batch):
        span = make_span(shape)
        proc.on_end(span)  # must not raise, whatever the span holds
        fed[(shape["trace"], shape["span"])] += 1
        if "tokenfix.status" in shape["attributes"]:
            claims_status.add(shape["span"])
        if flush_midway and i == len(batch) // 2:
            assert proc.force_flush() in (True, None)
    proc.shutdown()
    assert down.received == fed
    assert down.shutdown_called
    for sid, attrs in down.spans.items():
        status = attrs.get("tokenfix.status")
        if status is None or sid in claims_status:
            continue
        assert status in STATUSES
        if status in ("error", "fallback"):
            assert isinstance(attrs.get("tokenfix.error"), str) and attrs["tokenfix.error"], attrs.get("tokenfix.error")


def test_parent_cycle_and_duplicate_ids_are_released_at_shutdown(qwen):
    """Two LLM spans that name each other as parent (no root ever ends) and a duplicated span id:
    held, then released on shutdown, each occurrence exactly once."""
    llm = {"tokenfix.response.token_ids": [9707, 1879, 151645], "gen_ai.completion.0.content": "Hello world"}
    shapes = [
        {
            "trace": 1,
            "span": 1,
            "parent": 2,
            "remote": False,
            "attributes": llm,
            "events": [],
            "start": 1,
            "duration": 1,
        },
        {
            "trace": 1,
            "span": 2,
            "parent": 1,
            "remote": False,
            "attributes": llm,
            "events": [],
            "start": 2,
            "duration": 1,
        },
        {
            "trace": 1,
            "span": 2,
            "parent": 1,
            "remote": False,
            "attributes": llm,
            "events": [],
            "start": 3,
            "duration": 1,
        },
    ]
    proc, down = new_processor(qwen)
    for s in shapes:
        proc.on_end(make_span(s))
    assert sum(down.received.values()) == 0  # held: no root has ended
    proc.shutdown()
    assert down.received == Counter({(1, 1): 1, (1, 2): 2})


def test_evil_repr_ids_are_parsed_as_data_or_rejected(qwen):
    proc, down = new_processor(qwen)
    for i, evil in enumerate(hostile.EVIL_REPRS, start=1):
        attrs = {"llm.hosted_vllm.response_token_ids": evil, "gen_ai.completion.0.content": "Hi"}
        shape = {
            "trace": 100 + i,
            "span": i,
            "parent": None,
            "remote": False,
            "attributes": attrs,
            "events": [("text.edited", {"tokenfix.edit.text": evil})],
            "start": 1,
            "duration": 1,
        }
        proc.on_end(make_span(shape))
    proc.shutdown()
    assert sum(down.received.values()) == len(hostile.EVIL_REPRS)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=hostile.value, ids=hostile.value, target=hostile.value, reward=hostile.value, name=hostile.value)
def test_helpers_never_raise_into_user_code(text, ids, target, reward, name):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_tokenfix import record_edit, record_reward

    tp = TracerProvider()
    mem = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("hostile")
    record_edit(text, token_ids=ids, target=target)  # outside any span
    record_reward(reward, name=name)
    with tracer.start_as_current_span("step"):
        record_edit(text, token_ids=ids, target=target)
        record_edit(edited_text=text)
        record_reward(reward, name=name)
        record_reward(reward)
    tp.shutdown()
    assert len(mem.get_finished_spans()) == 1
