"""TripletExporter behind TokenFixSpanProcessor: it reads the corrected spans back (one code path, no
second correction), and the zero-code path (configurator + entry point) in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from otel_tokenfix.sdk.processor import TokenFixSpanProcessor
from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.triplets.record import TripletRecord
from otel_tokenfix.triplets.sinks import MemorySink

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import IM_END, enc, run_agent  # noqa: E402

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "triplet.schema.json").read_text())


def comparable(records):
    out = []
    for r in sorted(records, key=lambda r: (r.trace_id, r.index)):
        d = r.to_dict()
        d["metadata"].pop("release_reason")
        out.append(d)
    return out


def alone_records(qwen, spans):
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0)
    ex.export(spans)
    ex.shutdown()
    return sink.records


def warm(qwen):
    """Build the engine's per-tokenizer table before the run (the first correction takes seconds)."""
    from otel_tokenfix.engine import correct_text

    correct_text(qwen, enc(qwen, "warm up"), "warmed up")


def test_behind_the_processor_reads_corrected_spans_back(qwen):
    warm(qwen)
    sink = MemorySink()
    # no tokenizer for the exporter: every corrected id it writes must come from the processor
    exporter = TripletExporter(sink, tokenizers=None, env={})
    provider = TracerProvider(resource=Resource.create({"agentlightning.rollout_id": "ro-1"}))
    processor = TokenFixSpanProcessor(SimpleSpanProcessor(exporter), tokenizers=qwen, root_grace=0)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    runs = [run_agent(tracer, qwen) for _ in range(3)]
    # the processor forwards a trace's corrected LLM spans before its root: no grace is needed
    assert exporter.assembly.root_grace == 0
    deadline = time.monotonic() + 30
    while len(sink.records) < 9 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(sink.records) == 9
    assert exporter.stats.errors == 0 and exporter.stats.corrected == 6
    for run in runs:
        recs = [r for r in sink.records if r.trace_id == format(run.trace_id, "032x")]
        assert [r.index for r in recs] == [0, 1, 2]
        for k, r in enumerate(recs):
            assert qwen.decode(r.response_ids, skip_special_tokens=True) == run.final_texts[k]
            assert r.metadata["status"] == ("corrected" if run.edited[k] else "unchanged")
            jsonschema.validate(r.to_dict(), SCHEMA, cls=jsonschema.Draft202012Validator)
        assert [r.reward for r in recs] == run.rewards
        assert [r.metadata["continuation"] for r in recs[:2]] == [{"holds": True}] * 2
    provider.shutdown()


def test_same_records_behind_the_processor_and_alone(qwen):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    raw = InMemorySpanExporter()
    corrected = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    provider.add_span_processor(TokenFixSpanProcessor(SimpleSpanProcessor(corrected), tokenizers=qwen, root_grace=0))
    tracer = provider.get_tracer("t")
    for _ in range(2):
        run_agent(tracer, qwen)
    provider.shutdown()
    behind = MemorySink()
    # the processor forwards each trace's corrected LLM spans before its root: one batch, root last
    ex = TripletExporter(behind, tokenizers=None, timer=False, env={})
    ex.export(list(corrected.get_finished_spans()))
    ex.shutdown()
    alone = alone_records(qwen, list(raw.get_finished_spans()))
    assert len(alone) == 6
    assert comparable(behind.records) == comparable(alone)


AGENT = textwrap.dedent(
    """
    import sys
    from opentelemetry import trace
    sys.path.insert(0, sys.argv[1])
    from triplets.agent_traces import run_agent
    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer
    tok = qwen_tokenizer()
    tracer = trace.get_tracer("agent")
    for _ in range(2):
        run = run_agent(tracer, tok)
        print(format(run.trace_id, "032x"), flush=True)
    """
)


