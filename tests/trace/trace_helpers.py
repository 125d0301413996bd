"""Plain SpanView builders for the middle's tests (no SDK: the middle never sees SDK classes)."""

from __future__ import annotations

import itertools
from typing import Any

from otel_tokenfix.trace import conventions as cv
from otel_tokenfix.trace.assembly import TraceAssembly, ids_weight
from otel_tokenfix.trace.view import EventView, SpanView

_ids = itertools.count(1)


def new_id() -> int:
    return next(_ids) * 7919 + 1


def span(
    trace_id: int,
    *,
    span_id: int | None = None,
    parent: int | None = None,
    name: str = "step",
    start: int = 0,
    end: int = 1,
    attrs: dict[str, Any] | None = None,
    events: tuple[EventView, ...] = (),
    remote_parent: bool = False,
) -> SpanView:
    return SpanView(
        trace_id=trace_id,
        span_id=span_id if span_id is not None else new_id(),
        parent_span_id=parent,
        name=name,
        start_time=start,
        end_time=end,
        attributes=attrs or {},
        events=events,
        parent_is_remote=remote_parent,
    )


def llm(trace_id: int, ids: list[int], *, parent: int | None = None, start: int = 0, end: int = 1,
        key: str = "response_token_ids", extra: dict[str, Any] | None = None, **kw: Any) -> SpanView:
    attrs = {key: tuple(ids), "gen_ai.request.model": "qwen"}
    attrs.update(extra or {})
    return span(trace_id, parent=parent, name="openai.chat.completion", start=start, end=end, attrs=attrs, **kw)


def edit(time: int, text: str | None = None, **attrs: Any) -> EventView:
    a: dict[str, Any] = {}
    if text is not None:
        a["tokenfix.edit.text"] = text
    for k, v in attrs.items():
        a["tokenfix.edit." + k.replace("__", ".")] = v
    return EventView("text.edited", time, a)


class Clock:
    """A clock the test moves by hand (``clock.t``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_assembly(**kw: Any) -> tuple[TraceAssembly, Clock]:
    """A TraceAssembly on a hand-moved clock, with no root grace unless given."""
    clock = Clock()
    kw.setdefault("root_grace", 0)
    return TraceAssembly(clock=clock, **kw), clock


def hold(a: TraceAssembly, s: SpanView, item: Any = None) -> list[Any]:
    """The general door for an LLM span without events (what add_held's callers do)."""
    return a.add_held(s.trace_id, s.span_id, s if item is None else item, s.is_local_root,
                      ids_weight(s.attributes), cv.read_response_id(s))
