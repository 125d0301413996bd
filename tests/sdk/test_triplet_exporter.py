"""TripletExporter on a real TracerProvider with the real Qwen tokenizer: alone (it applies the edits),
rewards in each format, out-of-order batches, missing roots, interleaved traces, a failing sink and
shutdown mid-trace."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import jsonschema
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.triplets.build import TripletOptions
from otel_tokenfix.triplets.record import TripletRecord
from otel_tokenfix.triplets.sinks import MemorySink

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import IM_END, enc, recorded_spans, run_agent  # noqa: E402

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "triplet.schema.json").read_text())


class Clock:
    """An injectable clock (the assembly's timeouts are tested without sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def check_schema(records):
    for r in records:
        jsonschema.validate(r.to_dict(), SCHEMA, cls=jsonschema.Draft202012Validator)


def check_run(records, run, tok):
    """Records of one agent run: call order, corrected ids, provenance, log-probs, continuation, rewards."""
    assert [r.index for r in records] == list(range(len(run.sampled)))
    assert [int(r.span_id, 16) for r in records] == run.span_ids
    assert {r.trace_id for r in records} == {format(run.trace_id, "032x")}
    for k, r in enumerate(records):
        assert r.prompt_ids == run.prompts[k]
        assert tok.decode(r.response_ids, skip_special_tokens=True) == run.final_texts[k]
        assert r.response_ids[-1] == IM_END  # the hidden end token stays last
        if run.edited[k]:
            assert r.metadata["status"] == "corrected" and r.metadata["edits"] == 1
            assert r.response_ids == [*enc(tok, run.final_texts[k]), IM_END]  # canonical in, canonical out
            tokens = r.metadata["tokens"]
            assert tokens["inserted"] + tokens["removed"] > 0
            assert r.mask == [0 if p == 0 else 1 for p in r.provenance]
            assert 2 in r.provenance or r.provenance[-1] == 0  # tokens after the edit are "shifted"
            assert r.metadata["original_token_ids"] == run.sampled[k]
            # kept tokens keep their sampled log-prob, inserted ones have none
            for i, s in enumerate(r.source_index):
                assert (r.log_probs[i] is None) == (s is None)
                if s is not None:
                    assert r.log_probs[i] == pytest.approx(-0.01 * (s + 1))
                    assert r.response_ids[i] == run.sampled[k][s]
        else:
            assert r.metadata["status"] == "unchanged" and r.response_ids == run.sampled[k]
            assert r.mask == [1] * len(r.response_ids) and r.provenance == [1] * len(r.response_ids)
        if k + 1 < len(records):
            assert r.metadata["continuation"] == {"holds": True}
        else:
            assert r.metadata["continuation"] is None
    assert [r.reward for r in records] == run.rewards
    check_schema(records)


def as_compared(records):
    """Records as dicts, sorted, without the release reason (which says how the trace was released)."""
    out = []
    for r in sorted(records, key=lambda r: (r.trace_id, r.index)):
        d = r.to_dict()
        d["metadata"].pop("release_reason")
        out.append(d)
    return out


def provider_with(exporter, batch=False):
    provider = TracerProvider(resource=Resource.create({"agentlightning.rollout_id": "ro-7"}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.parametrize("reward_format", ["agl", "agentops", "legacy"])
def test_alone_applies_edits_and_matches_rewards(qwen, reward_format):
    sink = MemorySink()
    exporter = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0)
    provider = provider_with(exporter)
    run = run_agent(provider.get_tracer("t"), qwen, reward_format=reward_format)
    provider.force_flush()
    check_run(sink.records, run, qwen)
    assert all(r.rollout_id == "ro-7" and r.attempt_id is None for r in sink.records)
    assert all(r.metadata["complete"] and r.metadata["release_reason"] == "complete" for r in sink.records)
    st = exporter.stats
    assert (st.traces, st.triplets, st.corrected, st.unchanged, st.errors) == (1, 3, 2, 1, 0)
    provider.shutdown()


@pytest.mark.parametrize("target", ["span", "response"])
def test_explicit_targets(qwen, target):
    sink = MemorySink()
    provider = provider_with(TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0))
    run = run_agent(provider.get_tracer("t"), qwen, target=target)
    provider.shutdown()
    check_run(sink.records, run, qwen)


def test_jsonl_behind_batch_processor_with_env_options(qwen, tmp_path):
    path = tmp_path / "out" / "triplets.jsonl"
    env = {
        "OTEL_TOKENFIX_TRIPLETS_PATH": str(path),
        "OTEL_TOKENFIX_TRIPLETS_MASK": "sampled",
        "OTEL_TOKENFIX_TRIPLETS_TRAJECTORY": "true",
    }
    exporter = TripletExporter(tokenizers=qwen, env=env, timer=False, root_grace=0)
    provider = provider_with(exporter, batch=True)
    runs = [run_agent(provider.get_tracer("t"), qwen) for _ in range(3)]
    provider.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == 3  # one merged trajectory per trace
    for line, run in zip(lines, runs, strict=True):
        d = json.loads(line)
        jsonschema.validate(d, SCHEMA, cls=jsonschema.Draft202012Validator)
        rec = TripletRecord.from_dict(d)
        assert rec.trace_id == format(run.trace_id, "032x")
        assert rec.metadata["calls"] == 3 and rec.metadata["mask_policy"] == "sampled"
        last_prompt = run.prompts[-1]
        assert rec.prompt_ids + rec.response_ids == [*last_prompt, *enc(qwen, run.final_texts[-1]), IM_END]
        # "sampled": only tokens before each turn's first edit are trained
        first_turn = rec.metadata["turns"][0]
        first = rec.provenance[first_turn["start"] : first_turn["end"]]
        assert rec.mask[: len(first)] == [1 if p == 1 else 0 for p in first]
        assert rec.reward == 1.0


def test_zero_arg_entry_point(tmp_path, monkeypatch):
    from importlib.metadata import entry_points

    monkeypatch.chdir(tmp_path)
    (ep,) = [e for e in entry_points(group="opentelemetry_traces_exporter") if e.name == "tokenfix_triplets"]
    cls = ep.load()
    assert cls is TripletExporter
    exporter = cls()
    assert exporter.options == TripletOptions()
    assert exporter.assembly.root_grace == 0 and exporter.assembly.max_spans == 200_000
    exporter.shutdown()
    env = {"OTEL_TOKENFIX_TRIPLETS_MAX_SPANS": "123", "OTEL_TOKENFIX_TRIPLETS_ROOT_GRACE": "2.5",
           "OTEL_TOKENFIX_HOLD_TIMEOUT": "40", "OTEL_TOKENFIX_TRIPLETS_FINAL_REWARD": "yes",
           "OTEL_TOKENFIX_TRIPLETS_PATH": str(tmp_path / "x.jsonl")}
    exporter = cls(env=env, timer=False)
    a = exporter.assembly
    assert (a.max_spans, a.root_grace, a.hold_timeout) == (123, 2.5, 40.0)
    assert exporter.options.final_reward is True
    assert exporter.sink.sink.path == str(tmp_path / "x.jsonl")
    exporter.shutdown()
    assert exporter.export([]).name == "FAILURE"  # after shutdown


def test_out_of_order_batches_give_the_same_records(qwen):
    spans, runs = recorded_spans(qwen, n_runs=3)
    reference = MemorySink()
    ref = TripletExporter(reference, tokenizers=qwen, timer=False)
    ref.export(spans)
    ref.shutdown()
    assert len(reference.records) == 9
    rng = random.Random(7)
    for _ in range(3):
        shuffled = spans[:]
        rng.shuffle(shuffled)
        clock = Clock()
        sink = MemorySink()
        ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=10.0, clock=clock)
        for i in range(0, len(shuffled), 4):  # batches of 4 spans in random order, 1 s apart
            ex.export(shuffled[i : i + 4])
            clock.now += 1.0
        clock.now += 20.0
        ex.tick()
        by_trace = {}
        for r in sink.records:
            by_trace.setdefault(r.trace_id, []).append(r)
        assert sorted(by_trace) == sorted(r.trace_id for r in reference.records[::3])
        for run in runs:
            check_run(by_trace[format(run.trace_id, "032x")], run, qwen)
        assert {r.metadata["release_reason"] for r in sink.records} == {"root_grace"}
        assert as_compared(sink.records) == as_compared(reference.records)
        ex.shutdown()


