"""OTLP protobuf -> SpanView.

Why lazy attributes: most spans a service receives are not LLM spans; the trace assembly only asks
whether a few keys exist. Building a key index of the protobuf ``KeyValue`` list is cheap, converting a
1k-token int array is not, so values are converted on first read and cached. Arrays become tuples (as
in the SDK), ids become ints, so the middle sees the same values whatever door a span came through.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..trace.view import EventView, SpanView, make_span_view

#: OTLP span flags (trace.proto): bit 8 says whether bit 9 (parent is remote) is known.
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200


def any_value(value: AnyValue) -> Any:
    """One OTLP AnyValue as a plain Python value (arrays -> tuples, kvlists -> dicts, unset -> None)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "array_value":
        array = value.array_value
        values = array.values
        if values and values[0].WhichOneof("value") == "int_value":  # the hot path: token ids
            if len(values) >= _PACKED_FROM:
                ints = packed_ints(array.SerializeToString(), len(values))
                if ints is not None:
                    return ints
            return _int_tuple(values)
        return tuple(any_value(v) for v in values)
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    return None


def _int_tuple(values: Any) -> tuple[Any, ...]:
    """An array whose first element is an int: one element at a time (the general path)."""
    ints = tuple(v.int_value for v in values)
    # a non-int element reads as 0: only zeros need a type check (cheap: most ids are not 0)
    if 0 not in ints or all(values[i].WhichOneof("value") == "int_value" for i, x in enumerate(ints) if x == 0):
        return ints
    return tuple(any_value(v) for v in values)


#: arrays from this many elements are read in bulk (below, numpy's per-call cost outweighs the per-element reads)
_PACKED_FROM = 32
_TAG_VALUES, _TAG_INT = 0x0A, 0x18  # ArrayValue.values (field 1, length-delimited); AnyValue.int_value (3, varint)


def packed_ints(raw: bytes, n: int) -> tuple[int, ...] | None:
    """The ints of a serialized ``ArrayValue`` of ``n`` elements, each an ``AnyValue`` holding only a
    non-negative ``int_value`` below 2**63, decoded with a few numpy passes instead of ``n`` protobuf
    element reads (a 1k-token array: about half the time, serialization included). ``None`` when the bytes
    are anything else (a negative or other value, an empty element, an unknown field): the caller then
    reads element by element.

    Why the checks are complete: the bytes below 0x80 are each element's tag ``0A``, length, tag ``18``
    and its varint's last byte; the varint's other bytes are >= 0x80. So with exactly ``4n`` such bytes at
    ``h0 h1 h2 h3`` per element (the first at 0), the gaps ``h1-h0``, ``h2-h1`` and ``h0'-h3`` (``size-h3``
    after the last) are each >= 1 and sum to ``size - sum(h3-h2)``: all are 1 exactly when that sum is
    ``3n``. Then every element is ``0A <k+1> 18 <varint of k bytes>`` once its three header bytes match."""
    b = np.frombuffer(raw, dtype=np.uint8)
    size = b.size
    term = (b < 0x80).nonzero()[0]
    if n == 0 or term.size != 4 * n or term[0] != 0:
        return None
    heads = term.reshape(n, 4)
    last = heads[:, 3]
    k = last - heads[:, 2]  # bytes of each varint
    if int(k.sum()) != size - 3 * n:
        return None
    kmax = int(k.max())
    if kmax > 9:  # 10 bytes: a negative int64 (the general path)
        return None
    at = b[term].reshape(n, 4)
    if not ((at[:, 0] == _TAG_VALUES).all() and (at[:, 2] == _TAG_INT).all() and (at[:, 1] == k + 1).all()):
        return None
    value = at[:, 3].astype(np.int64)  # Horner from each varint's last byte back to its first
    if kmax > 1:
        payload = (b & 0x7F).astype(np.int64)
        for j in range(1, kmax):
            value = np.where(k > j, value << 7 | payload[last - j], value)
    return tuple(value.tolist())


