"""Python values -> OTLP protobuf, a corrected copy of a protobuf span, and re-batching into requests.

Why copy and not mutate: the received request may still be referenced (spool, retries, other traces'
spans in the same message); a corrected span is a new message equal to the original except for the
overlay keys, like the SDK path's corrected ReadableSpan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from .decode import SpanRef


def set_any_value(target: AnyValue, value: Any) -> None:
    """Write ``value`` into ``target`` (bool before int: ``True`` is an int in Python)."""
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, (bytes, bytearray)):
        target.bytes_value = bytes(value)
    elif isinstance(value, Mapping):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for k, v in value.items():
            set_any_value(kvlist.values.add(key=str(k)).value, v)
    elif isinstance(value, Sequence):
        array = target.array_value
        array.SetInParent()
        if value and all(type(v) is int for v in value):
            array.values.extend(AnyValue(int_value=v) for v in value)
        else:
            for v in value:
                set_any_value(array.values.add(), v)
    elif value is None:
        pass  # an empty AnyValue
    else:
        target.string_value = str(value)


def to_any_value(value: Any) -> AnyValue:
    out = AnyValue()
    set_any_value(out, value)
    return out


def apply_overlay(span: Span, overlay: Mapping[str, Any]) -> Span:
    """A copy of ``span`` with ``overlay`` keys set (replaced in place, else appended; ``None`` removes)."""
    out = Span()
    out.CopyFrom(span)
    if not overlay:
        return out
    remaining = dict(overlay)
    kept: list[KeyValue] = []
    for kv in out.attributes:
        if kv.key in remaining:
            value = remaining.pop(kv.key)
            if value is None:
                continue
            new = KeyValue(key=kv.key)
            set_any_value(new.value, value)
            kept.append(new)
        else:
            kept.append(kv)
    for key, value in remaining.items():
        if value is None:
            continue
        new = KeyValue(key=key)
        set_any_value(new.value, value)
        kept.append(new)
    del out.attributes[:]
    out.attributes.extend(kept)
    return out


def build_request(items: Iterable[tuple[SpanRef, Span]]) -> ExportTraceServiceRequest:
    """Group spans back under their resource and scope (by identity of the received messages)."""
    request = ExportTraceServiceRequest()
    resources: dict[int, tuple[ResourceSpans, dict[int, ScopeSpans]]] = {}
    for ref, span in items:
        entry = resources.get(id(ref.resource))
        if entry is None:
            rs = request.resource_spans.add()
            rs.resource.CopyFrom(ref.resource)
            rs.schema_url = ref.resource_schema_url
            entry = (rs, {})
            resources[id(ref.resource)] = entry
        rs, scopes = entry
        ss = scopes.get(id(ref.scope))
        if ss is None:
            ss = rs.scope_spans.add()
            ss.scope.CopyFrom(ref.scope)
            ss.schema_url = ref.scope_schema_url
            scopes[id(ref.scope)] = ss
        ss.spans.append(span)
    return request
