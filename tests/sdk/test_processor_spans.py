"""The corrected ReadableSpan copy: pins the (documented internal) constructor and proves its OTLP encoding
equals the original's apart from the new attributes."""

from __future__ import annotations

import inspect

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otel_tokenfix.sdk.spans import corrected_copy, to_view


def test_readable_span_constructor_is_what_we_call() -> None:
    params = list(inspect.signature(ReadableSpan.__init__).parameters)
    for name in ("name", "context", "parent", "resource", "attributes", "events", "links", "kind", "status",
                 "start_time", "end_time", "instrumentation_scope"):
        assert name in params, name


def _one_span():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent", "agentlightning.rollout_id": "r1"}),
                              span_limits=SpanLimits(max_span_attributes=4, max_events=1, max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scope.name", "1.2.3")
    with tracer.start_as_current_span("parent") as parent:
        other = trace.SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=trace.TraceFlags(1))
        with tracer.start_as_current_span("llm", kind=SpanKind.CLIENT, links=[Link(other, {"k": 1}), Link(other)]) as s:
            s.set_attributes({"a": 1, "b": "two", "response_token_ids": (1, 2, 3), "c": 3.5, "d": True, "e": [1, 2]})
            s.add_event("e1", {"x": 1})
            s.add_event("e2", {"y": 2})
            s.set_status(Status(StatusCode.ERROR, "boom"))
        assert parent
    provider.shutdown()
    return next(s for s in exporter.get_finished_spans() if s.name == "llm")


def _attrs(pb_span) -> dict:
    return {kv.key: kv.value for kv in pb_span.attributes}


def test_copy_encodes_like_original_plus_overlay() -> None:
    span = _one_span()
    assert span.dropped_attributes > 0 and span.dropped_events > 0 and span.dropped_links > 0
    overlay = {"response_token_ids": (1, 9), "tokenfix.response.token_ids": (1, 9), "tokenfix.status": "corrected",
               "tokenfix.response.logprobs": (-0.5, float("nan")), **{f"tokenfix.k{i}": i for i in range(10)}}
    copy = corrected_copy(span, overlay)
    orig_pb = encode_spans([span]).resource_spans[0]
    copy_pb = encode_spans([copy]).resource_spans[0]
    assert orig_pb.resource == copy_pb.resource
    assert orig_pb.scope_spans[0].scope == copy_pb.scope_spans[0].scope
    o, c = orig_pb.scope_spans[0].spans[0], copy_pb.scope_spans[0].spans[0]
    oa, ca = _attrs(o), _attrs(c)
    # every original attribute survives (no attribute limit on the copy), overlay keys win
    assert set(ca) == set(oa) | set(overlay)
    for key in set(oa) - set(overlay):
        assert ca[key] == oa[key]
    assert [x.int_value for x in ca["response_token_ids"].array_value.values] == [1, 9]
    assert ca["tokenfix.status"].string_value == "corrected"
    del o.attributes[:]
    del c.attributes[:]
    assert o == c  # ids, parent, name, kind, times, events, links, status, dropped counts
    assert c.dropped_attributes_count == span.dropped_attributes
    assert c.dropped_events_count == 1 and c.dropped_links_count == 1


def test_view_of_sdk_span() -> None:
    span = _one_span()
    view = to_view(span)
    assert view.trace_id == span.context.trace_id and view.span_id == span.context.span_id
    assert view.parent_span_id == span.parent.span_id and not view.parent_is_remote and not view.is_local_root
    assert view.name == "llm" and view.start_time == span.start_time and view.end_time == span.end_time
    assert view.attributes["response_token_ids"] == (1, 2, 3)
    assert [e.name for e in view.events] == ["e2"]  # the SDK keeps the newest
    assert view.resource_attributes["agentlightning.rollout_id"] == "r1"
    assert view.source is span


def test_overlay_values_that_are_not_attribute_values_are_cleaned_like_the_sdk() -> None:
    from opentelemetry.attributes import BoundedAttributes

    span = _one_span()
    odd = {"as.list": [1, 2], "mixed": (1, "a"), "nested": {"k": [1]}}
    copy = corrected_copy(span, {**odd, "ok": (0.5, float("nan"))})
    sdk = BoundedAttributes(attributes=odd)
    for key in odd:
        assert copy.attributes.get(key) == sdk.get(key)
    assert copy.attributes["as.list"] == (1, 2) and copy.attributes["ok"][0] == 0.5
    encode_spans([copy])  # and it still encodes
