"""SpanView: the plain, immutable record every entry door converts spans into.

Why: the conventions, trace assembly and correction must not depend on SDK classes or protobuf
messages, so the SDK processor, the OTLP service and the file converter share one code path. Edges
keep the original object in ``source`` to rebuild a corrected copy in their own format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

AttributeValue = Any  # str | bool | int | float | tuple of those (SDK) — or whatever a door produced


class CheckedList(list):  # type: ignore[type-arg]
    """A list whose producer guarantees its element types: provenance codes that are ints 0, 1 or 2, or
    log-probs that are floats or ``None``. Why: the record builder checks each token's type for lists from
    anywhere; for the corrector's own lists (built from the engine's codes and parsed floats) those passes
    are skipped. Only the corrector makes them; a plain list is always checked."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class EventView:
    name: str
    time_unix_nano: int
    attributes: Mapping[str, AttributeValue]


@dataclass(frozen=True, slots=True)
class SpanView:
    trace_id: int
    span_id: int
    parent_span_id: int | None
    name: str
    start_time: int
    end_time: int
    attributes: Mapping[str, AttributeValue]
    events: tuple[EventView, ...] = ()
    resource_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    #: True when the parent lives in another process (remote parent): the span is a *local* root.
    parent_is_remote: bool = False
    #: The object this view was made from (ReadableSpan, protobuf Span, ...); edges only.
    source: Any = field(default=None, compare=False, repr=False)
    #: Values the readers in ``conventions`` derived from ``attributes`` (parsed ids, logprobs), so a
    #: 1k-token JSON string is parsed once per span however many readers ask. Not an init argument: a
    #: ``dataclasses.replace`` copy (other attributes) starts with an empty memo.
    memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def is_local_root(self) -> bool:
        return self.parent_span_id is None or self.parent_is_remote

    @property
    def span_id_hex(self) -> str:
        return format(self.span_id, "016x")

    @property
    def trace_id_hex(self) -> str:
        return format(self.trace_id, "032x")



_SPAN_VIEW_FIELDS = ("trace_id", "span_id", "parent_span_id", "name", "start_time", "end_time", "attributes",
                     "events", "resource_attributes", "parent_is_remote", "source", "memo")
if tuple(f.name for f in fields(SpanView)) != _SPAN_VIEW_FIELDS:  # pragma: no cover - a guard for editors
    raise AssertionError("SpanView fields changed: update make_span_view")
_new = object.__new__
(_s_tid, _s_sid, _s_parent, _s_name, _s_start, _s_end, _s_attrs, _s_events, _s_res, _s_remote, _s_source,
 _s_memo) = (SpanView.__dict__[name].__set__ for name in _SPAN_VIEW_FIELDS)


def make_span_view(trace_id: int, span_id: int, parent_span_id: int | None, name: str, start_time: int,
                   end_time: int, attributes: Mapping[str, AttributeValue], events: tuple[EventView, ...],
                   resource_attributes: Mapping[str, AttributeValue], parent_is_remote: bool, source: Any) -> SpanView:
    """``SpanView(...)`` with every field given, built in half the time: each slot is written through its
    descriptor, as the frozen dataclass's ``__init__`` does through ``object.__setattr__``, without its
    per-field lookups. Why: the OTLP door builds one per received span."""
    view = _new(SpanView)
    _s_tid(view, trace_id)
    _s_sid(view, span_id)
    _s_parent(view, parent_span_id)
    _s_name(view, name)
    _s_start(view, start_time)
    _s_end(view, end_time)
    _s_attrs(view, attributes)
    _s_events(view, events)
    _s_res(view, resource_attributes)
    _s_remote(view, parent_is_remote)
    _s_source(view, source)
    _s_memo(view, {})
    return view
