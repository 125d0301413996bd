"""``record_edit`` and ``record_reward``: the two calls an agent adds to its code.

Why events on a *later* span: an LLM span has ended by the time the agent edits its output, and the
SDK drops events added to ended spans, so the edit is an event on the current span naming its target
(see docs/conventions.md). Both helpers never raise into user code: they log and return ``False``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

from ..trace import conventions as cv

logger = logging.getLogger(__name__)

_TRACER_NAME = "otel_tokenfix"


def _target_attributes(target: Any) -> dict[str, Any]:
    """Event attributes naming ``target``: a span, a span context, a response id (str) or a span id (int)."""
    if target is None:
        return {}
    if isinstance(target, str):
        return {cv.EDIT_TARGET_RESPONSE_ID: target}
    if isinstance(target, int) and not isinstance(target, bool):
        return {cv.EDIT_TARGET_SPAN_ID: format(target, "016x")}
    ctx = None
    if isinstance(target, trace.SpanContext):
        ctx = target
    elif hasattr(target, "get_span_context"):
        ctx = target.get_span_context()
    elif isinstance(getattr(target, "context", None), trace.SpanContext):  # a ReadableSpan
        ctx = target.context
    if ctx is None or not ctx.is_valid:
        raise TypeError(f"cannot name an edit target from {type(target).__name__}")
    return {cv.EDIT_TARGET_SPAN_ID: format(ctx.span_id, "016x")}


def record_edit(
    edited_text: str | None = None,
    *,
    token_ids: Sequence[int] | None = None,
    target: Any = None,
    source: str | None = None,
    view: str | None = None,
    tracer_provider: Any = None,
) -> bool:
    """Record that the agent edited an LLM response: a ``text.edited`` event on the current span.

    ``edited_text`` is the full edited text (as the API returned it unless ``view="raw"``), or give
    ``token_ids`` for a token-level edit. ``target``: the LLM span (or its span context, its
    ``gen_ai.response.id``, or its span id as int); omitted, the edit applies to the LLM span of the same
    trace that ended most recently. With a target but no recording current span, a short root span
    ``tokenfix.edit`` carries the event (from ``tracer_provider``, default the global one). Returns
    whether the event was recorded.
    """
    try:
        if (edited_text is None) == (token_ids is None):
            raise ValueError("give exactly one of edited_text and token_ids")
        attrs: dict[str, Any] = _target_attributes(target)
        if edited_text is not None:
            if not isinstance(edited_text, str):
                raise TypeError("edited_text must be a str")
            attrs[cv.EDIT_TEXT] = edited_text
        else:
            attrs[cv.EDIT_TOKEN_IDS] = tuple(int(i) for i in token_ids or ())
        if source is not None:
            attrs[cv.EDIT_SOURCE] = str(source)
        if view is not None:
            if view not in cv.EDIT_VIEWS:
                raise ValueError(f"view must be one of {cv.EDIT_VIEWS}")
            attrs[cv.EDIT_VIEW] = view
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(cv.EDIT_EVENT, attrs)
            return True
        if not any(k in attrs for k in (cv.EDIT_TARGET_SPAN_ID, cv.EDIT_TARGET_RESPONSE_ID)):
            logger.warning("tokenfix: record_edit without a target needs a recording current span; ignored")
            return False
        tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        with tracer.start_as_current_span("tokenfix.edit", context=trace.set_span_in_context(trace.INVALID_SPAN)) as s:
            s.add_event(cv.EDIT_EVENT, attrs)
            return s.is_recording()
    except Exception:  # noqa: BLE001 - telemetry never raises into user code
        logger.warning("tokenfix: record_edit failed", exc_info=True)
        return False


def record_reward(value: float, *, name: str = "primary", tracer_provider: Any = None) -> bool:
    """Record a reward the way agent-lightning v0.x does, so its tools read it too: a span named
    ``agentlightning.annotation`` (a child of the current span, started now) with
    ``agentlightning.reward.0.name`` / ``agentlightning.reward.0.value``. Rewards are matched to the most
    recent LLM call that ended before this span started. Returns whether it was recorded."""
    try:
        number = float(value)
        attrs = {f"{cv.AGL_REWARD_PREFIX}.0.name": str(name), f"{cv.AGL_REWARD_PREFIX}.0.value": number}
        tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        with tracer.start_as_current_span(cv.AGL_ANNOTATION_SPAN, attributes=attrs) as s:
            return s.is_recording()
    except Exception:  # noqa: BLE001
        logger.warning("tokenfix: record_reward failed", exc_info=True)
        return False