def test_zero_code_configurator_and_entry_point(qwen, tmp_path):
    out = tmp_path / "triplets.jsonl"
    env = dict(os.environ)
    env.update(
        {
            "OTEL_PYTHON_CONFIGURATOR": "tokenfix",
            "OTEL_TRACES_EXPORTER": "tokenfix_triplets",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_TOKENFIX_DEFAULT_TOKENIZER": "builtin:qwen",
            "OTEL_TOKENFIX_TRIPLETS_PATH": str(out),
            "OTEL_TOKENFIX_TRIPLETS_MASK": "sampled",
            "OTEL_RESOURCE_ATTRIBUTES": "agentlightning.rollout_id=ro-env,agentlightning.attempt_id=at-env",
        }
    )
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    proc = subprocess.run(
        [str(instrument), sys.executable, "-c", AGENT, str(Path(__file__).parents[1])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trace_ids = proc.stdout.split()
    assert len(trace_ids) == 2
    records = [TripletRecord.from_json(x) for x in out.read_text().splitlines()]
    assert sorted({r.trace_id for r in records}) == sorted(trace_ids)
    assert len(records) == 6
    for r in records:
        jsonschema.validate(r.to_dict(), SCHEMA, cls=jsonschema.Draft202012Validator)
        assert r.rollout_id == "ro-env" and r.attempt_id == "at-env"
        assert r.metadata["mask_policy"] == "sampled"
        assert r.metadata["complete"] is True
    first = [r for r in records if r.index == 0]
    for r in first:  # the edited first answer, corrected by the processor, read back by the exporter
        assert r.metadata["status"] == "corrected"
        assert r.response_ids == [*enc(qwen, "The capital of France is Paris."), IM_END]
        assert r.mask == [1 if p == 1 else 0 for p in r.provenance]
        assert r.reward == 0.0


def test_behind_processor_with_batch_processor(qwen, tmp_path):
    path = tmp_path / "t.jsonl"
    exporter = TripletExporter(str(path), tokenizers=None, env={})
    provider = TracerProvider()
    provider.add_span_processor(TokenFixSpanProcessor(BatchSpanProcessor(exporter), tokenizers=qwen, root_grace=0))
    tracer = provider.get_tracer("t")
    runs = [run_agent(tracer, qwen) for _ in range(5)]
    provider.shutdown()  # releases and flushes everything
    records = [TripletRecord.from_json(x) for x in path.read_text().splitlines()]
    assert len(records) == 15
    for run in runs:
        recs = [r for r in records if r.trace_id == format(run.trace_id, "032x")]
        assert [qwen.decode(r.response_ids, skip_special_tokens=True) for r in recs] == run.final_texts
        assert all(r.metadata["complete"] for r in recs)


def early_root_episode(tracer, qwen):
    """The root ends while its last step still runs; that step's LLM call and its edit come after the
    root. The edit's carrier passes the processor at once, whatever the processor does with the late call
    (hold it, or forward it before its edit arrives and report the edit late)."""
    from opentelemetry import trace

    root = tracer.start_span("agent.run")
    ctx = trace.set_span_in_context(root)
    p1 = [151644, *enc(qwen, "user\nHi"), IM_END]
    r1 = [*enc(qwen, "Hello there."), IM_END]
    llm1 = tracer.start_span("chat", context=ctx, attributes={"prompt_token_ids": p1, "response_token_ids": r1})
    llm1.end()
    step = tracer.start_span("agent.step", context=ctx)
    root.end()  # early
    r2 = [*enc(qwen, "I am fine, thanks."), IM_END]
    llm2 = tracer.start_span("chat", context=trace.set_span_in_context(step),
                             attributes={"prompt_token_ids": p1 + r1, "response_token_ids": r2})
    llm2.end()
    step.add_event("text.edited", {"tokenfix.edit.text": "I am great, thanks."})  # untargeted: llm2
    step.end()
    return llm1.get_span_context().span_id, llm2.get_span_context().span_id, r1, r2


def check_read_back_only(qwen, sink, processor, llm1, llm2, r1, r2):
    """Every record says what the processor decided: the exporter applied no edit of its own."""
    by_span = {int(r.span_id, 16): r for r in sink.records}
    assert set(by_span) == {llm1, llm2} and len(sink.records) == 2
    assert by_span[llm1].metadata["status"] == "unchanged" and by_span[llm1].response_ids == r1
    late = by_span[llm2]
    if processor.stats["corrected"]:  # the processor held the late call and applied its edit
        assert late.metadata["status"] == "corrected"
        assert qwen.decode(late.response_ids, skip_special_tokens=True) == "I am great, thanks."
    else:  # it forwarded the late call before the edit came (reported late): ours must agree
        assert processor.stats["late_edits"] == 1
        assert late.metadata["status"] == "unchanged" and late.response_ids == r2


def test_behind_processor_never_applies_edits_itself(qwen):
    warm(qwen)
    sink = MemorySink()
    exporter = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=100, env={})
    exporter.behind_processor()
    # mark_unchanged=False: unedited calls come through unmarked, exactly as they would alone
    processor = TokenFixSpanProcessor(SimpleSpanProcessor(exporter), tokenizers=qwen, root_grace=0,
                                      mark_unchanged=False)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    llm1, llm2, r1, r2 = early_root_episode(provider.get_tracer("t"), qwen)
    exporter.force_flush()  # releases what arrived: root, first call, the edit's carrier (maybe not its target)
    provider.shutdown()
    check_read_back_only(qwen, sink, processor, llm1, llm2, r1, r2)


def test_auto_mode_stops_applying_edits_once_it_sees_corrected_spans(qwen):
    warm(qwen)
    sink = MemorySink()
    exporter = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=100, env={})
    assert exporter.apply_edits is None  # auto
    processor = TokenFixSpanProcessor(SimpleSpanProcessor(exporter), tokenizers=qwen, root_grace=0,
                                      mark_unchanged=False)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    run_agent(tracer, qwen)  # an ordinary episode: its corrected spans tell the exporter it is behind
    exporter.force_flush()
    assert exporter._seen_upstream  # noqa: SLF001
    corrected_before = processor.stats["corrected"]
    first_records = list(sink.records)
    sink.records.clear()
    llm1, llm2, r1, r2 = early_root_episode(tracer, qwen)
    provider.shutdown()
    assert len(first_records) == 3

    class Delta:  # the processor's counters for the second episode only
        stats = {"corrected": processor.stats["corrected"] - corrected_before,
                 "late_edits": processor.stats["late_edits"]}

    check_read_back_only(qwen, sink, Delta, llm1, llm2, r1, r2)


def test_apply_edits_from_env():
    assert TripletExporter(MemorySink(), env={"OTEL_TOKENFIX_TRIPLETS_APPLY_EDITS": "false"}).apply_edits is False
    assert TripletExporter(MemorySink(), env={"OTEL_TOKENFIX_TRIPLETS_APPLY_EDITS": "true"}).apply_edits is True
    assert TripletExporter(MemorySink(), env={}).apply_edits is None
