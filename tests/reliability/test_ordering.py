"""Edits must reach the LLM span they were made for, whatever order spans reach an exporter in.

Found by the exporter soak (``test_exporter_soak.py`` behind the processor): when an agent's root span
ends before its last step (fire-and-forget tasks, early returns), the last step's LLM span is held by
``TokenFixSpanProcessor`` while the step span carrying its untargeted edit passes through at once. A
``TripletExporter`` behind the processor then sees the edit before the LLM span it was made for and
applies it to the *previous* LLM call of the trace: a wrong triplet (text of another call).
"""

from __future__ import annotations

import time

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from .harness import MODEL


def llm_attrs(qwen, text):
    ids = qwen.encode(text, add_special_tokens=False) + [151645]
    return {
        "gen_ai.request.model": MODEL,
        "tokenfix.response.token_ids": ids,
        "tokenfix.prompt.token_ids": [1, 2],
        "gen_ai.completion.0.content": text,
    }


def early_root_trace(tp, qwen):
    tracer = tp.get_tracer("t")
    root = tracer.start_span("agent.run")
    ctx = otel_trace.set_span_in_context(root)
    step1 = tracer.start_span("agent.step", context=ctx)
    a = tracer.start_span(
        "chat",
        context=otel_trace.set_span_in_context(step1),
        attributes=llm_attrs(qwen, "First answer about the weather."),
    )
    a.end()
    step1.end()
    step2 = tracer.start_span("agent.step", context=ctx)
    root.end()  # the root ends while the last step still runs
    b = tracer.start_span(
        "chat", context=otel_trace.set_span_in_context(step2), attributes=llm_attrs(qwen, "Second answer about prices.")
    )
    b.end()
    step2.add_event("text.edited", {"tokenfix.edit.text": "Second answer about edited prices."})  # untargeted: B
    step2.end()
    return a.get_span_context().span_id, b.get_span_context().span_id


def texts(qwen, records):
    return {int(r.span_id, 16): qwen.decode(r.response_ids, skip_special_tokens=True) for r in records}


def run(qwen, behind_processor: bool):
    from otel_tokenfix import TokenFixSpanProcessor, TripletExporter

    records: list = []
    # a root grace, as for batches that arrive out of order (the service and the soak use one too)
    exporter = TripletExporter(records, tokenizers={MODEL: qwen}, root_grace=0.3)
    inner = SimpleSpanProcessor(exporter)
    tp = TracerProvider()
    tp.add_span_processor(TokenFixSpanProcessor(inner, tokenizers={MODEL: qwen}) if behind_processor else inner)
    a, b = early_root_trace(tp, qwen)
    time.sleep(0.8)  # the exporter's timer releases the trace once its root grace is over
    tp.shutdown()
    return texts(qwen, records), a, b


def test_exporter_alone_applies_the_edit_to_its_call(qwen):
    got, a, b = run(qwen, behind_processor=False)
    assert got[a] == "First answer about the weather."
    assert got[b] == "Second answer about edited prices."


def test_exporter_behind_the_processor_applies_the_edit_to_its_call(qwen):
    got, a, b = run(qwen, behind_processor=True)
    assert got[a] == "First answer about the weather."
    assert got[b] == "Second answer about edited prices."


def test_a_late_llm_span_of_an_ended_root_is_corrected_not_timed_out(qwen):
    """The root has already ended, so no root will ever end the late part of the trace: the processor
    must not wait for its hold timeout and then forward the late LLM span *uncorrected*."""
    from otel_tokenfix import TokenFixSpanProcessor

    from .harness import FlakyCountingProcessor

    down = FlakyCountingProcessor(p_raise=0, p_stall=0, keep=lambda s: True)
    proc = TokenFixSpanProcessor(down, tokenizers={MODEL: qwen}, hold_timeout=1.0, root_grace=0.2, timer_interval=0.1)
    tp = TracerProvider()
    tp.add_span_processor(proc)
    a, b = early_root_trace(tp, qwen)
    deadline = time.monotonic() + 5
    while b not in down.spans and time.monotonic() < deadline:
        time.sleep(0.05)
    attrs = down.spans.get(b)
    tp.shutdown()
    assert attrs is not None, "the late LLM span never left before shutdown"
    assert attrs.get("tokenfix.status") == "corrected", (attrs.get("tokenfix.status"), attrs.get("tokenfix.error"))
    assert qwen.decode(list(attrs["tokenfix.response.token_ids"]), skip_special_tokens=True) == (
        "Second answer about edited prices."
    )