def test_interleaved_traces(qwen):
    spans, runs = recorded_spans(qwen, n_runs=4)
    by_trace = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s)
    interleaved = []
    while any(by_trace.values()):
        for q in by_trace.values():
            if q:
                interleaved.append(q.pop(0))
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0)
    for i in range(0, len(interleaved), 5):
        ex.export(interleaved[i : i + 5])
    assert ex.assembly.held_spans == 0
    for run in runs:
        check_run([r for r in sink.records if r.trace_id == format(run.trace_id, "032x")], run, qwen)
    ex.shutdown()


def test_missing_root_times_out_marked_incomplete(qwen):
    spans, (run,) = recorded_spans(qwen)
    no_root = [s for s in spans if s.parent is not None]
    now = [0.0]
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0, hold_timeout=30.0, clock=lambda: now[0])
    ex.export(no_root)
    assert sink.records == [] and ex.assembly.held_spans == len(no_root)
    now[0] = 29.0
    assert ex.tick() == 0
    now[0] = 31.0
    assert ex.tick() == 1
    recs = sink.records
    assert [int(r.span_id, 16) for r in recs] == run.span_ids
    for r, sampled in zip(recs, run.sampled, strict=True):
        assert r.metadata["complete"] is False and r.metadata["release_reason"] == "timeout"
        assert r.metadata["status"] == "error" and "timeout" in r.metadata["reason"]
        assert r.response_ids == sampled  # uncorrected, marked: never silently "fixed" half-way
    assert [r.reward for r in recs] == run.rewards  # rewards still matched
    assert ex.stats.incomplete_traces == 1
    check_schema(recs)
    ex.shutdown()


