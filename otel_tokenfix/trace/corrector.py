"""Corrector: apply a trace's ``text.edited`` events to its LLM spans with the token engine.

Why here and pure: the processor, the triplet exporter and the OTLP service must agree on every
corrected span, so they all call :func:`correct_trace` on plain :class:`SpanView` records and only
translate its result (an attribute overlay per span, an :class:`LLMCall` per LLM span) into their own
format. Failures are values: a span whose edits cannot be applied gets ``status="error"`` and a reason;
nothing here raises on span content, a tokenizer's failure or an engine bug.

Idempotent: an LLM span that already carries ``tokenfix.status`` (corrected upstream, e.g. by the SDK
processor) is read back as it is; edits aimed at it are not applied a second time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import conventions as cv
from .conventions import Conventions, EditEvent, IdsRead
from .view import CheckedList, SpanView

TokenizerLookup = Callable[[str | None], Any]

SOURCE_INDEX = "tokenfix.response.source_index"  #: int array, -1 for inserted tokens (exact read-back)


# --- tokenizers --------------------------------------------------------------------------------------
def _looks_like_tokenizer(obj: Any) -> bool:
    return hasattr(obj, "convert_ids_to_tokens") or hasattr(obj, "backend_tokenizer")


def as_lookup(tokenizers: Any, default: Any = None) -> TokenizerLookup:
    """Normalise what users pass as ``tokenizers`` into ``lookup(model) -> tokenizer | None``.

    Accepts ``None``, one tokenizer (used for every model), a mapping ``model -> tokenizer`` (exact
    name, then case-insensitive, then the ``"*"`` entry, then ``default``) or a callable
    ``model -> tokenizer``. A tokenizer object is callable too, so it is recognised first by its methods.
    """
    if tokenizers is None:
        return lambda model: default
    if _looks_like_tokenizer(tokenizers):
        return lambda model: tokenizers
    if isinstance(tokenizers, Mapping):
        lowered = {str(k).lower(): v for k, v in tokenizers.items()}

        def lookup(model: str | None) -> Any:
            if model is not None:
                if model in tokenizers:
                    return tokenizers[model]
                found = lowered.get(model.lower())
                if found is not None:
                    return found
            return tokenizers.get("*", default)

        return lookup
    if callable(tokenizers):
        if default is None:
            return tokenizers

        def with_default(model: str | None) -> Any:
            found = tokenizers(model)
            return default if found is None else found

        return with_default
    raise TypeError(f"tokenizers must be a tokenizer, a mapping, a callable or None, not {type(tokenizers).__name__}")


# --- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LLMCall:
    """One LLM span after correction (or read back when it was corrected upstream)."""

    span: SpanView
    #: position in call order (start time) within the trace
    index: int
    prompt_ids: list[int] | None
    #: final (corrected) response ids
    response_ids: list[int]
    #: originally sampled response ids
    original_ids: list[int]
    #: per final token: 1 sampled, 2 shifted (kept after an edit point), 0 inserted
    provenance: list[int]
    #: per final token: index into ``original_ids``, ``None`` for inserted tokens
    source_index: list[int | None]
    #: per final token (``None`` for inserted); ``None`` when the span had no logprobs
    logprobs: list[float | None] | None
    original_logprobs: list[float] | None
    text: str | None
    model: str | None
    response_id: str | None
    #: attribute the response ids were read from, and every key holding the same ids
    source_key: str
    source_keys: tuple[str, ...]
    edits: int
    #: corrected | unchanged | fallback | error
    status: str
    reason: str | None = None
    #: engine method (unchanged, splice, widened, reencode, tokens) or ``None``
    method: str | None = None
    removed: int = 0
    #: True when the span already carried ``tokenfix.status`` (corrected upstream)
    upstream: bool = False

    @property
    def span_id(self) -> int:
        return self.span.span_id

    @property
    def kept(self) -> int:
        return len(self.source_index) - self.source_index.count(None)

    @property
    def inserted(self) -> int:
        return self.source_index.count(None)

    @property
    def corrected(self) -> bool:
        return self.status in (cv.STATUS_CORRECTED, cv.STATUS_FALLBACK)


EditKey = tuple[int, int]  #: (carrier span id, event index)


@dataclass(frozen=True)
class EditIssue:
    """An edit that could not be applied to any span (malformed without a target, unknown target)."""

    edit: EditKey
    reason: str


@dataclass(frozen=True)
class TraceCorrection:
    trace_id: int
    #: every LLM span of the trace, in call order
    calls: tuple[LLMCall, ...]
    #: span id -> attributes to set on the corrected copy (only spans that change)
    overlays: Mapping[int, Mapping[str, Any]]
    #: edits not attached to any call (counted as errors)
    issues: tuple[EditIssue, ...] = ()
    #: edits noted late by the assembly (their target had already left)
    late_edits: int = 0
    #: edits applied successfully
    applied_edits: int = 0

    def call(self, span_id: int) -> LLMCall | None:
        for c in self.calls:
            if c.span_id == span_id:
                return c
        return None

    @property
    def errors(self) -> int:
        """Errors to count: calls with status error plus edits attached to nothing."""
        return sum(1 for c in self.calls if c.status == cv.STATUS_ERROR) + len(self.issues)

    def count(self, status: str) -> int:
        return sum(1 for c in self.calls if c.status == status)


# --- the corrector -------------------------------------------------------------------------------------
@dataclass
class _Pending:
    span: SpanView
    ids_read: IdsRead
    edits: list[EditEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def correct_release(release: Any, tokenizers: Any, *, conventions: Conventions = cv.DEFAULT_CONVENTIONS,
                    decode_text: bool = False, mark_unchanged: bool = False,
                    overlays: bool = True) -> TraceCorrection:
    """:func:`correct_trace` for a :class:`~otel_tokenfix.trace.assembly.Release`."""
    return correct_trace(
        release.all_spans,
        tokenizers,
        foreign=release.foreign,
        edit_notes=release.edit_notes,
        apply_edits=release.correct,
        reason=None if release.correct else f"released before its trace completed ({release.reason})",
        conventions=conventions,
        decode_text=decode_text,
        mark_unchanged=mark_unchanged,
        overlays=overlays,
    )


def correct_trace(
    spans: Sequence[SpanView],
    tokenizers: Any,
    *,
    foreign: Sequence[SpanView] = (),
    edit_notes: Mapping[EditKey, str] | None = None,
    apply_edits: bool = True,
    reason: str | None = None,
    conventions: Conventions = cv.DEFAULT_CONVENTIONS,
    decode_text: bool = False,
    mark_unchanged: bool = False,
    overlays: bool = True,
) -> TraceCorrection:
    """Correct every LLM span of one trace with the trace's edit events.

    ``spans``: the trace's spans (LLM spans and any span carrying edits, in any order). ``foreign``:
    spans of other traces whose edits name a target in this trace explicitly. ``edit_notes``: edits the
    assembly routed elsewhere or found late (skipped here). ``apply_edits=False`` (an early release):
    every LLM span gets ``status=error`` with ``reason``, ids untouched. ``tokenizers``: see
    :func:`as_lookup`. ``decode_text``: decode ids to fill ``LLMCall.text`` when no text attribute has
    it. ``mark_unchanged``: also put ``tokenfix.status=unchanged`` on spans without edits.
    ``overlays=False``: no corrected copy is wanted (triplets only): ``TraceCorrection.overlays`` stays
    empty and its per-token attribute tuples are never built; the calls are the same.
    """
    conv = conventions
    lookup = as_lookup(tokenizers)
    notes = edit_notes or {}
    trace_id = spans[0].trace_id if spans else 0

    seen: set[int] = set()
    pending: list[_Pending] = []
    carriers: list[SpanView] = []
    #: LLM calls without usable ids (no ids returned, capture error, unreadable ids): edits aimed at them,
    #: explicitly or as the most recent call, are reported, never moved to another call
    idless: list[tuple[SpanView, str]] = []
    watch = conv.watch_key_set
    for span in spans:
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        if span.events:
            carriers.append(span)
        attrs = span.attributes
        if watch.isdisjoint(attrs.keys() if hasattr(attrs, "keys") else attrs):
            continue  # no ids key and no LLM marker: not a call (most spans; one C-speed test)
        if cv.has_response_key(span, conv):
            ids_read = cv.read_response_ids(span, conv)
            if ids_read is not None:
                pending.append(_Pending(span, ids_read))
                continue
        why = cv.idless_llm_reason(span, conv)
        if why is not None:
            idless.append((span, why))
    pending.sort(key=lambda p: (p.span.start_time, p.span.end_time, p.span.span_id))
    by_span = {p.span.span_id: p for p in pending}
    by_response: dict[str, _Pending] = {}
    for p in pending:
        rid = cv.read_response_id(p.span, conv)
        if rid and rid not in by_response:
            by_response[rid] = p
    # a marked span that is the parent of a call with ids wraps that call (another instrumentation's span)
    parents = {p.span.parent_span_id for p in pending}
    idless = [(span, why) for span, why in idless if span.span_id not in parents]
    idless_by_span = {span.span_id: why for span, why in idless}
    idless_by_response: dict[str, str] = {}
    for span, why in idless:
        rid = cv.read_response_id(span, conv)
        if rid and rid not in idless_by_response:
            idless_by_response[rid] = why

    issues: list[EditIssue] = []
    late = sum(1 for v in notes.values() if v == "late")

    def resolve(edit: EditEvent, own: bool) -> tuple[_Pending | None, str | None]:
        if edit.target_span_id is not None:
            hit = by_span.get(edit.target_span_id)
            if hit is not None:
                return hit, None
        if edit.target_response_id is not None:
            hit = by_response.get(edit.target_response_id)
            if hit is not None:
                return hit, None
        if edit.targeted:
            blocked = None
            if edit.target_span_id is not None:
                blocked = idless_by_span.get(edit.target_span_id)
            if blocked is None and edit.target_response_id is not None:
                blocked = idless_by_response.get(edit.target_response_id)
            if blocked is not None:
                return None, blocked
            if edit.target_span_id is None and edit.target_response_id is None:
                return None, "unreadable target"
            what = (
                f"span {edit.target_span_id:016x}" if edit.target_span_id is not None
                else f"response id {edit.target_response_id!r}"
            )
            return None, f"unknown target: {what} is not an LLM span of this trace"
        if not own:
            return None, None
        best = None
        for p in pending:
            if p.span.end_time <= edit.time and (best is None or p.span.end_time >= best.span.end_time):
                best = p
        latest_idless = None
        for span, why in idless:  # a later call without ids is the one the edit is about
            if span.end_time <= edit.time and (best is None or span.end_time > best.span.end_time) and (
                    latest_idless is None or span.end_time >= latest_idless[0].end_time):
                latest_idless = (span, why)
        if latest_idless is not None:
            span, why = latest_idless
            return None, f"{why} (span {span.span_id:016x}, the last LLM call before the edit)"
        if best is None:
            return None, "no LLM span of this trace ended before the edit"
        return best, None

    for span in carriers:
        for edit in cv.read_edits(span, conv):
            if edit.key in notes:
                continue
            target, why = resolve(edit, own=True)
            _attach(edit, target, why, issues)
    for span in foreign:
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        for edit in cv.read_edits(span, conv):
            if not edit.targeted:
                continue
            target, _ = resolve(edit, own=False)
            if target is not None:
                _attach(edit, target, None, issues)

    calls: list[LLMCall] = []
    out: dict[int, dict[str, Any]] = {}
    applied = 0
    for index, p in enumerate(pending):
        try:
            call, overlay = _correct_one(p, index, lookup, conv, apply_edits, reason, decode_text, mark_unchanged,
                                         overlays)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the span
            call, overlay = _error_call(p, index, conv, f"internal error: {type(exc).__name__}: {exc}")
        calls.append(call)
        if overlay and overlays:
            out[p.span.span_id] = overlay
        if call.corrected and not call.upstream:
            applied += call.edits
    return TraceCorrection(trace_id, tuple(calls), out, tuple(issues), late, applied)


def _attach(edit: EditEvent, target: _Pending | None, why: str | None, issues: list[EditIssue]) -> None:
    if target is None:
        if why is not None:
            issues.append(EditIssue(edit.key, f"{edit.error}; {why}" if edit.error else why))
        return
    if edit.error:
        target.errors.append(f"malformed edit event: {edit.error}")
    target.edits.append(edit)


def _base(p: _Pending, index: int, conv: Conventions) -> dict[str, Any]:
    span = p.span
    return dict(
        span=span,
        index=index,
        prompt_ids=cv.read_prompt_ids(span, conv),
        model=cv.read_model(span, conv),
        response_id=cv.read_response_id(span, conv),
        source_key=p.ids_read.key,
        source_keys=p.ids_read.keys,
    )


def _error_call(p: _Pending, index: int, conv: Conventions, reason: str) -> tuple[LLMCall, dict[str, Any]]:
    ids = p.ids_read.ids
    lp = cv.read_logprobs(p.span, len(ids), conv)
    call = LLMCall(
        **_base(p, index, conv),
        response_ids=ids,
        original_ids=ids,
        provenance=[1] * len(ids),
        source_index=list(range(len(ids))),
        logprobs=list(lp) if lp is not None else None,
        original_logprobs=lp,
        text=cv.read_text(p.span, conv),
        edits=len(p.edits),
        status=cv.STATUS_ERROR,
        reason=reason,
    )
    overlay = {cv.STATUS: cv.STATUS_ERROR, cv.ERROR: reason, cv.EDIT_COUNT: len(p.edits)}
    return call, overlay


def _read_back(p: _Pending, index: int, conv: Conventions, status: str) -> LLMCall:
    attrs = p.span.attributes
    final = cv.parse_ids(attrs.get(cv.RESPONSE_IDS), conv) or p.ids_read.ids
    original = cv.parse_ids(attrs.get(cv.ORIGINAL_RESPONSE_IDS), conv) or final
    n = len(final)
    provenance = _int_tuple(attrs.get(cv.PROVENANCE))
    if provenance is None or len(provenance) != n:
        provenance = [1] * n
    src = _int_tuple(attrs.get(SOURCE_INDEX))
    source_index: list[int | None] = (
        [None if s < 0 else s for s in src] if src is not None and len(src) == n
        else [None if code == 0 else i for i, code in enumerate(provenance)]
    )
    lp_raw = attrs.get(cv.LOGPROBS)
    logprobs: list[float | None] | None = None
    if isinstance(lp_raw, (list, tuple)) and len(lp_raw) == n:
        logprobs = [None if (isinstance(x, float) and math.isnan(x)) else float(x) for x in lp_raw]
    elif status == cv.STATUS_ERROR or final == original:
        lp = cv.read_logprobs(p.span, n, conv)
        logprobs = list(lp) if lp is not None else None
    text = attrs.get(cv.TEXT)
    reason = attrs.get(cv.ERROR)
    source_key = attrs.get(cv.SOURCE_KEY)
    base = _base(p, index, conv)
    if isinstance(source_key, str):
        base["source_key"] = source_key
    count = attrs.get(cv.EDIT_COUNT)
    removed = attrs.get(cv.TOKENS_REMOVED)
    method = attrs.get(cv.METHOD)
    return LLMCall(
        **base,
        response_ids=list(final),
        original_ids=list(original),
        provenance=list(provenance),
        source_index=source_index,
        logprobs=logprobs,
        # after a rewrite the logprob source key describes the corrected ids: originals only if unchanged
        original_logprobs=cv.read_logprobs(p.span, len(original), conv) if original == final else None,
        text=text if isinstance(text, str) else cv.read_text(p.span, conv),
        edits=count if isinstance(count, int) else 0,
        status=status,
        reason=reason if isinstance(reason, str) else None,
        method=method if isinstance(method, str) else None,
        removed=removed if isinstance(removed, int) else 0,
        upstream=True,
    )


def _int_tuple(value: Any) -> list[int] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return list(value)
    return None


def _correct_one(
    p: _Pending,
    index: int,
    lookup: TokenizerLookup,
    conv: Conventions,
    apply_edits: bool,
    reason: str | None,
    decode_text: bool,
    mark_unchanged: bool,
    overlays: bool = True,
) -> tuple[LLMCall, dict[str, Any]]:
    upstream_status = cv.read_status(p.span)
    if upstream_status is not None:
        return _read_back(p, index, conv, upstream_status), {}
    if not apply_edits:
        return _error_call(p, index, conv, reason or "released before its trace completed")
    if p.errors:
        return _error_call(p, index, conv, "; ".join(p.errors))
    ids = p.ids_read.ids
    model = cv.read_model(p.span, conv)
    if not p.edits:
        lp = cv.read_logprobs(p.span, len(ids), conv)
        text = cv.read_text(p.span, conv)
        if text is None and decode_text:
            text = _decode(lookup(model), ids)
        call = LLMCall(
            **_base(p, index, conv),
            response_ids=ids,
            original_ids=ids,
            provenance=CheckedList([1] * len(ids)),
            source_index=list(range(len(ids))),
            logprobs=CheckedList(lp) if lp is not None else None,  # floats: read_logprobs checked them
            original_logprobs=lp,
            text=text,
            edits=0,
            status=cv.STATUS_UNCHANGED,
            method="unchanged",
        )
        return call, ({cv.STATUS: cv.STATUS_UNCHANGED} if mark_unchanged else {})
    edits = sorted(p.edits, key=lambda e: (e.time, e.carrier_span_id, e.index))
    try:
        tokenizer = lookup(model)
    except Exception as exc:  # noqa: BLE001 - e.g. a tokenizer directory that fails to load
        return _error_call(p, index, conv, f"no tokenizer for model {model!r}: {exc}")
    if tokenizer is None and any(e.text is not None for e in edits):
        return _error_call(p, index, conv, f"no tokenizer for model {model!r}")
    if tokenizer is not None:
        bad = _out_of_vocab(tokenizer, edits)
        if bad is not None:
            return _error_call(p, index, conv, f"edited token id {bad} is not in the vocabulary of {model!r}")
    lp = cv.read_logprobs(p.span, len(ids), conv)
    try:
        correction = _apply(tokenizer, ids, lp, edits)
    except Exception as exc:  # noqa: BLE001 - TokenFixError or an engine bug: the span still goes out
        name = type(exc).__name__
        return _error_call(p, index, conv, f"{name}: {exc}" if name != "TokenFixError" else str(exc))
    status = cv.STATUS_FALLBACK if correction.method == "reencode" else cv.STATUS_CORRECTED
    text = correction.text
    last = edits[-1]
    if text is None and last.text is not None and last.view == "content":
        text = last.text
    if text is None and tokenizer is not None:
        text = _decode(tokenizer, correction.token_ids)
    new_ids = _int_copy(correction.token_ids)
    call = LLMCall(  # the correction is this call's alone: its lists are taken, not copied
        **_base(p, index, conv),
        response_ids=new_ids,
        original_ids=ids,
        provenance=CheckedList(correction.provenance_codes),
        source_index=correction.source_index,
        logprobs=correction.logprobs,
        original_logprobs=lp,
        text=text,
        edits=len(edits),
        status=status,
        reason="the engine fell back to a full re-encode" if status == cv.STATUS_FALLBACK else None,
        method=correction.method,
        removed=int(correction.removed),
    )
    return call, (_overlay(call, conv) if overlays else {})


_INT_ONLY = frozenset({int})
def _int_copy(values: Sequence[Any]) -> list[int]:
    """``list(map(int, values))``; a list that holds only ints (the engine's output) is copied in C."""
    if values.__class__ is list and set(map(type, values)) <= _INT_ONLY:
        return list(values)
    return list(map(int, values))


def _apply(tokenizer: Any, ids: list[int], logprobs: list[float] | None, edits: Iterable[EditEvent]) -> Any:
    from ..engine import correct_text, correct_tokens

    correction = None
    for edit in edits:
        if correction is None:
            if edit.token_ids is not None:
                correction = correct_tokens(ids, list(edit.token_ids), logprobs=logprobs)
            else:
                correction = correct_text(tokenizer, ids, edit.text, logprobs=logprobs, view=edit.view)
        elif edit.token_ids is not None:
            correction = correction.then_tokens(list(edit.token_ids))
        else:
            correction = correction.then_text(tokenizer, edit.text, view=edit.view)
    return correction


def _out_of_vocab(tokenizer: Any, edits: Iterable[EditEvent]) -> int | None:
    try:
        size = len(tokenizer)
    except Exception:  # noqa: BLE001 - not a sized tokenizer: the engine decides
        return None
    for edit in edits:
        if edit.token_ids:
            bad = max(edit.token_ids)
            if bad >= size:
                return bad
    return None


def _decode(tokenizer: Any, ids: Sequence[int]) -> str | None:
    if tokenizer is None:
        return None
    try:
        return tokenizer.decode(list(ids), skip_special_tokens=True)
    except Exception:  # noqa: BLE001 - text is informational
        return None


def _overlay(call: LLMCall, conv: Conventions) -> dict[str, Any]:
    """Attributes the corrected copy of the span gets (see docs/conventions.md)."""
    ids = tuple(call.response_ids)
    attrs = call.span.attributes
    overlay: dict[str, Any] = {}
    if conv.overwrite_source_key:
        for key in call.source_keys:
            if key != cv.RESPONSE_IDS:
                overlay[key] = cv.encode_ids_like(attrs.get(key), ids, conv, call.source_index)
        found = cv.read_logprobs_with_key(call.span, len(call.original_ids), conv)
        if found is not None and found[1] not in overlay:  # e.g. logprobs.content: re-index its entries
            value = cv.reindex_logprobs_like(attrs.get(found[1]), call.source_index, conv)
            if value is not None:
                overlay[found[1]] = value
    overlay[cv.RESPONSE_IDS] = ids
    overlay[cv.ORIGINAL_RESPONSE_IDS] = tuple(call.original_ids)
    overlay[cv.PROVENANCE] = tuple(call.provenance)
    overlay[SOURCE_INDEX] = tuple([-1 if s is None else s for s in call.source_index])
    if call.logprobs is not None:
        nan = float("nan")
        overlay[cv.LOGPROBS] = tuple([nan if x is None else float(x) for x in call.logprobs])
    if call.text is not None:
        overlay[cv.TEXT] = call.text
    overlay[cv.SOURCE_KEY] = call.source_key
    overlay[cv.EDIT_COUNT] = call.edits
    overlay[cv.TOKENS_KEPT] = call.kept
    overlay[cv.TOKENS_INSERTED] = call.inserted
    overlay[cv.TOKENS_REMOVED] = call.removed
    overlay[cv.STATUS] = call.status
    if call.method:
        overlay[cv.METHOD] = call.method
    if call.reason:
        overlay[cv.ERROR] = call.reason
    return overlay
