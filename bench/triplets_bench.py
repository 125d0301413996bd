"""Benchmark: TripletExporter throughput vs OTLP-encoding the same spans, measured in the same run.

Stream: pre-built traces of 10 LLM calls with 1k-token responses (real Qwen ids; each prompt holds the
whole history, so prompts grow to ~11k tokens) and one text edit per call on a later agent-step span.
Measured per stream, best of ``--repeats``:
- ``encode``: ``encode_spans(spans).SerializeToString()`` (the OTLP protobuf encoding of the same spans);
- ``alone``: the exporter applies every edit itself (token engine), builds records, writes JSONL;
- ``behind``: the exporter reads spans already corrected by ``TokenFixSpanProcessor`` back, builds
  records, writes JSONL.
Target (issue 4): the exporter is not slower than OTLP encoding of the same spans (ratio <= 1).

Run: ``.venv/bin/python bench/triplets_bench.py [--traces 20] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

CALLS = 10
RESPONSE_TOKENS = 1000
WORDS = (
    "the model writes a long answer about rivers mountains cities history science music language code data "
    "agents tools search results because every step needs careful reasoning before the final reply arrives "
    "while users wait patiently for useful clear and correct information today"
).split()


def _text(rng: random.Random, tok, n_tokens: int) -> tuple[str, list[int]]:
    words = []
    ids: list[int] = []
    while len(ids) < n_tokens:
        words.extend(rng.choice(WORDS) for _ in range(64))
        ids = tok.encode(" ".join(words), add_special_tokens=False)
    text = tok.decode(ids[:n_tokens])
    return text, tok.encode(text, add_special_tokens=False)


def build_traces(tok, n_traces: int, seed: int = 1):
    """(raw spans, corrected spans) of ``n_traces`` traces, recorded with the real SDK."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_tokenfix.sdk.processor import TokenFixSpanProcessor

    im_start, im_end = 151644, 151645
    nl = tok.encode("\n", add_special_tokens=False)
    rng = random.Random(seed)
    raw, corrected = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    provider.add_span_processor(TokenFixSpanProcessor(SimpleSpanProcessor(corrected), tokenizers=tok, root_grace=0))
    tracer = provider.get_tracer("bench")
    for _ in range(n_traces):
        with tracer.start_as_current_span("agent.run"):
            history = [im_start, *tok.encode("system\nYou are helpful.", add_special_tokens=False), im_end, *nl]
            for k in range(CALLS):
                question = tok.encode(f"user\nStep {k}: continue.", add_special_tokens=False)
                prompt = [*history, im_start, *question, im_end, *nl, im_start,
                          *tok.encode("assistant\n", add_special_tokens=False)]
                text, ids = _text(rng, tok, RESPONSE_TOKENS)
                sampled = [*ids, im_end]
                attrs = {
                    "prompt_token_ids": prompt,
                    "response_token_ids": sampled,
                    "gen_ai.request.model": "qwen2.5",
                    "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
                    "gen_ai.completion.0.content": text,
                    "logprobs.content": json.dumps([{"logprob": -0.5} for _ in sampled]),
                }
                with tracer.start_as_current_span("openai.chat.completion", attributes=attrs):
                    pass
                words = text.split(" ")
                mid = len(words) // 2
                words[mid] = "EDITED"
                edited = " ".join(words)
                with tracer.start_as_current_span("agent.step") as step:
                    step.add_event("text.edited", {"tokenfix.edit.text": edited})
                history = [*prompt, *tok.encode(edited, add_special_tokens=False), im_end, *nl]
    provider.shutdown()
    return list(raw.get_finished_spans()), list(corrected.get_finished_spans())


def _batches(spans, size=512):
    return [spans[i : i + size] for i in range(0, len(spans), size)]


def time_encode(spans) -> float:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    t0 = time.perf_counter()
    for batch in _batches(spans):
        encode_spans(batch).SerializeToString()
    return time.perf_counter() - t0


def time_exporter(spans, tokenizers, path: str, root_grace: float | None) -> tuple[float, int]:
    """Export the stream in 512-span batches (like BatchSpanProcessor), then force_flush."""
    from otel_tokenfix.sdk.triplet_exporter import TripletExporter

    if os.path.exists(path):
        os.remove(path)
    ex = TripletExporter(path, tokenizers=tokenizers, timer=False, root_grace=root_grace, env={})
    t0 = time.perf_counter()
    for batch in _batches(spans):
        ex.export(batch)
    ex.force_flush()
    elapsed = time.perf_counter() - t0
    n = ex.stats.triplets
    st = ex.stats
    assert st.errors == 0 and st.edit_issues == 0 and ex.sink.pending == 0, (st, ex.sink.stats)
    assert st.corrected + st.fallback == n, st
    ex.shutdown()
    return elapsed, n


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from otel_tokenfix.engine import correct_text
    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer

    tok = qwen_tokenizer()
    correct_text(tok, tok.encode("warm up", add_special_tokens=False), "warmed up")  # build the engine table
    raw, corrected = build_traces(tok, args.traces)
    calls = args.traces * CALLS
    tmp = tempfile.mkdtemp(prefix="tokenfix-bench-")
    results: dict[str, list[float]] = {"encode": [], "alone": [], "behind": []}
    for _ in range(args.repeats):
        results["encode"].append(time_encode(raw))
        # alone, in-process: children end before their root, no grace needed
        t, n = time_exporter(raw, tok, os.path.join(tmp, "alone.jsonl"), 0.0)
        assert n == calls
        results["alone"].append(t)
        t, n = time_exporter(corrected, None, os.path.join(tmp, "behind.jsonl"), None)
        assert n == calls
        results["behind"].append(t)
    best = {k: min(v) for k, v in results.items()}
    size = os.path.getsize(os.path.join(tmp, "alone.jsonl"))
    print(f"stream: {args.traces} traces x {CALLS} LLM calls, {RESPONSE_TOKENS}-token responses, 1 edit per call; "
          f"{len(raw)} spans; JSONL {size / 1e6:.1f} MB; best of {args.repeats}")
    print(f"{'path':<44} {'s/stream':>9} {'triplets/s':>11} {'ratio vs encode':>16}")
    rows = [
        ("OTLP encode_spans (same spans)", "encode"),
        ("TripletExporter alone (applies edits)", "alone"),
        ("TripletExporter behind processor (reads back)", "behind"),
    ]
    for label, key in rows:
        t = best[key]
        print(f"{label:<44} {t:>9.3f} {calls / t:>11.0f} {t / best['encode']:>16.2f}")
    print("median s/stream: " + ", ".join(f"{k}={statistics.median(v):.3f}" for k, v in results.items()))
    return best


if __name__ == "__main__":
    main()