class LazyAttributes(Mapping[str, Any]):
    """A read-only mapping over a repeated ``KeyValue``; values converted on first access.

    The key index is built at once (``in`` checks are the hot path of the assembly); values are
    converted when read. Duplicate keys (allowed on the wire, not in the SDK): the last one wins.
    """

    __slots__ = ("_index", "_cache")

    def __init__(self, kvs: Any) -> None:
        # the KeyValue itself, not ``kv.value``: one protobuf wrapper less per attribute until it is read
        self._index: dict[str, Any] = {kv.key: kv for kv in kvs}
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        cache = self._cache
        if key in cache:
            return cache[key]
        value = any_value(self._index[key].value)
        cache[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._cache:
            return self._cache[key]
        if key not in self._index:
            return default
        return self[key]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> Any:
        return self._index.keys()

    def items(self) -> Any:
        return [(k, self[k]) for k in self._index]

    def values(self) -> Any:
        return [self[k] for k in self._index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"LazyAttributes({dict(self.items())!r})"


def attributes(kvs: Any) -> dict[str, Any]:
    """Eager conversion (resources, events: small and read often)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def _id(raw: bytes) -> int:
    return int.from_bytes(raw, "big") if raw else 0


@dataclass(frozen=True, slots=True)
class SpanRef:
    """Where a span came from inside a request: what an edge needs to re-emit it (``SpanView.source``)."""

    span: Span
    resource: Resource
    resource_schema_url: str
    scope: InstrumentationScope
    scope_schema_url: str


_new = object.__new__
_ref_span, _ref_resource, _ref_resource_url, _ref_scope, _ref_scope_url = (
    SpanRef.__dict__[name].__set__ for name in ("span", "resource", "resource_schema_url", "scope", "scope_schema_url"))


def _span_ref(span: Span, resource: Resource, resource_url: str, scope: InstrumentationScope,
              scope_url: str) -> SpanRef:
    """``SpanRef(...)`` built through the slot descriptors (see :func:`make_span_view`): one per span."""
    ref = _new(SpanRef)
    _ref_span(ref, span)
    _ref_resource(ref, resource)
    _ref_resource_url(ref, resource_url)
    _ref_scope(ref, scope)
    _ref_scope_url(ref, scope_url)
    return ref


_HAS_REMOTE_PARENT = FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
_from_bytes = int.from_bytes


def span_view(span: Span, resource_attrs: Mapping[str, Any], ref: SpanRef | None = None) -> SpanView:
    """One protobuf span as a SpanView (``source`` is the SpanRef, or the span when no ref is given)."""
    raw_parent = span.parent_span_id
    parent = _from_bytes(raw_parent, "big") if raw_parent else 0
    events = span.events
    return make_span_view(
        _id(span.trace_id),
        _id(span.span_id),
        parent or None,
        span.name,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        LazyAttributes(span.attributes),
        tuple(EventView(ev.name, ev.time_unix_nano, attributes(ev.attributes)) for ev in events) if events else (),
        resource_attrs,
        bool(parent) and span.flags & _HAS_REMOTE_PARENT == _HAS_REMOTE_PARENT,
        ref if ref is not None else span,
    )


def request_views(request: ExportTraceServiceRequest) -> list[SpanView]:
    """Every span of an export request as SpanViews, in request order, with resource attributes."""
    out: list[SpanView] = []
    append = out.append
    for rs in request.resource_spans:
        resource = rs.resource
        res_attrs = attributes(resource.attributes)
        res_url = rs.schema_url
        for ss in rs.scope_spans:
            scope, scope_url = ss.scope, ss.schema_url
            for span in ss.spans:
                append(span_view(span, res_attrs, _span_ref(span, resource, res_url, scope, scope_url)))
    return out


def parse_request(data: bytes) -> ExportTraceServiceRequest:
    """Parse a binary OTLP trace request; raises ``google.protobuf.message.DecodeError`` on bad bytes."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    return request
