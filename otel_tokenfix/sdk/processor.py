"""TokenFixSpanProcessor: wraps the exporting processor so it only ever sees corrected LLM spans.

Why a wrapper and not a sibling: processors run in registration order and ``on_end`` gets a frozen
span, so a sibling could not stop the exporter from sending the uncorrected original. The wrapper holds
LLM spans until their trace's local root ends (:class:`TraceAssembly`), applies the trace's edits
(:func:`correct_release`) and hands downstream a corrected copy (:func:`corrected_copy`).

Threading: one lock guards the assembly only; corrections and every downstream call run outside it, so
a slow tokenizer in one trace does not stall ``on_end`` of another. Nothing here raises into user code:
failures become counters, log lines and ``tokenfix.status=error`` on the span.

Hot paths (``on_end`` runs on the application's thread for every span): a span with no events and no
response-ids key passes without the lock (a local root takes it only when something is held or pending);
an LLM span without events (not a root) is appended to the assembly's pending lane without the lock (no
SpanView, no parsing, not even its weight); its root's end sends it on straight from there; a trace
released without any edit event goes out untouched. SpanViews are built, ids parsed and copies made only
for traces that have edits. When downstream is the SDK's own ``BatchSpanProcessor``, spans are handed to its
queue directly after the same sampled check its ``on_end`` makes (see :mod:`.downstream`).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor

from ..trace import conventions as cv
from ..trace.assembly import (
    EARLY_REASONS,
    REASON_FLUSH,
    REASON_SHUTDOWN,
    Release,
    TraceAssembly,
    edits_in_play,
    ids_weight,
)
from ..trace.conventions import Conventions
from ..trace.corrector import as_lookup, correct_release
from .downstream import batch_push
from .spans import corrected_copy, plain_attributes, to_view

logger = logging.getLogger(__name__)

#: at most this many LLM spans wait on the assembly's pending lane before it takes them in and applies its bounds
#: (fewer for small bounds: an eighth of ``max_spans`` / ``max_traces``, ``max_ids`` / 16384; none below 8)
PENDING_LIMIT = 64

COUNTERS = (
    "passed",  # spans forwarded at once (not held)
    "held",  # spans held for their trace
    "forwarded",  # held spans forwarded after release
    "corrected",  # LLM spans whose edits were applied (status corrected or fallback)
    "fallback",  # ... of which the engine fell back to a full re-encode
    "unchanged",  # LLM spans without edits
    "errors",  # LLM spans with status error + edit events attached to nothing
    "released_early",  # held spans released by a bound or the hold timeout (uncorrected, marked)
    "late_edits",  # edits that arrived after their target left
    "routed_edits",  # edits delivered to a held span of another trace
    "downstream_errors",  # downstream raised (the span may be lost downstream; counted, logged)
    "internal_errors",  # a bug in this processor (the span was forwarded unchanged)
)


class TokenFixSpanProcessor(SpanProcessor):
    """Correct token ids of LLM spans from ``text.edited`` events before ``downstream`` sees them.

    Args:
        downstream: the processor that exports, e.g. ``BatchSpanProcessor(OTLPSpanExporter())``.
        tokenizers: one tokenizer, a mapping model name -> tokenizer (``"*"`` = any), or a callable
            ``model -> tokenizer | None`` (see :class:`otel_tokenfix.sdk.tokenizers.TokenizerResolver`).
        default_tokenizer: used when ``tokenizers`` has none for a span's model.
        max_traces / max_spans / max_ids / hold_timeout: bounds; when hit, the oldest held spans are forwarded
            uncorrected with ``tokenfix.status=error`` and the reason. LLM spans wait on the assembly's pending
            lane (no lock) until something takes it in, so the bounds may be exceeded by at most
            ``PENDING_LIMIT`` spans (fewer for small bounds).
        root_grace: seconds a root LLM span (a trace of its own) stays held for edits from later traces.
        late_grace: seconds a late part of a trace (spans ending after their local root) stays held
            after its last span, for its edits (no root will end it); counted from when the pending lane is
            taken in (the next root, edit or timer tick).
        timer_interval: seconds between background checks of timeouts (``None``: check only in
            ``on_end`` / ``force_flush``).
        mark_unchanged: in a trace that has edits, put ``tokenfix.status=unchanged`` on (a copy of) each LLM
            span without an edit of its own (default), so a triplet exporter or the OTLP service downstream
            never applies an edit a second time or to the wrong call (spans of one trace can reach them in
            any order). A trace without any edit event always goes out untouched (the same span objects):
            no exporter can misapply an edit it never sees.
        warm_up: load the configured tokenizers and build the engine's tables on a background thread now,
            so the first edited trace of each model does not pay ~1-2 s on the application's thread.
        meter_provider: if given, the counters are also exported as OTel metrics.
    """

    # slots: on_end reads a dozen of these per span, and past 30 instance attributes CPython 3.11 stops sharing
    # the instance dict's keys, which slows every attribute read (measured: +8% per span)
    __slots__ = ("_assembly", "_clock", "_counters", "_downstream", "_downstream_emit", "_downstream_on_end",
                 "_end_express", "_held_express", "_held_fast", "_held_tick", "_held_traces", "_id_keys",
                 "_instruments", "_lock", "_lookup", "_mark_unchanged", "_note_root", "_passed_count", "_passed_fast",
                 "_pending", "_pending_limit", "_plain_fast", "_response_id_keys", "_response_keys",
                 "_root_ended_unlocked", "_shutdown", "_stop", "_timer", "_timer_interval", "_watch_keys",
                 "conventions", "warmed_up")

    @property
    def downstream(self) -> SpanProcessor:
        return self._downstream

    @downstream.setter
    def downstream(self, processor: SpanProcessor) -> None:
        self._downstream = processor
        self._downstream_on_end = processor.on_end  # bound once: the hot path calls it for every span
        self._downstream_emit = batch_push(processor)  # its queue, when that is exactly its on_end

    def __init__(
        self,
        downstream: SpanProcessor,
        *,
        tokenizers: Any = None,
        default_tokenizer: Any = None,
        conventions: Conventions | None = None,
        max_traces: int = 1024,
        max_spans: int = 8192,
        max_ids: int = 4_000_000,
        hold_timeout: float = 1800.0,
        root_grace: float = 2.0,
        late_grace: float = 2.0,
        timer_interval: float | None = 1.0,
        mark_unchanged: bool = True,
        warm_up: bool = False,
        meter_provider: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.downstream = downstream
        self.conventions = _with_sdk_limits(conventions or cv.DEFAULT_CONVENTIONS)
        self._lookup = as_lookup(tokenizers, default_tokenizer)
        self._mark_unchanged = mark_unchanged
        self._assembly = assembly = TraceAssembly(
            conventions=self.conventions,
            max_traces=max_traces,
            max_spans=max_spans,
            max_ids=max_ids,
            hold_timeout=hold_timeout,
            root_grace=root_grace,
            late_grace=late_grace,
            clock=clock,
            item_weight=self._span_weight,
        )
        #: spans appended to the pending lane before the assembly takes them in (bounds count them from then)
        self._pending_limit = max(0, min(PENDING_LIMIT, int(max_spans) // 8, int(max_traces) // 8,
                                         int(max_ids) // 16384))
        self._response_keys = self.conventions.response_key_set
        self._watch_keys = self.conventions.watch_key_set
        self._id_keys = self.conventions.id_key_set
        self._root_ended_unlocked = assembly.root_ended_unlocked
        self._note_root = assembly.note_root_unlocked
        self._held_traces, self._held_express = assembly.holding
        self._pending = assembly.pending
        self._end_express = assembly.end_express
        self._clock = clock
        self._lock = threading.Lock()
        self._counters = {name: _ThreadCounter() for name in COUNTERS}
        self._passed_fast = _FastCounter()  # spans passed on the hot path (added to "passed" in stats)
        self._passed_count = self._passed_fast.count
        self._held_fast = _FastCounter()  # spans held on the hot path (added to "held" in stats)
        self._held_tick = self._held_fast.tick
        self._plain_fast = _FastCounter()  # held spans forwarded untouched (added to "unchanged" and "forwarded")
        self._response_id_keys = self.conventions.response_id_keys
        self._shutdown = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_interval = float(timer_interval) if timer_interval else None
        self._start_timer()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._at_fork_reinit)

            def after_in_child() -> None:
                reinit = weak_reinit()
                if reinit is not None:
                    reinit()

            os.register_at_fork(after_in_child=after_in_child)
        self._instruments = _register_metrics(meter_provider, self) if meter_provider is not None else None
        self.warmed_up = threading.Event()
        if warm_up:
            threading.Thread(target=_warm_up, args=(tokenizers, default_tokenizer, self.warmed_up),
                             name="tokenfix-warm-up", daemon=True).start()

    # --- SpanProcessor ------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            self.downstream.on_start(span, parent_context=parent_context)
        except Exception:  # noqa: BLE001
            self._count("downstream_errors")
            logger.exception("tokenfix: downstream on_start raised")

    def _on_ending(self, span: Span) -> None:
        hook = getattr(self.downstream, "_on_ending", None)
        if hook is not None:
            try:
                hook(span)
            except Exception:  # noqa: BLE001
                self._count("downstream_errors")
                logger.exception("tokenfix: downstream _on_ending raised")

    def on_end(self, span: ReadableSpan) -> None:
        # The hot paths (a plain span, a plain local root, an LLM span without events) are written out here
        # rather than in helpers — a Python call costs as much as the work — read the SDK's own containers
        # at C speed (the events deque, the attributes' inner dict, the context tuples) and touch as few
        # objects as possible; any other ReadableSpan takes the general path.
        try:
            attrs = span._attributes._dict  # noqa: SLF001
            evented = span._events._dq  # noqa: SLF001
            ctx = span._context  # noqa: SLF001
            parent = span._parent  # noqa: SLF001
            watched = evented or not self._watch_keys.isdisjoint(attrs)
        except Exception:  # noqa: BLE001 - not the SDK's containers
            self._on_end_general(span)
            return
        if watched:
            if evented:
                self._on_end_general(span)  # an edit carrier
                return
            if self._response_keys.isdisjoint(attrs):
                self._on_end_general(span)  # an LLM call without ids
                return
            # an LLM span without events, held as it is. Not a local root, sampled: onto the assembly's pending
            # lane, without the lock, with its response id (for routing and late edits: read here, where the
            # attributes are at hand); its weight is read only if it is still held when the assembly takes it
            # in (most leave with their root first)
            if parent is not None and not parent[2] and ctx[3] & 1 and not self._shutdown:
                response_id = None
                for key in self._response_id_keys:  # conventions.first_str, inlined
                    value = attrs.get(key)
                    if isinstance(value, str) and value:
                        response_id = value
                        break
                pending = self._pending
                pending.append((ctx[0], ctx[1], span, response_id))  # counted as held by the assembly
                if len(pending) > self._pending_limit:
                    self._take_pending()
                return
            self._hold_llm(span)
            return
        # neither an LLM span nor an edit carrier: it passes now; a local root (a SpanContext is a tuple:
        # [0] trace id, [2] is_remote) first releases its trace's held spans, lock-free when none are held
        next(self._passed_count)
        if parent is None or parent[2]:
            try:
                trace_id = ctx[0]
                self._note_root(trace_id)  # assembly.root_ended_unlocked, inlined
                if self._pending or self._held_traces or self._held_express:
                    self._plain_root(trace_id)
            except Exception:  # noqa: BLE001 - never raise into user code; the span still goes out
                self._count("internal_errors")
                logger.exception("tokenfix: handling a root span failed")
        try:
            emit = self._downstream_emit
            if emit is not None:  # _forward, inlined (an SDK span: its context is _context, no class check)
                if ctx and ctx[3] & 1:  # [3]: trace flags; bit 0: sampled
                    emit(span)
            else:
                self._downstream_on_end(span)
        except Exception:  # noqa: BLE001
            self._count("downstream_errors")
            logger.exception("tokenfix: downstream on_end raised")

    def _plain_root(self, trace_id: int) -> None:
        """A local root that is neither held nor an edit carrier ended: release its trace's held spans
        (before the root goes downstream: a trace-assembling exporter then sees the root last, as it
        would without us). Called only when something is held (anywhere): nothing to do otherwise."""
        try:
            if self._shutdown:
                return
            with self._lock:  # the commonest case first: a trace whose spans are all pending or express
                spans = self._end_express(trace_id, noted=True)
                releases = self._assembly.end_root(trace_id) if spans is None else ()
            if spans is not None:  # no edits anywhere: its spans go out as they are
                self._emit_held(spans)
            for release in releases:
                self._process_one(release)
        except Exception:  # noqa: BLE001 - never raise into user code; the root is forwarded by the caller
            self._count("internal_errors")
            logger.exception("tokenfix: releasing a trace at its root failed")

    def _emit_held(self, spans: list[ReadableSpan]) -> None:
        """:meth:`TraceAssembly.end_express`'s spans downstream, untouched (it counts them): SDK spans, sampled
        (the express and pending lanes take no other)."""
        emit = self._downstream_emit or self._downstream_on_end
        for span in spans:
            try:
                emit(span)
            except Exception:  # noqa: BLE001 - the other spans still go out
                self._count("downstream_errors")
                logger.exception("tokenfix: downstream on_end raised")

    def _take_pending(self) -> None:
        """The pending lane is long: the assembly takes it in now (bounds count those spans from then on)."""
        try:
            now = self._clock()
            with self._lock:
                releases = self._assembly.take_pending(now)
            self._process(releases)
        except Exception:  # noqa: BLE001 - never raise into user code; the spans stay pending, taken in later
            self._count("internal_errors")
            logger.exception("tokenfix: taking in pending spans failed")

    def _hold_llm(self, span: ReadableSpan) -> None:
        """An SDK-built LLM span without events that is not for the pending lane (a root, unsampled, shut
        down): held as it is through the assembly's full path."""
        held = False
        try:
            attrs = span._attributes._dict  # noqa: SLF001
            conv = self.conventions
            response_id = cv.first_str(attrs, conv.response_id_keys)
            weight = ids_weight(attrs, conv)
            ctx = span._context  # noqa: SLF001
            if self._shutdown or ctx is None or not ctx[3] & 1:  # [3]: trace flags; bit 0: sampled
                self._forward(span)
                return
            parent = span._parent  # noqa: SLF001
            with self._lock:
                releases = self._assembly.add_held(ctx[0], ctx[1], span, parent is None or parent[2], weight,
                                                   response_id)
            held = True
            self._held_tick()
            for release in releases:
                self._process_one(release)
        except Exception:  # noqa: BLE001 - never raise into user code, never lose the span
            self._count("internal_errors")
            logger.exception("tokenfix: on_end failed; forwarding the span unchanged")
            if not held:
                self._forward(span)

    def _on_end_general(self, span: ReadableSpan) -> None:
        """LLM spans, edit carriers and spans not built by the SDK."""
        forwarded = False
        try:
            ctx = span.context
            if self._shutdown or ctx is None or not ctx.trace_flags.sampled:
                forwarded = True
                self._forward(span)
                return
            attrs = plain_attributes(span)
            if not span._events:  # noqa: SLF001
                parent = span.parent
                local_root = parent is None or parent.is_remote
                if self._watch_keys.isdisjoint(attrs):  # a plain span in non-SDK containers
                    if local_root and not self._root_ended_unlocked(ctx.trace_id):
                        self._plain_root(ctx.trace_id)
                    forwarded = True
                    self._count("passed")
                    self._forward(span)
                    return
            if not span._events and not self._response_keys.isdisjoint(attrs):  # noqa: SLF001
                # an LLM span without events: held as it is; ids are parsed at release, only if edited
                parent = span.parent
                local_root = parent is None or parent.is_remote
                conv = self.conventions
                response_id = cv.first_str(attrs, conv.response_id_keys)
                weight = ids_weight(attrs, conv)
                with self._lock:
                    releases = self._assembly.add_held(ctx.trace_id, ctx.span_id, span, local_root=local_root,
                                                       weight=weight, response_id=response_id)
                forwarded = True  # held: it leaves in a release
                self._count("held")
                if releases:
                    self._process(releases)
                return
            view = to_view(span)
            with self._lock:
                late_before = self._assembly.late_edits
                result = self._assembly.add(view, item=span)
                late = list(self._assembly.recent_late)[-(self._assembly.late_edits - late_before):] if (
                    self._assembly.late_edits != late_before) else ()
            for item in late:
                logger.warning("tokenfix: late edit %s (target %s had already left: %s); not applied",
                               item.edit, item.target, item.released_because)
            if result.held:
                forwarded = True
                self._count("held")
                self._process(result.releases)
            else:
                self._process(result.releases)  # held spans of a completed trace before its root
                forwarded = True
                self._count("passed")
                self._forward(span)
        except Exception:  # noqa: BLE001 - never raise into user code, never lose the span
            self._count("internal_errors")
            logger.exception("tokenfix: on_end failed; forwarding the span unchanged")
            if not forwarded:
                self._forward(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Release everything held (with the edits seen so far), then flush downstream."""
        self._release_all(REASON_FLUSH)
        try:
            return bool(self.downstream.force_flush(timeout_millis))
        except Exception:  # noqa: BLE001
            self._count("downstream_errors")
            logger.exception("tokenfix: downstream force_flush raised")
            return False

    def shutdown(self) -> None:
        """Stop the timer, release everything held, then shut downstream down."""
        if self._shutdown:
            return
        self._stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=5)
        self._release_all(REASON_SHUTDOWN)
        self._shutdown = True
        self._release_all(REASON_SHUTDOWN)  # anything that slipped in while draining
        try:
            self.downstream.shutdown()
        except Exception:  # noqa: BLE001
            self._count("downstream_errors")
            logger.exception("tokenfix: downstream shutdown raised")

    def _start_timer(self) -> None:
        if self._timer_interval is not None and self._timer_interval > 0 and not self._shutdown:
            self._timer = threading.Thread(
                target=self._run_timer, args=(self._timer_interval,), name="tokenfix-timer", daemon=True
            )
            self._timer.start()

    def _at_fork_reinit(self) -> None:
        """In a forked child: the held spans belong to the parent (which forwards them), so forget them;
        fresh locks (one may have been held at fork time) and a fresh timer thread; the downstream queue is
        looked at again (a batch queue the SDK has not reset yet is reached through its ``emit``)."""
        self.downstream = self._downstream
        self._lock = threading.Lock()
        a = self._assembly
        self._assembly = TraceAssembly(
            conventions=a.conventions, max_traces=a.max_traces, max_spans=a.max_spans, max_ids=a.max_ids,
            hold_timeout=a.hold_timeout, root_grace=a.root_grace, late_grace=a.late_grace, clock=a.clock,
            item_weight=self._span_weight,
        )
        self._root_ended_unlocked = self._assembly.root_ended_unlocked
        self._note_root = self._assembly.note_root_unlocked
        self._held_traces, self._held_express = self._assembly.holding
        self._pending = self._assembly.pending
        self._end_express = self._assembly.end_express
        self._stop = threading.Event()
        self._start_timer()

    # --- observability ------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        """Counters (see ``COUNTERS``) plus what is held right now."""
        out = {name: counter.value() for name, counter in self._counters.items()}
        out["passed"] += self._passed_fast.value()
        with self._lock:
            a = self._assembly
            out["held"] += a.lane_spans + len(a.pending)  # the assembly counts the pending lane's spans
            plain = a.express_out
            out["late_edits"] = a.late_edits
            out["routed_edits"] = a.routed_edits
            out["held_spans"] = len(a)  # pending spans included
            out["held_traces"] = a.held_traces
        out["held"] += self._held_fast.value()
        plain += self._plain_fast.value()
        out["unchanged"] += plain
        out["forwarded"] += plain
        return out

    @property
    def recent_late_edits(self) -> list[Any]:
        """The last late edits (what they targeted and why it had already left), for reporting."""
        with self._lock:
            return list(self._assembly.recent_late)

    # --- internals ----------------------------------------------------------------------------------
    def _span_weight(self, span: ReadableSpan) -> int:
        """A pending span's weight for the assembly's bounds (an SDK span: the hot path took only those)."""
        return ids_weight(span._attributes._dict, self.conventions)  # noqa: SLF001

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self._counters[name].add(n)

    def _forward(self, span: ReadableSpan) -> None:
        """``downstream.on_end(span)``, straight to its batch queue when that is the same (see downstream.py)."""
        try:
            emit = self._downstream_emit
            if emit is not None and span.__class__ is ReadableSpan:
                ctx = span._context  # noqa: SLF001
                if ctx and ctx[3] & 1:
                    emit(span)
            else:
                self._downstream_on_end(span)
        except Exception:  # noqa: BLE001
            self._count("downstream_errors")
            logger.exception("tokenfix: downstream on_end raised")

    def _forward_untouched(self, spans: Iterable[ReadableSpan]) -> None:
        """Held spans of a trace without edits go out as they came (no ids parsed, no copy, no mark)."""
        tick = self._plain_fast.tick
        forward = self._forward
        for span in spans:
            tick()
            forward(span)

    def _release_all(self, reason: str) -> None:
        try:
            with self._lock:
                releases = self._assembly.drain(reason)
            self._process(releases)
        except Exception:  # noqa: BLE001
            self._count("internal_errors")
            logger.exception("tokenfix: releasing held spans failed")

    def _process(self, releases: Iterable[Release]) -> None:
        for release in releases:
            self._process_one(release)

    def _process_one(self, release: Release) -> None:
        spans = release.spans  # the raw ReadableSpans this processor held
        if release.plain or (release.correct and not edits_in_play(release, self.conventions)):
            # no edit event anywhere in the trace: nothing can change and no exporter downstream can
            # misapply one
            self._forward_untouched(spans)
            return
        overlays: Mapping[int, Mapping[str, Any]] = {}
        views: tuple[Any, ...] = ()
        try:
            views = tuple(to_view(span) for span in spans)
            correction = correct_release(
                replace(release, spans=views), self._lookup, conventions=self.conventions,
                mark_unchanged=self._mark_unchanged,
            )
            overlays = correction.overlays
            counts = {
                "corrected": sum(1 for c in correction.calls if c.corrected),
                "fallback": correction.count(cv.STATUS_FALLBACK),
                "unchanged": correction.count(cv.STATUS_UNCHANGED),
                # an early release marks its spans error too, but those are counted as released_early
                "errors": correction.errors if release.correct else len(correction.issues),
            }
            for name, n in counts.items():
                self._count(name, n)
            for issue in correction.issues:
                logger.warning("tokenfix: edit %s not applied: %s", issue.edit, issue.reason)
        except Exception:  # noqa: BLE001 - the spans still go out, unchanged
            self._count("internal_errors")
            logger.exception("tokenfix: correcting trace %032x failed", release.trace_id)
        if release.reason in EARLY_REASONS:
            self._count("released_early", len(spans))
        for i, span in enumerate(spans):
            overlay = overlays.get(views[i].span_id) if i < len(views) else None
            if overlay:
                try:
                    span = corrected_copy(span, overlay)
                except Exception:  # noqa: BLE001
                    self._count("internal_errors")
                    logger.exception("tokenfix: building the corrected copy failed; forwarding the original")
            self._count("forwarded")
            self._forward(span)

    def _run_timer(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                with self._lock:
                    releases = self._assembly.tick()
                self._process(releases)
            except Exception:  # noqa: BLE001
                self._count("internal_errors")
                logger.exception("tokenfix: timer tick failed")


def _warm_up(tokenizers: Any, default: Any, done: threading.Event) -> None:
    """Load tokenizers and build their engine tables off the application's threads."""
    try:
        from ..trace.corrector import _looks_like_tokenizer

        found: list[Any] = []
        if hasattr(tokenizers, "load_all"):
            found.extend(tokenizers.load_all())
        elif isinstance(tokenizers, Mapping):
            found.extend(tokenizers.values())
        elif tokenizers is not None and _looks_like_tokenizer(tokenizers):
            found.append(tokenizers)
        if default is not None and _looks_like_tokenizer(default):
            found.append(default)
        from ..engine.table import get_table

        for tok in found:
            if _looks_like_tokenizer(tok):
                get_table(tok)
    except Exception:  # noqa: BLE001 - warm-up is an optimisation; the first correction will retry
        logger.warning("tokenfix: tokenizer warm-up failed", exc_info=True)
    finally:
        done.set()


def _with_sdk_limits(conventions: Conventions) -> Conventions:
    """Make truncated edit texts detectable: the SDK cuts string attributes (event ones too) to
    ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` / ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`` silently."""
    if conventions.truncation_limit is not None:
        return conventions
    try:
        limit = SpanLimits().max_attribute_length
    except Exception:  # noqa: BLE001 - a malformed env var: the SDK will complain itself
        return conventions
    if limit is None:
        return conventions
    logger.warning("tokenfix: string attributes are limited to %d chars; longer edit texts get truncated by the "
                   "SDK and are rejected", limit)
    return replace(conventions, truncation_limit=limit)


class _FastCounter:
    """The hot path's counter: ``next(counter.count)`` on an ``itertools.count`` is one C call (atomic under the
    GIL), about half the cost of a thread-local cell; the builtin ``next`` touches one object less than the
    bound ``tick`` (on the hottest path that is measurable)."""

    def __init__(self) -> None:
        self.count = itertools.count()
        self.tick = self.count.__next__

    def value(self) -> int:
        return int(repr(self.count)[len("count("):-1])  # how many ticks so far, without ticking


class _ThreadCounter:
    """An exact counter without a lock on the hot path: each thread increments its own cell."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._cells: list[list[int]] = []
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        try:
            self._local.cell[0] += n
        except AttributeError:  # first count on this thread
            cell = [n]
            with self._lock:
                self._cells.append(cell)
            self._local.cell = cell

    def value(self) -> int:
        with self._lock:
            return sum(cell[0] for cell in self._cells)


def _register_metrics(meter_provider: Any, processor: TokenFixSpanProcessor) -> Any:
    """Expose the counters as one OTel observable counter ``tokenfix.spans`` (attribute ``outcome``)
    and the held spans as an observable gauge; read on collection, so the hot path pays nothing."""
    try:
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = meter_provider.get_meter("otel_tokenfix")

        def counters(options: CallbackOptions) -> list[Observation]:
            stats = processor.stats
            return [Observation(stats[name], {"outcome": name}) for name in COUNTERS]

        def held(options: CallbackOptions) -> list[Observation]:
            stats = processor.stats
            return [Observation(stats["held_spans"], {"kind": "spans"}),
                    Observation(stats["held_traces"], {"kind": "traces"})]

        return (
            meter.create_observable_counter("tokenfix.spans", callbacks=[counters], unit="{span}",
                                            description="spans by outcome of token-id correction"),
            meter.create_observable_gauge("tokenfix.held", callbacks=[held], unit="{span}",
                                          description="spans and traces held for correction"),
        )
    except Exception:  # noqa: BLE001 - metrics are optional
        logger.exception("tokenfix: could not register metrics")
        return None