def test_timer_releases_without_further_exports(qwen):
    import time as _time

    spans, (run,) = recorded_spans(qwen)
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, hold_timeout=0.3, root_grace=0)
    ex.export([s for s in spans if s.parent is not None])
    deadline = _time.monotonic() + 20
    while not sink.records and _time.monotonic() < deadline:
        _time.sleep(0.05)
    assert len(sink.records) == 3 and sink.records[0].metadata["release_reason"] == "timeout"
    ex.shutdown()


def test_shutdown_mid_trace_releases_and_flushes(qwen, tmp_path):
    path = tmp_path / "t.jsonl"
    exporter = TripletExporter(str(path), tokenizers=qwen, timer=False, root_grace=0)
    provider = provider_with(exporter)
    tracer = provider.get_tracer("t")
    done = run_agent(tracer, qwen)
    root = tracer.start_span("agent.run")  # a second episode still running at shutdown
    from opentelemetry import trace

    with trace.use_span(root, end_on_exit=False):
        open_run = run_agent(tracer, qwen, name="agent.subtask")
    provider.shutdown()  # the root never ended
    lines = [TripletRecord.from_json(x) for x in path.read_text().splitlines()]
    assert len(lines) == 6
    finished = [r for r in lines if r.trace_id == format(done.trace_id, "032x")]
    held = [r for r in lines if r.trace_id == format(open_run.trace_id, "032x")]
    check_run(finished, done, qwen)
    assert all(r.metadata["complete"] is False and r.metadata["release_reason"] == "shutdown" for r in held)
    # edits seen so far are applied at shutdown
    assert [qwen.decode(r.response_ids, skip_special_tokens=True) for r in held] == open_run.final_texts
    assert [r.metadata["status"] for r in held] == ["corrected", "unchanged", "corrected"]


class FlakySink:
    """A sink that fails its first ``fails`` writes (a full disk, a down endpoint)."""

    def __init__(self, fails):
        self.fails = fails
        self.records = []
        self.attempts = 0

    def write(self, records):
        self.attempts += 1
        if self.fails > 0:
            self.fails -= 1
            raise OSError("sink down")
        self.records.extend(records)

    def flush(self):
        pass

    def close(self):
        pass


