"""SDK edge: ``ReadableSpan`` -> :class:`SpanView`, and the corrected ``ReadableSpan`` copy.

Why a copy: ``on_end`` receives a frozen span (mutations are dropped), so the only way for downstream
to see corrected ids is a new ``ReadableSpan`` with the same ids, times, events, links, status, resource
and scope, and the original attributes plus the corrector's overlay. The constructor is documented
"users should not create these", so ``tests/sdk/test_processor_spans.py`` pins it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan

from ..trace.view import EventView, SpanView


def plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as a plain dict without copying: an ended span's ``BoundedAttributes`` is
    immutable, and its inner dict makes key checks ~10x cheaper than the ``MutableMapping`` protocol."""
    attrs = span._attributes  # noqa: SLF001
    if attrs is None:
        return {}
    inner = getattr(attrs, "_dict", None)
    return inner if isinstance(inner, dict) else attrs


def to_view(span: ReadableSpan) -> SpanView:
    """A SpanView over the span's own (immutable) attribute mapping: no copy on the hot path."""
    ctx = span.context
    parent = span.parent
    events: tuple[EventView, ...] = ()
    raw_events = span._events  # noqa: SLF001 - avoids the tuple copy of ``.events`` for event-less spans
    if raw_events:
        events = tuple(EventView(e.name, e.timestamp, e.attributes or {}) for e in raw_events)
    resource = span.resource
    return SpanView(
        trace_id=ctx.trace_id if ctx is not None else 0,
        span_id=ctx.span_id if ctx is not None else 0,
        parent_span_id=parent.span_id if parent is not None else None,
        name=span.name,
        start_time=span.start_time or 0,
        end_time=span.end_time or 0,
        attributes=plain_attributes(span),
        events=events,
        resource_attributes=resource.attributes if resource is not None else {},
        parent_is_remote=bool(parent is not None and parent.is_remote),
        source=span,
    )


_SCALARS = (bool, int, float, str)


def _homogeneous(value: Any) -> bool:
    """An attribute array the SDK would accept: a tuple whose items all have one scalar type."""
    kinds = set(map(type, value))
    return len(kinds) <= 1 and (not kinds or next(iter(kinds)) in _SCALARS)


def corrected_copy(span: ReadableSpan, overlay: Mapping[str, Any]) -> ReadableSpan:
    """A copy of ``span`` whose attributes are the original ones plus ``overlay`` (overlay wins).

    No attribute count limit applies to the copy (the overlay must never push original attributes out);
    the original's dropped-attribute, event and link counts are kept (events/links are passed as the
    same bounded lists), so its OTLP encoding differs only by the overlay keys.
    """
    merged: dict[str, Any] = dict(plain_attributes(span))
    odd = {}
    for key, value in overlay.items():
        if type(value) in _SCALARS or (isinstance(value, tuple) and _homogeneous(value)):
            merged[key] = value  # already a valid attribute value: one C-speed type check, no SDK cleaning
        else:
            odd[key] = value
    if odd:  # anything else goes through the SDK's own cleaning (lists become tuples, invalid values drop)
        clean = BoundedAttributes(maxlen=None, attributes=odd, immutable=False)
        for key in odd:
            if key in clean:
                merged[key] = clean[key]
    attributes = BoundedAttributes(maxlen=None, immutable=True)
    attributes._dict = merged  # noqa: SLF001 - original values are already clean; skip re-validating them
    attributes.dropped = span.dropped_attributes
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=span._events,  # noqa: SLF001 - keep the BoundedList (dropped count)
        links=span._links,  # noqa: SLF001
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
