"""OTLP protobuf / JSON <-> SpanView: the service door sees exactly what the SDK door sees, and a
corrected protobuf copy differs from the original only in the overlay keys."""

from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_tokenfix.otlp import (
    LazyAttributes,
    any_value,
    apply_overlay,
    build_request,
    request_from_json,
    request_to_dict,
    request_to_json,
    request_views,
    to_any_value,
)
from otel_tokenfix.sdk.spans import to_view


def sdk_spans():
    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent", "agentlightning.rollout_id": "r7"}))
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("t", "1.2")
    remote = SpanContext(trace_id=0xABC, span_id=0x1234, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span("agent.run", context=trace.set_span_in_context(NonRecordingSpan(remote))):
        with tracer.start_as_current_span("llm", attributes={
            "response_token_ids": [5, 0, 151645, 7], "prompt_token_ids": [1, 2], "gen_ai.request.model": "qwen2.5",
            "flag": True, "score": 0.25, "tags": ["a", "b"], "weights": [0.5, 1.5], "bits": [True, False],
        }) as llm:
            llm.add_event("text.edited", {"tokenfix.edit.text": "x", "tokenfix.edit.token_ids": [1, 2, 3]})
        with tracer.start_as_current_span("empty"):
            pass
    provider.shutdown()
    return list(mem.get_finished_spans())


def plain(view):
    return (view.trace_id, view.span_id, view.parent_span_id, view.name, view.start_time, view.end_time,
            dict(view.attributes.items()), [(e.name, e.time_unix_nano, dict(e.attributes)) for e in view.events],
            dict(view.resource_attributes), view.parent_is_remote, view.is_local_root)


def test_otlp_views_equal_sdk_views():
    spans = sdk_spans()
    views = request_views(encode_spans(spans))
    assert [plain(v) for v in views] == [plain(to_view(s)) for s in spans]
    root = next(v for v in views if v.name == "agent.run")
    assert root.parent_span_id == 0x1234 and root.parent_is_remote and root.is_local_root
    child = next(v for v in views if v.name == "llm")
    assert not child.parent_is_remote and not child.is_local_root
    assert child.attributes["response_token_ids"] == (5, 0, 151645, 7)  # tuples, like the SDK
    assert child.source.scope.name == "t" and child.source.resource.attributes


def test_json_round_trip_and_hex_ids():
    request = encode_spans(sdk_spans())
    text = request_to_json(request)
    obj = json.loads(text)
    span0 = obj["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span0["traceId"]) == 32 and int(span0["traceId"], 16)  # hex, as OTLP/JSON writes ids
    assert request_from_json(text) == request
    obj["unknownField"] = {"x": 1}  # receivers must ignore unknown fields
    obj["resourceSpans"][0]["futureThing"] = 3
    assert request_from_json(json.dumps(obj)) == request
    assert request_to_dict(request_from_json(text)) == json.loads(text)


def test_any_value_types_and_mixed_arrays():
    values = ["s", True, 7, 2.5, b"\x00\x01", (1, 2, 3), ("a", "b"), (0.5, 1.5), {"k": 1, "n": {"m": "v"}}, ()]
    for v in values:
        got = any_value(to_any_value(v))
        assert got == v and type(got) is type(v)
    mixed = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=3), AnyValue(string_value="x"), AnyValue()]))
    assert any_value(mixed) == (3, "x", None)  # a non-int element reads as 0 in the fast path: must not
    zero_first = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=0), AnyValue(bool_value=True)]))
    assert any_value(zero_first) == (0, True)
    assert any_value(AnyValue()) is None


def test_lazy_attributes_last_duplicate_wins():
    kvs = [KeyValue(key="a", value=AnyValue(int_value=1)), KeyValue(key="a", value=AnyValue(int_value=2)),
           KeyValue(key="b", value=AnyValue(string_value="x"))]
    attrs = LazyAttributes(kvs)
    assert attrs["a"] == 2 and attrs.get("b") == "x" and attrs.get("zz", 5) == 5 and "zz" not in attrs
    assert dict(attrs.items()) == {"a": 2, "b": "x"} and len(attrs) == 2 and attrs == {"a": 2, "b": "x"}


def test_apply_overlay_copies_and_changes_only_overlay_keys():
    span = Span(name="llm", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=5, end_time_unix_nano=9)
    span.attributes.extend([KeyValue(key="response_token_ids", value=to_any_value((1, 2, 3))),
                            KeyValue(key="keep", value=to_any_value("k")),
                            KeyValue(key="drop", value=to_any_value(1))])
    span.events.add(name="e", time_unix_nano=7)
    before = span.SerializeToString()
    out = apply_overlay(span, {"response_token_ids": (1, 9), "tokenfix.status": "corrected",
                               "tokenfix.response.provenance": (1, 0), "drop": None})
    assert span.SerializeToString() == before  # the received span is untouched
    assert [kv.key for kv in out.attributes] == ["response_token_ids", "keep", "tokenfix.status",
                                                 "tokenfix.response.provenance"]
    attrs = LazyAttributes(out.attributes)
    assert attrs["response_token_ids"] == (1, 9) and attrs["tokenfix.status"] == "corrected"
    for field in ("name", "trace_id", "span_id", "start_time_unix_nano", "end_time_unix_nano", "events"):
        assert getattr(out, field) == getattr(span, field)


def test_build_request_regroups_by_resource_and_scope():
    spans = sdk_spans()
    a = encode_spans(spans[:2])
    b = encode_spans(spans[2:])
    views = request_views(a) + request_views(b)
    rebuilt = build_request([(v.source, v.source.span) for v in views])
    assert isinstance(rebuilt, ExportTraceServiceRequest)
    assert [plain(v) for v in request_views(rebuilt)] == [plain(v) for v in views]
    assert len(rebuilt.resource_spans) == 2  # one per received ResourceSpans message, resource kept
    assert all(rs.resource.attributes for rs in rebuilt.resource_spans)