def test_failing_sink_loses_nothing(qwen, caplog):
    spans, runs = recorded_spans(qwen, n_runs=4)
    by_trace = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s)
    now = [0.0]
    sink = FlakySink(fails=3)
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0, clock=lambda: now[0], sink_backoff_s=1.0)
    batches = list(by_trace.values())
    ex.export(batches[0])  # fails: kept pending
    assert sink.records == [] and ex.sink.pending == 3
    now[0] += 1.5
    ex.export(batches[1])  # retry fails again
    assert sink.records == [] and ex.sink.pending == 6
    now[0] += 2.5
    ex.export(batches[2])  # third failure
    now[0] += 5.0
    ex.export(batches[3])  # succeeds: everything written, in order
    assert ex.sink.pending == 0 and ex.sink.stats.failures == 3 and ex.sink.stats.dropped == 0
    assert [r.trace_id for r in sink.records[::3]] == [format(r.trace_id, "032x") for r in runs]
    for run in runs:
        check_run([r for r in sink.records if r.trace_id == format(run.trace_id, "032x")], run, qwen)
    assert "sink down" in caplog.text
    ex.shutdown()


def test_failing_sink_is_retried_at_shutdown(qwen):
    spans, (run,) = recorded_spans(qwen)
    sink = FlakySink(fails=1)
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0, sink_backoff_s=100.0)
    ex.export(spans)
    assert sink.records == []
    ex.shutdown()
    check_run(sink.records, run, qwen)


def test_missing_tokenizer_is_an_error_not_a_crash(qwen):
    spans, (run,) = recorded_spans(qwen)
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers={}, timer=False, root_grace=0)
    assert ex.export(spans).name == "SUCCESS"
    statuses = [r.metadata["status"] for r in sink.records]
    assert statuses == ["error", "unchanged", "error"]
    assert "tokenizer" in sink.records[0].metadata["reason"]
    assert sink.records[0].response_ids == run.sampled[0]
    ex.shutdown()


def test_final_reward_option(qwen):
    spans, _ = recorded_spans(qwen, rewards=(None, 0.3, None))
    plain, final = MemorySink(), MemorySink()
    for sink, opts in ((plain, TripletOptions()), (final, TripletOptions(final_reward=True))):
        ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0, options=opts)
        ex.export(spans)
        ex.shutdown()
    assert [r.reward for r in plain.records] == [None, 0.3, None]  # FIRST_OCCURRENCE
    assert [r.reward for r in final.records] == [None, None, 0.3]  # the episode's last reward, on the last call


def test_span_bound_releases_oldest_trace_marked(qwen):
    spans, runs = recorded_spans(qwen, n_runs=2)
    first = [s for s in spans if s.context.trace_id == runs[0].trace_id and s.parent is not None]
    second = [s for s in spans if s.context.trace_id == runs[1].trace_id]
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0, max_spans=len(first) + 2)
    ex.export(first)  # held: the root has not come
    assert sink.records == []
    ex.export(second)  # pushes the held spans over the bound: the oldest trace leaves, marked
    old = [r for r in sink.records if r.trace_id == format(runs[0].trace_id, "032x")]
    assert len(old) == 3
    assert all(r.metadata["release_reason"] == "max_spans" and r.metadata["status"] == "error" for r in old)
    assert [r.response_ids for r in old] == runs[0].sampled
    check_run([r for r in sink.records if r.trace_id == format(runs[1].trace_id, "032x")], runs[1], qwen)
    ex.shutdown()


def test_late_spans_are_counted_and_still_exported(qwen, caplog):
    spans, (run,) = recorded_spans(qwen)
    root = [s for s in spans if s.parent is None]
    rest = [s for s in spans if s.parent is not None]
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0)
    ex.export(root)  # root first with no grace: the trace leaves at once (nothing to write yet)
    ex.export(rest)
    assert ex.stats.late_spans == len(rest) and "after their trace was released" in caplog.text
    ex.shutdown()  # the late spans are not lost: released at shutdown, marked incomplete
    assert [int(r.span_id, 16) for r in sink.records] == run.span_ids
    assert all(r.metadata["complete"] is False for r in sink.records)


