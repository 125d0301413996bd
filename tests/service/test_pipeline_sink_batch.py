"""One sink write per correction batch: a request releasing several traces reaches the sink as one write
with the same records, in the same order, as one write per trace gave (each trace's lines together)."""

from __future__ import annotations

from itertools import groupby

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_tokenfix.service.pipeline import Pipeline, PipelineOptions

from .otlp_payloads import agent_requests


class WriteLog:
    """A real sink that keeps each ``write`` call's records (one list per call)."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def write(self, records) -> None:
        self.calls.append(list(records))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _run(requests, qwen) -> list[list]:
    sink = WriteLog()
    pipeline = Pipeline(tokenizers={"qwen2.5": qwen}, sink=sink, options=PipelineOptions(root_grace=0))
    for req in requests:
        pipeline.submit(req)
    pipeline.close()
    return sink.calls


def test_a_request_of_several_traces_is_one_write_with_the_per_trace_records(qwen):
    requests, runs = agent_requests(qwen, 4)
    merged = ExportTraceServiceRequest()
    for req in requests:
        merged.MergeFrom(req)
    per_trace = _run(requests, qwen)
    batched = _run([merged], qwen)
    assert len(per_trace) == 4 and len(batched) == 1
    lines = [r.to_json_line() for r in batched[0]]
    assert lines == [r.to_json_line() for call in per_trace for r in call]
    traces = [r.trace_id for r in batched[0]]
    assert len(set(traces)) == 4
    assert len([t for t, _ in groupby(traces)]) == 4  # each trace's lines together
