"""Build triplet records from a corrected trace: the one record builder of the SDK exporter, the OTLP
service and the file converter.

Why two layers: :func:`build_records` is pure over plain :class:`CallData` (easy to test, no tokenizer);
:func:`build_triplets` adapts the corrector's ``TraceCorrection`` and the trace's spans to it (rewards
and rollout ids are read from spans with ``trace/conventions.py``, so every door reads them alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .continuation import Continuation, check_continuation
from .record import MASK_POLICIES, TripletRecord, build_mask, normalize_log_probs, provenance_codes
from .rewards import CallTimes, RewardAt, match_rewards
from .trajectory import merge_trajectory


@dataclass(frozen=True)
class TripletOptions:
    """How records are built.

    ``mask``: ``kept`` | ``sampled`` | ``all`` (see :func:`build_mask`). ``trajectory``: merge consecutive
    calls where the continuation holds; ``edit_aware``: also where it fails only inside edited windows.
    ``final_reward``: the trace's latest reward goes to the last call. ``include_text``: response text.
    ``include_original``: original ids and ``source_index`` on corrected calls (for inspection tools).
    """

    mask: str = "kept"
    trajectory: bool = False
    edit_aware: bool = True
    final_reward: bool = False
    include_text: bool = True
    include_original: bool = True

    def __post_init__(self) -> None:
        if self.mask not in MASK_POLICIES:
            raise ValueError(f"unknown mask policy {self.mask!r}; expected one of {MASK_POLICIES}")


@dataclass
class CallData:
    """One LLM call after correction, as plain data (what the record builder needs)."""

    trace_id: str
    span_id: str
    start: int
    end: int
    prompt_ids: list[int]
    response_ids: list[int]
    provenance: list[Any]
    source_index: list[int | None] | None = None
    log_probs: Sequence[Any] | None = None
    original_ids: list[int] | None = None
    text: str | None = None
    model: str | None = None
    response_id: str | None = None
    edits: int = 0
    status: str = "unchanged"
    reason: str | None = None
    method: str | None = None
    removed: int = 0
    rollout_id: str | None = None
    attempt_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _finite(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) or math.isinf(v) else v


def build_records(
    calls: Sequence[CallData],
    rewards: Sequence[RewardAt] = (),
    options: TripletOptions | None = None,
    *,
    complete: bool = True,
    release_reason: str | None = None,
) -> list[TripletRecord]:
    """Records for one trace's calls (given in call order): mask, log-probs, rewards, continuation."""
    opts = options or TripletOptions()
    if not calls:
        return []
    match = match_rewards(
        [CallTimes(c.start, c.end) for c in calls],
        [r for r in rewards if r.value is None or _finite(r.value) is not None],
        final_reward=opts.final_reward,
    )
    conts: list[Continuation | None] = []
    for i, c in enumerate(calls):
        nxt = calls[i + 1].prompt_ids if i + 1 < len(calls) else None
        if nxt and c.prompt_ids:  # unknown without both prompts (a span that carried no prompt ids)
            conts.append(check_continuation(c.prompt_ids, c.response_ids, nxt, c.source_index))
        else:
            conts.append(None)
    records: list[TripletRecord] = []
    for i, c in enumerate(calls):
        prov = provenance_codes(c.provenance)
        if len(prov) != len(c.response_ids):  # defensive: an unknown provenance is treated as sampled
            prov = [1] * len(c.response_ids)
        inserted = prov.count(0)
        cont = conts[i]
        meta: dict[str, Any] = {
            "model": c.model,
            "response_id": c.response_id,
            "edits": int(c.edits),
            "status": c.status,
            "reason": c.reason,
            "method": c.method,
            "mask_policy": opts.mask,
            "complete": complete,
            "release_reason": release_reason,
            "tokens": {
                "kept": len(prov) - inserted,
                "inserted": inserted,
                "removed": int(c.removed),
            },
            "continuation": None if cont is None else cont.to_dict(),
        }
        meta.update(c.extra)
        source_index = None
        if opts.include_original and c.original_ids is not None and not _same_ids(c.original_ids, c.response_ids):
            meta["original_token_ids"] = list(c.original_ids)
            if c.source_index is not None and len(c.source_index) == len(c.response_ids):
                source_index = list(c.source_index)
        rec = TripletRecord(
            trace_id=c.trace_id,
            span_id=c.span_id,
            index=i,
            prompt_ids=list(c.prompt_ids),
            response_ids=list(c.response_ids),
            mask=build_mask(prov, opts.mask),
            provenance=prov,
            log_probs=normalize_log_probs(c.log_probs, len(c.response_ids)),
            reward=match.by_call[i],
            text=c.text if opts.include_text else None,
            rollout_id=c.rollout_id,
            attempt_id=c.attempt_id,
            metadata=meta,
            source_index=source_index,
        )
        records.append(rec)
    if match.unmatched:
        records[-1].metadata["unmatched_rewards"] = [r.value for r in match.unmatched]
    if opts.trajectory:
        merged = merge_trajectory(records, conts, edit_aware=opts.edit_aware)
        if match.unmatched:
            merged[-1].metadata["unmatched_rewards"] = [r.value for r in match.unmatched]
        return merged
    return records


