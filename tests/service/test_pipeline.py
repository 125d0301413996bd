"""The service pipeline in-process: requests are acknowledged once held (correction runs on the worker),
and a backlog pushes back *before* a request is taken (so a sender's retry cannot duplicate spans)."""

from __future__ import annotations

import threading
import time

import pytest

from otel_tokenfix.service.pipeline import Pipeline, PipelineOptions, ServiceUnavailable

from .otlp_payloads import agent_requests, span_count


class BlockingSink:
    """A real sink (keeps records) that blocks writes until released: a slow disk or trainer."""

    def __init__(self) -> None:
        self.records: list = []
        self.gate = threading.Event()

    def write(self, records) -> None:
        assert self.gate.wait(30)
        self.records.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_ack_does_not_wait_for_correction_and_backlog_pushes_back(qwen):
    requests, runs = agent_requests(qwen, 4)
    sink = BlockingSink()
    opts = PipelineOptions(root_grace=0, max_queued_spans=span_count(requests[:2]), backpressure_timeout=0.3)
    pipeline = Pipeline(tokenizers={"qwen2.5": qwen}, sink=sink, options=opts)
    pipeline.start()
    try:
        t = time.monotonic()
        for req in requests[:3]:  # the first release blocks the worker inside the sink
            pipeline.submit(req)
        assert time.monotonic() - t < 5 and not sink.records
        taken = pipeline.stats.spans
        with pytest.raises(ServiceUnavailable):
            pipeline.submit(requests[3])  # backlog over the limit: refused, not taken
        assert pipeline.stats.spans == taken and pipeline.stats.requests == 3
        sink.gate.set()
        assert pipeline.wait_idle(30)
        pipeline.submit(requests[3])  # the sender's retry is accepted once the backlog is gone
    finally:
        sink.gate.set()
        pipeline.close()
    assert len(sink.records) == 12
    assert {r.trace_id for r in sink.records} == {format(r.trace_id, "032x") for r in runs}
    assert sum(r.metadata["status"] == "corrected" for r in sink.records) == 8
