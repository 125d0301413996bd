"""`convert` streams: traces leave memory as their roots end (in span time), bad lines are skipped and
counted, and the result equals what `serve` writes for the same requests (same Pipeline)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

from otel_tokenfix.otlp.jsonfmt import request_to_json
from otel_tokenfix.service.convert import convert_file
from otel_tokenfix.service.pipeline import Pipeline, PipelineOptions
from otel_tokenfix.triplets.sinks import MemorySink

from .otlp_payloads import agent_requests, span_count
from .serve_helpers import REPO


def shifted(request, seconds: float):
    """The request with every time moved by ``seconds`` (a recording spread over time)."""
    out = type(request)()
    out.CopyFrom(request)
    delta = int(seconds * 1e9)
    for rs in out.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                s.start_time_unix_nano += delta
                s.end_time_unix_nano += delta
                for e in s.events:
                    e.time_unix_nano += delta
    return out


def test_convert_streams_with_bounded_memory(qwen, tmp_path):
    requests, runs = agent_requests(qwen, 30, per_request=5)  # traces split over several lines
    per_trace = span_count(requests) // 30
    # one trace every 10 s of span time: with a 1 s grace, each leaves before the next few arrive
    by_trace: dict[bytes, list] = {}
    for req in requests:
        by_trace.setdefault(req.resource_spans[0].scope_spans[0].spans[0].trace_id, []).append(req)
    lines, offset = [], 0.0
    for req in requests:
        tid = req.resource_spans[0].scope_spans[0].spans[0].trace_id
        offset = list(by_trace).index(tid) * 10.0
        lines.append(request_to_json(shifted(req, offset)))
    src = tmp_path / "spans.jsonl"
    src.write_text("\n".join(lines[:7] + ["{broken json", "[]", ""] + lines[7:]) + "\n")
    sink = MemorySink()
    result = convert_file(src, sink, tokenizers={"qwen2.5": qwen})
    assert result.bad_lines == 2 and result.lines == len(lines) + 2
    assert result.traces == 30 and result.triplets == 90 and result.corrected == 60
    assert result.max_held_spans <= 3 * per_trace, result.max_held_spans  # bounded by open traces
    # the same requests through the service's pipeline (no clock games: drained at the end) agree
    ref = MemorySink()
    pipeline = Pipeline(tokenizers={"qwen2.5": qwen}, sink=ref, options=PipelineOptions(root_grace=0))
    for req in requests:
        pipeline.submit(req)
    pipeline.close()

    def strip(recs):
        out = {}
        for r in recs:
            d = r.to_dict()
            d["metadata"].pop("release_reason", None)
            out[(d["trace_id"], d["index"])] = d
        return out

    assert strip(sink.records) == strip(ref.records)


def test_convert_cli_gzip_and_stdout(qwen, qwen_dir, tmp_path):
    requests, runs = agent_requests(qwen, 2)
    src = tmp_path / "spans.jsonl.gz"
    with gzip.open(src, "wt") as fh:
        for req in requests:
            fh.write(request_to_json(req) + "\n")
    proc = subprocess.run([sys.executable, "-m", "otel_tokenfix.cli.main", "convert", str(src), "-o", "-",
                           "--no-progress", "--tokenizer", f"qwen2.5={qwen_dir}"], capture_output=True, text=True,
                          cwd=REPO, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 6 and sum(r["metadata"]["status"] == "corrected" for r in records) == 4
    assert '"triplets": 6' in proc.stderr
    # default output name next to the input
    proc = subprocess.run([sys.executable, "-m", "otel_tokenfix.cli.main", "convert", str(src), "--no-progress",
                           "--tokenizer", f"qwen2.5={qwen_dir}"], capture_output=True, text=True, cwd=REPO,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "spans.triplets.jsonl"
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