def _same_ids(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """``list(a) == list(b)`` without the copies when both are lists already."""
    if a.__class__ is list and b.__class__ is list:
        return a == b
    return list(a) == list(b)


def _as_list(value: Any) -> list[Any]:
    """``value`` as a list: a list is passed through (the record builder copies what it keeps)."""
    return value if isinstance(value, list) else list(value)


# --- adapters over the middle (corrector + conventions) --------------------------------------------
def _hex_span(v: Any) -> str:
    return v if isinstance(v, str) else format(int(v), "016x")


def _hex_trace(v: Any) -> str:
    return v if isinstance(v, str) else format(int(v), "032x")


def rewards_from_spans(spans: Sequence[Any], conv: Any = None) -> list[RewardAt]:
    """Primary rewards (index 0) found on the trace's spans, at their carrier span's start time."""
    from ..trace import conventions as c

    out: list[RewardAt] = []
    for span in spans:
        found = c.read_rewards(span) if conv is None else c.read_rewards(span, conv)
        for r in found:
            if r.primary:
                out.append(RewardAt(time=int(r.time), value=float(r.value)))
    return out


def rollout_of(spans: Sequence[Any]) -> tuple[str | None, str | None]:
    """Rollout/attempt ids of a trace: from the first span that has them (span, then resource attrs)."""
    from ..trace import conventions as c

    rid = aid = None
    for span in spans:
        info = c.read_rollout(span)
        rid = rid or _str_or_none(info.get(c.ROLLOUT_ID))
        aid = aid or _str_or_none(info.get(c.ATTEMPT_ID))
        if rid and aid:
            break
    return rid, aid


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def call_data_from_llm_call(call: Any, rollout: tuple[str | None, str | None] = (None, None)) -> CallData:
    """Adapt one corrector ``LLMCall`` to :class:`CallData`."""
    from ..trace import conventions as c

    span = call.span
    info = c.read_rollout(span)
    log_probs = getattr(call, "logprobs", None)
    # lists are passed on as they are (no per-token copies here): build_records copies what a record keeps
    ids = _as_list(getattr(call, "response_ids", None) or [])
    prov = getattr(call, "provenance", None)
    if prov is None:
        prov = [1] * len(ids)
    return CallData(
        trace_id=_hex_trace(span.trace_id),
        span_id=_hex_span(span.span_id),
        start=int(span.start_time),
        end=int(span.end_time),
        prompt_ids=_as_list(getattr(call, "prompt_ids", None) or []),
        response_ids=ids,
        provenance=_as_list(prov),
        source_index=None if getattr(call, "source_index", None) is None else _as_list(call.source_index),
        log_probs=log_probs,
        original_ids=None if getattr(call, "original_ids", None) is None else _as_list(call.original_ids),
        text=getattr(call, "text", None),
        model=getattr(call, "model", None),
        response_id=getattr(call, "response_id", None),
        edits=int(getattr(call, "edits", 0) or 0),
        status=str(getattr(call, "status", "unchanged")),
        reason=getattr(call, "reason", None),
        # a call read back as "unchanged" carries no method attribute: same record as when corrected here
        method=getattr(call, "method", None) or ("unchanged" if getattr(call, "status", None) == "unchanged" else None),
        removed=int(getattr(call, "removed", 0) or 0),
        rollout_id=_str_or_none(info.get(c.ROLLOUT_ID)) or rollout[0],
        attempt_id=_str_or_none(info.get(c.ATTEMPT_ID)) or rollout[1],
    )


def build_triplets(
    trace_correction: Any,
    spans: Sequence[Any],
    options: TripletOptions | None = None,
    *,
    complete: bool = True,
    release_reason: str | None = None,
) -> list[TripletRecord]:
    """Records for one corrected trace: ``trace_correction`` from ``trace.corrector.correct_trace`` over
    ``spans`` (SpanViews of the whole trace). Pure apart from reading the spans."""
    rollout = rollout_of(spans)
    calls = [call_data_from_llm_call(call, rollout) for call in trace_correction.calls]
    return build_records(
        calls, rewards_from_spans(spans), options, complete=complete, release_reason=release_reason
    )

