"""Bounds, timeouts, flush/shutdown, a raising downstream, 16 threads with exactly-once delivery, metrics."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from processor_helpers import make_pipeline, qwen_ids

from otel_tokenfix import record_edit
from otel_tokenfix.trace import conventions as cv

MODEL = "qwen"


def attrs(tok, text):
    return {"response_token_ids": tuple(qwen_ids(tok, text)), "gen_ai.request.model": MODEL}


def test_max_traces_releases_oldest_uncorrected_and_marked(qwen):
    p = make_pipeline({MODEL: qwen}, max_traces=2)
    runs = [p.tracer.start_span(f"run{i}") for i in range(3)]
    from opentelemetry import trace

    for i, run in enumerate(runs):
        with trace.use_span(run, end_on_exit=False):
            with p.tracer.start_as_current_span(f"llm{i}", attributes=attrs(qwen, f"Answer {i}.")):
                pass
    early = p.one("llm0")
    assert early.attributes[cv.STATUS] == cv.STATUS_ERROR and "max_traces" in early.attributes[cv.ERROR]
    assert p.named("llm1") == [] and p.processor.stats["released_early"] == 1
    for run in runs:
        run.end()
    assert len(p.named("llm1")) == 1 and len(p.named("llm2")) == 1
    assert cv.STATUS not in p.one("llm2").attributes  # a trace without edits goes out as it came


def test_max_spans_bound(qwen):
    p = make_pipeline({MODEL: qwen}, max_spans=3)
    with p.tracer.start_as_current_span("run"):
        for i in range(5):
            with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, f"A{i}")):
                pass
            assert p.processor.stats["held_spans"] <= 3
    assert len(p.named("llm")) == 5
    assert p.processor.stats["released_early"] >= 3


def test_hold_timeout_with_background_timer(qwen):
    p = make_pipeline({MODEL: qwen}, hold_timeout=0.3, timer_interval=0.05)
    run = p.tracer.start_span("run")
    from opentelemetry import trace

    with trace.use_span(run, end_on_exit=False):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Hello there.")):
            pass
    deadline = time.monotonic() + 5
    while not p.named("llm") and time.monotonic() < deadline:
        time.sleep(0.02)
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_ERROR and "timeout" in a[cv.ERROR]
    run.end()
    assert len(p.named("llm")) == 1
    p.provider.shutdown()
    assert not p.processor._timer.is_alive()


def test_shutdown_and_flush_release_held_spans_with_edits(qwen):
    p = make_pipeline({MODEL: qwen}, root_grace=60)
    from opentelemetry import trace

    run = p.tracer.start_span("run")
    with trace.use_span(run, end_on_exit=False):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Hello there, friend.")):
            pass
        with p.tracer.start_as_current_span("step"):
            record_edit("Hello there.")
    with p.tracer.start_as_current_span("root-llm", attributes=attrs(qwen, "Solo.")):
        pass
    assert p.named("llm") == [] and p.named("root-llm") == []
    assert p.processor.force_flush()
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED
    assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == "Hello there."
    assert len(p.named("root-llm")) == 1
    # shutdown with a held span
    p2 = make_pipeline({MODEL: qwen}, root_grace=60)
    with p2.tracer.start_as_current_span("root-llm", attributes=attrs(qwen, "Solo.")):
        pass
    p2.provider.shutdown()
    assert len(p2.named("root-llm")) == 1 and p2.processor.stats["held_spans"] == 0
    # after shutdown nothing is held
    with p2.tracer.start_as_current_span("late-llm", attributes=attrs(qwen, "x")):
        pass
    assert p2.processor.stats["held_spans"] == 0


class Raising(SimpleSpanProcessor):
    def __init__(self, exporter, every: int) -> None:
        super().__init__(exporter)
        self.calls = 0
        self.every = every

    def on_end(self, span):
        self.calls += 1
        if self.calls % self.every == 0:
            raise RuntimeError("downstream down")
        super().on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        raise RuntimeError("flush failed")


def test_raising_downstream_never_reaches_user_code(qwen):
    exporter = InMemorySpanExporter()
    p = make_pipeline({MODEL: qwen}, downstream=Raising(exporter, every=2))
    for i in range(4):
        with p.tracer.start_as_current_span("run"):
            with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, f"Reply {i}.")):
                pass
            record_edit(f"Reply {i}!")
    assert p.processor.force_flush() is False
    st = p.processor.stats
    assert st["downstream_errors"] == 5  # 4 of 8 on_end calls + the flush
    assert len(exporter.get_finished_spans()) == 4
    assert st["corrected"] == 4 and st["held_spans"] == 0


def test_sixteen_threads_exactly_once(qwen):
    exporter = InMemorySpanExporter()
    p = make_pipeline({MODEL: qwen}, downstream=SimpleSpanProcessor(exporter), max_traces=64)
    made: list[int] = []
    made_lock = threading.Lock()
    errors: list[BaseException] = []

    def agent(n: int) -> None:
        try:
            for j in range(6):
                text = f"Thread {n} turn {j}: the answer is {n * j}."
                ids = []
                with p.tracer.start_as_current_span("run") as run:
                    ids.append(run.get_span_context().span_id)
                    with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, text)) as s:
                        ids.append(s.get_span_context().span_id)
                    with p.tracer.start_as_current_span("step") as step:
                        ids.append(step.get_span_context().span_id)
                        if j % 2 == 0:
                            record_edit(f"Thread {n} turn {j}: {n * j}.")
                with made_lock:
                    made.extend(ids)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    p.processor.force_flush()
    out = [s.context.span_id for s in exporter.get_finished_spans()]
    assert sorted(out) == sorted(made) and len(set(out)) == len(out) == 16 * 6 * 3
    for s in exporter.get_finished_spans():
        if s.name != "llm":
            continue
        text = qwen.decode(list(s.attributes["response_token_ids"]), skip_special_tokens=True)
        head = text.split(":")[0]
        n, j = int(head.split()[1]), int(head.split()[3])
        if j % 2 == 0:
            assert s.attributes[cv.STATUS] == cv.STATUS_CORRECTED and text == f"Thread {n} turn {j}: {n * j}."
        else:  # no edit in the trace: forwarded untouched
            assert cv.STATUS not in s.attributes and text == f"Thread {n} turn {j}: the answer is {n * j}."
    st = p.processor.stats
    assert st["corrected"] == 16 * 3 and st["unchanged"] == 16 * 3 and st["errors"] == 0


def test_metrics_when_meter_provider_given(qwen):
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    p = make_pipeline({MODEL: qwen}, meter_provider=mp)
    with p.tracer.start_as_current_span("run"):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Metrics are fun.")):
            pass
        record_edit("Metrics are great fun.")
    data = reader.get_metrics_data()
    points = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for dp in m.data.data_points:
                    points[(m.name, tuple(sorted(dp.attributes.items())))] = dp.value
    assert points[("tokenfix.spans", (("outcome", "corrected"),))] == 1
    assert points[("tokenfix.spans", (("outcome", "passed"),))] == 1
    assert points[("tokenfix.held", (("kind", "spans"),))] == 0


def test_remote_parent_makes_a_local_root(qwen):
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    p = make_pipeline({MODEL: qwen})
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    with p.tracer.start_as_current_span("server", context=trace.set_span_in_context(NonRecordingSpan(remote))):
        with p.tracer.start_as_current_span("llm", attributes=attrs(qwen, "Remote answer here.")):
            pass
        with p.tracer.start_as_current_span("step"):
            record_edit("Remote answer.")
        assert p.named("llm") == []
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED
    assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == "Remote answer."


def test_on_start_and_on_ending_delegate(qwen):
    seen = []

    class Recording(SimpleSpanProcessor):
        def on_start(self, span, parent_context=None):
            seen.append(("start", span.name))

        def _on_ending(self, span):
            seen.append(("ending", span.name))

    p = make_pipeline(downstream=Recording(InMemorySpanExporter()))
    with p.tracer.start_as_current_span("x"):
        pass
    assert seen == [("start", "x"), ("ending", "x")]


def test_forked_child_forgets_the_parents_held_spans(qwen):
    import os

    p = make_pipeline({MODEL: qwen}, root_grace=60, timer_interval=0.05)
    with p.tracer.start_as_current_span("root-llm", attributes=attrs(qwen, "Held in the parent.")):
        pass
    assert p.processor.stats["held_spans"] == 1
    pid = os.fork()
    if pid == 0:  # child: nothing held, timer running, the parent's span is not forwarded again here
        ok = p.processor.stats["held_spans"] == 0 and p.processor._timer.is_alive()
        p.processor.force_flush()
        ok = ok and p.named("root-llm") == []
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert p.processor.stats["held_spans"] == 1
    p.provider.shutdown()
    assert len(p.named("root-llm")) == 1


def test_llm_span_ending_after_its_root_is_corrected_after_the_late_grace(qwen):
    from opentelemetry import trace

    clock = [0.0]
    p = make_pipeline({MODEL: qwen}, late_grace=2, clock=lambda: clock[0])
    root = p.tracer.start_span("agent.run")
    ctx = trace.set_span_in_context(root)
    step = p.tracer.start_span("agent.step", context=ctx)
    root.end()  # the agent returned before its last step finished
    with p.tracer.start_as_current_span("llm", context=trace.set_span_in_context(step),
                                        attributes=attrs(qwen, "Second answer about prices.")):
        pass
    step.add_event("text.edited", {"tokenfix.edit.text": "Second answer about edited prices."})
    clock[0] = 1
    step.end()
    assert p.named("llm") == []  # held: its edit may still come
    clock[0] = 3.5
    with p.tracer.start_as_current_span("other"):
        pass  # any span end ticks the clock
    a = p.one("llm").attributes
    assert a[cv.STATUS] == cv.STATUS_CORRECTED
    assert qwen.decode(list(a[cv.RESPONSE_IDS]), skip_special_tokens=True) == "Second answer about edited prices."
