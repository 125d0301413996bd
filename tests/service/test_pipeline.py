"""The service pipeline in-process: requests are acknowledged once held (correction runs on the worker),
and a backlog pushes back *before* a request is taken (so a sender's retry cannot duplicate spans)."""

from __future__ import annotations

import threading
import time
from collections import Counter

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


def _ids_in(request) -> int:
    from otel_tokenfix.otlp.decode import request_views
    from otel_tokenfix.trace.assembly import ids_weight

    return sum(ids_weight(v.attributes) for v in request_views(request))


def test_queued_token_ids_bound_refuses_over_grpc_and_http_with_retry_hints(qwen):
    """The queue's id bound (not only spans): a full queue refuses gRPC with UNAVAILABLE + RetryInfo and
    HTTP with 503 + Retry-After, counts the refusals, and takes the retried requests once it drains."""
    import grpc
    import httpx
    from google.rpc import error_details_pb2, status_pb2

    from otel_tokenfix.service.grpc_server import SERVICE_NAME, GrpcReceiver
    from otel_tokenfix.service.http_app import make_app
    from otel_tokenfix.service.server import _HttpThread

    requests, runs = agent_requests(qwen, 4)
    assert _ids_in(requests[0]) > 0
    sink = BlockingSink()
    # spans are no limit here; ids are: the first trace's ids fill the queue
    opts = PipelineOptions(root_grace=0, max_queued_spans=10_000, max_queued_ids=_ids_in(requests[0]) - 1,
                           backpressure_timeout=0.2, retry_after=2.0)
    pipeline = Pipeline(tokenizers={"qwen2.5": qwen}, sink=sink, options=opts)
    pipeline.start()
    receiver = GrpcReceiver(pipeline, host="127.0.0.1", port=0)
    receiver.start()
    http = _HttpThread(make_app(pipeline), "127.0.0.1", 0)
    http.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    export = channel.unary_unary(f"/{SERVICE_NAME}/Export")
    try:
        export(requests[0].SerializeToString(), timeout=10)  # released at once (root grace 0), queue now full
        deadline = time.monotonic() + 10
        while not pipeline.saturated() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipeline.saturated()
        with pytest.raises(grpc.RpcError) as info:
            export(requests[1].SerializeToString(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        details = dict(info.value.trailing_metadata()).get("grpc-status-details-bin")
        status = status_pb2.Status.FromString(details)
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 2
        url = f"http://127.0.0.1:{http.port}/v1/traces"
        r = httpx.post(url, content=requests[1].SerializeToString(),
                       headers={"content-type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert pipeline.stats.requests == 1 and pipeline.stats.busy_requests == 2
        assert pipeline.snapshot()["queued_ids"] == _ids_in(requests[0])
        sink.gate.set()
        assert pipeline.wait_idle(30)
        for req in requests[1:]:  # the senders' retries are taken once the queue drained
            r = httpx.post(url, content=req.SerializeToString(), headers={"content-type": "application/x-protobuf"},
                           timeout=10)
            assert r.status_code == 200
            assert pipeline.wait_idle(30)
    finally:
        sink.gate.set()
        channel.close()
        receiver.stop(1.0)
        http.stop(1.0)
        pipeline.close()
    assert len(sink.records) == 12
    assert {r.trace_id for r in sink.records} == {format(r.trace_id, "032x") for r in runs}


class RecordingForwarder:
    """A next hop that keeps what it is given (the Forwarding protocol's two methods)."""

    def __init__(self) -> None:
        self.items: list = []

    def submit(self, items) -> None:
        self.items.extend(items)

    def close(self, timeout: float = 10.0) -> None:
        pass


def test_forward_marks_unchanged_only_in_traces_with_edits(qwen):
    """As the SDK processor: a trace without any edit goes on untouched (the very protobuf spans, no
    ``tokenfix.status``); in a trace with edits, an LLM span without its own edit is marked ``unchanged``."""
    from otel_tokenfix.trace import conventions as cv

    plain, _ = agent_requests(qwen, 2, edit=False)
    edited, _ = agent_requests(qwen, 2)
    for mark in (True, False):
        fwd = RecordingForwarder()
        pipeline = Pipeline(tokenizers={"qwen2.5": qwen}, sink=[], forwarder=fwd,
                            options=PipelineOptions(root_grace=0, mark_unchanged=mark))
        sent = {}
        for req in plain + edited:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        sent[(s.trace_id, s.span_id)] = s
            pipeline.submit(req)
        pipeline.close()
        assert len(fwd.items) == len(sent)
        plain_traces = {s.trace_id for r in plain for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans}
        status = {}
        for ref, span in fwd.items:
            attrs = {kv.key: kv.value for kv in span.attributes}
            if span.trace_id in plain_traces:
                assert span is ref.span is sent[(span.trace_id, span.span_id)]  # untouched
                assert cv.STATUS not in attrs
            elif "response_token_ids" in attrs:
                status[span.span_id] = attrs[cv.STATUS].string_value if cv.STATUS in attrs else None
        # 3 LLM calls per edited run, 2 of them edited (agent_traces.TURNS)
        assert Counter(status.values()) == {"corrected": 4, ("unchanged" if mark else None): 2}
        assert pipeline.stats.unchanged == 2 + 6 and pipeline.stats.corrected == 4


def test_rewards_on_traces_without_llm_calls_are_counted():
    from otel_tokenfix.trace.view import SpanView

    def view(tid, sid, parent, attrs):
        return SpanView(trace_id=tid, span_id=sid, parent_span_id=parent, name="s", start_time=1, end_time=2,
                        attributes=attrs)

    pipeline = Pipeline(tokenizers=None, sink=[], options=PipelineOptions(root_grace=0))
    pipeline.add_views([view(1, 11, 10, {"agentlightning.reward.0.value": 1.0}), view(1, 10, None, {}),
                        view(2, 21, 20, {"reward": 0.5, "other": 1}), view(2, 20, None, {}),  # not an annotation
                        view(3, 31, 30, {"agentops.task.output": '{"type": "reward", "value": 2}'}),
                        view(3, 30, None, {"x": 1})])
    pipeline.close()
    assert pipeline.stats.traces == 3 and pipeline.stats.orphan_rewards == 2


def test_triplet_only_mode_writes_the_same_records_as_forwarding(qwen):
    """Without a next hop no overlay is built (the fast path); the triplets are byte for byte the same."""
    requests, _ = agent_requests(qwen, 3)
    lines = []
    for forwarder in (None, RecordingForwarder()):
        sink: list = []
        pipeline = Pipeline(tokenizers={"qwen2.5": qwen}, sink=sink, forwarder=forwarder,
                            options=PipelineOptions(root_grace=0))
        for req in requests:
            pipeline.submit(req)
        pipeline.close()
        lines.append([r.to_json_line() for r in sink])
    assert len(lines[0]) == 9 and lines[0] == lines[1]