def test_every_tokenizer_single_turn_edit(any_tokenizer):
    tok = any_tokenizer
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    answer, edited = "The answer is 42, as far as I know.", "The answer is 43, as far as I know!"
    sampled = tok.encode(answer, add_special_tokens=False)
    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("agent.run"):
        attrs = {"prompt_token_ids": [1, 2, 3], "response_token_ids": sampled, "gen_ai.request.model": "m"}
        with tracer.start_as_current_span("openai.chat.completion", attributes=attrs):
            pass
        with tracer.start_as_current_span("agent.step") as step:
            step.add_event("text.edited", {"tokenfix.edit.text": edited})
    provider.shutdown()
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers={"m": tok}, timer=False, root_grace=0)
    ex.export(list(mem.get_finished_spans()))
    (rec,) = sink.records
    assert rec.metadata["status"] in ("corrected", "fallback")
    assert tok.decode(rec.response_ids, skip_special_tokens=True) == edited
    kept = [s for s in rec.source_index if s is not None]
    assert kept and all(rec.response_ids[i] == sampled[s] for i, s in enumerate(rec.source_index) if s is not None)
    assert rec.mask == [0 if p == 0 else 1 for p in rec.provenance]
    check_schema([rec])
    ex.shutdown()


def test_many_agent_threads_behind_batch_processor(qwen, tmp_path):
    import threading

    path = tmp_path / "t.jsonl"
    exporter = TripletExporter(str(path), tokenizers=qwen, env={})
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=50))
    tracer = provider.get_tracer("t")
    runs, lock = [], threading.Lock()

    def agent():
        for _ in range(3):
            r = run_agent(tracer, qwen)
            with lock:
                runs.append(r)

    threads = [threading.Thread(target=agent) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    provider.shutdown()
    lines = path.read_text().splitlines()
    records = [TripletRecord.from_json(x) for x in lines]
    assert len(records) == 8 * 3 * 3 and exporter.stats.late_spans == 0
    # each trace's lines are contiguous and in call order (one write per trace)
    for k in range(0, len(records), 3):
        chunk = records[k : k + 3]
        assert len({r.trace_id for r in chunk}) == 1 and [r.index for r in chunk] == [0, 1, 2]
    for run in runs:
        check_run([r for r in records if r.trace_id == format(run.trace_id, "032x")], run, qwen)


def test_public_helpers_record_edit_and_record_reward(qwen):
    from otel_tokenfix import record_edit, record_reward

    sink = MemorySink()
    provider = provider_with(TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0))
    tracer = provider.get_tracer("agent")
    prompt = [151644, *enc(qwen, "user\nHi"), IM_END, *enc(qwen, "\n"), 151644, *enc(qwen, "assistant\n")]
    sampled = [*enc(qwen, "Hello! How can I help you today?"), IM_END]
    with tracer.start_as_current_span("agent.run"):
        attrs = {"prompt_token_ids": prompt, "response_token_ids": sampled, "gen_ai.response.id": "r-1"}
        with tracer.start_as_current_span("openai.chat.completion", attributes=attrs) as llm:
            pass
        with tracer.start_as_current_span("agent.step"):
            assert record_edit("Hello! How can I help?", target=llm, source="trim")
        with tracer.start_as_current_span("agent.step"):
            assert record_edit("Hello! How may I help?")  # a second edit of the same call, chained
        assert record_reward(0.5, tracer_provider=provider)
    provider.shutdown()
    (rec,) = sink.records
    assert rec.metadata["edits"] == 2 and rec.metadata["status"] == "corrected"
    assert rec.response_ids == [*enc(qwen, "Hello! How may I help?"), IM_END]
    assert rec.metadata["original_token_ids"] == sampled
    assert rec.reward == 0.5
    # provenance relative to the originally sampled ids across the chain
    assert all(sampled[s] == rec.response_ids[i] for i, s in enumerate(rec.source_index) if s is not None)
    check_schema([rec])
