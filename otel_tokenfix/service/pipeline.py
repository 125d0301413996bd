"""The service pipeline: OTLP requests -> SpanViews -> TraceAssembly -> corrector -> triplets + forward.

Why this is thin: the holding, correction and record building are the shared middle
(:class:`TraceAssembly`, :func:`correct_release`, :func:`build_triplets`), called exactly as the SDK's
``TripletExporter`` calls them, so the service and the in-process path give the same triplets. This
module only adds what a network edge needs: thread safety across request handlers, a timer for grace
periods and hold timeouts, counters, forwarding corrected protobuf spans, and an optional request
journal (the crash-safe spool) that learns when a request's traces are durably written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ..otlp.decode import SpanRef, request_views
from ..otlp.encode import apply_overlay
from ..trace import conventions as cv
from ..trace.assembly import REASON_SHUTDOWN, Release, TraceAssembly, edits_in_play, ids_weight
from ..trace.corrector import as_lookup, correct_release
from ..trace.view import SpanView
from ..triplets.build import TripletOptions, build_triplets, rewards_from_spans
from ..triplets.record import TripletRecord
from ..triplets.sinks import RetryingSink, TripletSink, make_sink

log = logging.getLogger("otel_tokenfix.service")


@dataclass
class ServiceStats:
    """Counters of one service instance (logged, served on /healthz, exported as OTel metrics)."""

    requests: int = 0
    spans: int = 0
    rejected_requests: int = 0
    #: requests refused because the correction queue was full (the sender retries them)
    busy_requests: int = 0
    traces: int = 0
    incomplete_traces: int = 0
    triplets: int = 0
    corrected: int = 0
    unchanged: int = 0
    fallback: int = 0
    errors: int = 0
    edit_issues: int = 0
    late_edits: int = 0
    orphan_rewards: int = 0
    internal_errors: int = 0
    held_spans: int = 0
    held_traces: int = 0


_REWARD_KEYS = frozenset((cv.AGL_REWARD_PREFIX + ".0.value", cv.LEGACY_REWARD_KEY, *cv.AGENTOPS_OUTPUT_KEYS))


def _may_carry_reward(span: SpanView) -> bool:
    """Cheap pre-check (one C-speed set test over the keys) before reading primary rewards."""
    attrs = span.attributes
    return not _REWARD_KEYS.isdisjoint(attrs.keys() if hasattr(attrs, "keys") else attrs)


class ServiceUnavailable(Exception):
    """The request cannot be accepted now (correction backlog full, the spool cannot make it durable): the
    sender retries, after ``retry_after`` seconds if set."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Forwarding(Protocol):
    """Where corrected spans go next (see :mod:`otel_tokenfix.service.forward`)."""

    def submit(self, items: Sequence[tuple[SpanRef, Span]]) -> None: ...

    def close(self, timeout: float = 10.0) -> None: ...


class RequestJournal(Protocol):
    """Durability hook (``serve --spool``): told about each request (its spans' ``(trace_id, span_id)``)
    before it is acknowledged, and about each span once the release holding it has its triplets flushed
    to the sink. Spans, not traces: a late span of a trace being released must keep its request open."""

    def accepted(self, raw: bytes | None, keys: Sequence[tuple[int, int]]) -> None: ...

    def flushed(self, keys: Iterable[tuple[int, int]]) -> None: ...


@dataclass(frozen=True)
class PipelineOptions:
    """Holding and record options. ``root_grace``: seconds a trace stays open after its local root
    arrived (batches from a Collector may reorder); ``hold_timeout``: a trace whose root never arrives is
    released after that long, uncorrected and marked incomplete."""

    triplets: TripletOptions = TripletOptions()
    root_grace: float = 2.0
    hold_timeout: float = 300.0
    max_traces: int = 50_000
    max_spans: int = 1_000_000
    #: token ids on held spans at most (memory: a 32k-token span weighs as much as 32 spans of 1k)
    max_ids: int = 4_000_000
    #: a late part of a trace (spans after its release) is released this long after its last span
    late_grace: float = 2.0
    #: released spans / token ids waiting for correction before intake refuses new requests (gRPC
    #: UNAVAILABLE / HTTP 503 + Retry-After; the sender retries). ``None``: the held bounds (``max_spans``,
    #: ``max_ids``), so queued work at most doubles the memory the held bounds allow. Accepted spans are
    #: never dropped: the queue may exceed a bound by the requests being taken at that moment.
    max_queued_spans: int | None = None
    max_queued_ids: int | None = None
    #: seconds a request waits for room in the queue before it is refused
    backpressure_timeout: float = 1.0
    #: seconds a refused sender is told to wait (``Retry-After``, gRPC ``RetryInfo``)
    retry_after: float = 1.0
    #: in a trace with edits, forwarded LLM spans without an edit of their own get
    #: ``tokenfix.status=unchanged`` (as the SDK processor's default); a trace without edits goes out untouched
    mark_unchanged: bool = True


class Pipeline:
    """Thread-safe: request handlers call :meth:`submit` concurrently; a timer thread calls :meth:`tick`.

    After :meth:`start`, releases are corrected and written by one worker thread, so a request is
    acknowledged once its spans are held, not after correcting whatever it released: a sender's timeout
    (a Collector retries after 5 s, which would duplicate spans) never depends on correction time. When
    the worker falls ``max_queued_spans`` spans or ``max_queued_ids`` token ids behind, intake waits up to
    ``backpressure_timeout``, then refuses with :class:`ServiceUnavailable` *before* taking the request
    (so memory stays bounded: held + queued). Without :meth:`start` (``convert``) releases are handled inline.
    """

    def __init__(
        self,
        *,
        tokenizers: Any,
        sink: TripletSink | Any,
        options: PipelineOptions | None = None,
        forwarder: Forwarding | None = None,
        journal: RequestJournal | None = None,
        conventions: cv.Conventions = cv.DEFAULT_CONVENTIONS,
        clock: Callable[[], float] = time.monotonic,
        record_filter: Callable[[TripletRecord], bool] | None = None,
    ) -> None:
        self.options = options or PipelineOptions()
        self.tokenizers = tokenizers
        #: ``lookup(model) -> tokenizer``, normalised once (a mapping would be re-indexed for every trace)
        self._lookup = as_lookup(tokenizers)
        self.conventions = conventions
        #: without a next hop the corrected span copy (the overlay) is never sent: skip its most costly part,
        #: re-writing the source keys (re-parsing and re-indexing e.g. a ``logprobs.content`` JSON string)
        self._correct_conv = conventions if forwarder is not None else replace(conventions, overwrite_source_key=False)
        self.sink = sink if isinstance(sink, RetryingSink) else RetryingSink(make_sink(sink), clock=clock)
        self.forwarder = forwarder
        self.journal = journal
        self.record_filter = record_filter
        self.assembly = TraceAssembly(
            hold=lambda span: True,  # every span: rewards live on non-LLM spans; forwarding needs all
            conventions=conventions,
            max_traces=self.options.max_traces,
            max_spans=self.options.max_spans,
            hold_timeout=self.options.hold_timeout,
            root_grace=self.options.root_grace,
            max_ids=self.options.max_ids,
            late_grace=self.options.late_grace,
            clock=clock,
        )
        self.stats = ServiceStats()
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._timer: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._queue: deque[tuple[Sequence[Release], int, int]] = deque()
        self._queued_spans = 0
        self._queued_ids = 0
        opts = self.options
        self.max_queued_spans = max(1, opts.max_queued_spans if opts.max_queued_spans is not None else opts.max_spans)
        self.max_queued_ids = max(1, opts.max_queued_ids if opts.max_queued_ids is not None else opts.max_ids)
        self._busy_logged = 0.0
        self._busy_unlogged = 0
        self._qcond = threading.Condition()
        self._worker_stop = False
        self.closed = False
        self._unjournaled: list[tuple[int, int]] = []

    # --- intake ----------------------------------------------------------------------------------------
    def submit(self, request: ExportTraceServiceRequest, raw: bytes | None = None) -> int:
        """Take one decoded request; returns its span count. Never raises on span content."""
        self._wait_capacity()
        views = request_views(request)
        with self._lock:
            self.stats.requests += 1
            self.stats.spans += len(views)
        if self.journal is not None:
            self.journal.accepted(raw, [(v.trace_id, v.span_id) for v in views])
        self.add_views(views)
        return len(views)

    def add_views(self, views: Sequence[SpanView]) -> None:
        releases: list[Release] = []
        with self._lock:
            for view in views:
                try:
                    releases.extend(self.assembly.add(view).releases)
                except Exception:  # noqa: BLE001 - one bad span must not stop the request
                    self.stats.internal_errors += 1
                    log.exception("span %016x of trace %032x could not be held", view.span_id, view.trace_id)
            releases.extend(self.assembly.tick())
        self._dispatch(releases)
        if releases:
            self._wake.set()

    # --- the correction worker -------------------------------------------------------------------------
    def _has_room(self) -> bool:
        return self._queued_spans <= self.max_queued_spans and self._queued_ids <= self.max_queued_ids

    def saturated(self) -> bool:
        """True while the correction queue is over a bound: a handler may refuse before reading a body."""
        return self._worker is not None and not self._has_room()

    def refuse_busy(self) -> ServiceUnavailable:
        """Count (and, at most every 5 s, log) a request refused for a full queue; the error to raise."""
        now = time.monotonic()
        with self._lock:
            self.stats.busy_requests += 1
            self._busy_unlogged += 1
            if now - self._busy_logged >= 5.0:
                self._busy_logged, n, self._busy_unlogged = now, self._busy_unlogged, 0
            else:
                n = 0
        if n:
            log.warning("correction queue full (%d spans, %d ids queued; limits %d, %d): refused %d request(s) "
                        "with retry-after %.3gs", self._queued_spans, self._queued_ids, self.max_queued_spans,
                        self.max_queued_ids, n, self.options.retry_after)
        return ServiceUnavailable(
            f"correction backlog over {self.max_queued_spans} spans or {self.max_queued_ids} token ids; retry later",
            retry_after=self.options.retry_after)

    def _wait_capacity(self) -> None:
        if self._worker is None:
            return
        with self._qcond:
            if self._has_room():
                return
            ok = self._qcond.wait_for(self._has_room, timeout=self.options.backpressure_timeout)
        if not ok:
            raise self.refuse_busy()

    def _release_weight(self, releases: Sequence[Release]) -> tuple[int, int]:
        spans = ids = 0
        conv = self.conventions
        id_keys = conv.id_key_set
        for r in releases:
            spans += len(r.spans)
            for view in r.spans:
                attrs = getattr(view, "attributes", None)
                if attrs is not None and not id_keys.isdisjoint(attrs.keys()):  # most spans hold no ids
                    ids += ids_weight(attrs, conv)
        return spans, ids

    def _dispatch(self, releases: Sequence[Release]) -> None:
        if not releases:
            return
        if self._worker is None:
            self._emit(releases)
            return
        spans, ids = self._release_weight(releases)
        with self._qcond:
            self._queue.append((releases, spans, ids))
            self._queued_spans += spans
            self._queued_ids += ids
            self._qcond.notify_all()

    def _run_worker(self) -> None:
        while True:
            with self._qcond:
                self._qcond.wait_for(lambda: bool(self._queue) or self._worker_stop)
                if not self._queue:
                    return
                batch, spans, ids = self._queue.popleft()
            try:
                self._emit(batch)
            except Exception:  # noqa: BLE001 - _emit guards each trace; this is a last resort
                self.stats.internal_errors += 1
                log.exception("correction worker failed on a batch")
            with self._qcond:
                self._queued_spans -= spans
                self._queued_ids -= ids
                self._qcond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every dispatched release is written (True) or ``timeout`` passed (False)."""
        with self._qcond:
            return self._qcond.wait_for(lambda: not self._queue and self._queued_spans == 0, timeout=timeout)

    # --- time ------------------------------------------------------------------------------------------
    def tick(self) -> int:
        with self._lock:
            releases = self.assembly.tick()
        self._dispatch(releases)
        self.sink.flush()
        if self._unjournaled:
            with self._emit_lock:
                self._journal_flushed()
        return len(releases)

    def start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run_worker, name="tokenfix-serve-correct", daemon=True)
            self._worker.start()
        if self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="tokenfix-serve-timer", daemon=True)
            self._timer.start()

    def _run_timer(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                deadline = self.assembly.next_deadline()
            now = self.assembly.clock()
            wait = 1.0 if deadline is None else min(1.0, max(0.005, deadline - now))
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # noqa: BLE001
                self.stats.internal_errors += 1
                log.exception("timer tick failed")

    def drain(self, reason: str = REASON_SHUTDOWN) -> int:
        """Release every held trace (corrected with the edits seen so far) and write it."""
        with self._lock:
            releases = self.assembly.drain(reason)
        self._dispatch(releases)
        self.wait_idle()
        self.sink.flush(force=True)
        return len(releases)

    def close(self, forward_timeout: float = 10.0) -> None:
        """Stop the timer, release everything, flush the sink, drain the forwarder. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._wake.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=5.0)
        try:
            self.drain(REASON_SHUTDOWN)
        except Exception:  # noqa: BLE001
            self.stats.internal_errors += 1
            log.exception("draining held traces failed")
        if self._worker is not None and self._worker is not threading.current_thread():
            with self._qcond:
                self._worker_stop = True  # after the drain: the worker empties the queue, then exits
                self._qcond.notify_all()
            self._worker.join(timeout=60.0)
        self.sink.close()
        if self.forwarder is not None:
            self.forwarder.close(forward_timeout)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self.stats.held_spans = self.assembly.held_spans
            self.stats.held_traces = self.assembly.held_traces
            self.stats.late_edits = self.assembly.late_edits
            out = asdict(self.stats)
        out["queued_spans"] = self._queued_spans
        out["queued_ids"] = self._queued_ids
        out["sink"] = asdict(self.sink.stats)
        stats = getattr(self.forwarder, "stats", None)
        if stats is not None:
            out["forward"] = asdict(stats)
        return out

    # --- releases -> triplets + forwarded spans ---------------------------------------------------------
    def _emit(self, releases: Sequence[Release]) -> None:
        if not releases:
            return
        with self._emit_lock:  # one writer: counters exact, a trace's lines together
            forward: list[tuple[SpanRef, Span]] = []
            # the batch's records in release order, written at once: one write (and file-identity check,
            # lock, syscall) per batch instead of per trace; each trace's lines stay together either way
            batch: list[TripletRecord] = []
            for release in releases:
                overlays: Any = {}
                try:
                    records, overlays = self._records(release)
                    batch.extend(records)
                except Exception:  # noqa: BLE001 - a bug in one trace must not stop the others
                    self.stats.internal_errors += 1
                    log.exception("trace %032x could not be corrected; forwarding it unchanged", release.trace_id)
                if self.forwarder is not None:
                    forward.extend(self._forward_items(release, overlays))
            if batch:
                self.sink.write(batch)  # a RetryingSink: never raises; a failed batch stays pending
            self.sink.flush()
            if self.journal is not None:
                self._unjournaled.extend((r.trace_id, v.span_id) for r in releases for v in r.spans)
                self._journal_flushed()
            if forward and self.forwarder is not None:
                self.forwarder.submit(forward)

    def _journal_flushed(self) -> None:
        """Tell the journal which spans' releases are on disk, once the sink holds nothing pending."""
        if self.journal is not None and self._unjournaled and self.sink.pending == 0:
            done, self._unjournaled = self._unjournaled, []
            self.journal.flushed(done)

    def _records(self, release: Release) -> tuple[list[TripletRecord], Any]:
        spans = release.all_spans
        forwarding = self.forwarder is not None
        tc = correct_release(release, self._lookup, conventions=self._correct_conv,
                             mark_unchanged=forwarding and self.options.mark_unchanged
                             and edits_in_play(release, self.conventions),
                             overlays=forwarding)
        records: list[TripletRecord] = []
        if tc.calls:  # records are per LLM call: a trace without one has none (skip reading its rewards)
            records = build_triplets(tc, spans, self.options.triplets, complete=release.complete,
                                     release_reason=release.reason)
        if self.record_filter is not None:
            records = [r for r in records if self.record_filter(r)]
        st = self.stats
        st.traces += 1
        if not release.complete:
            st.incomplete_traces += 1
        st.edit_issues += len(tc.issues)
        for issue in tc.issues:
            log.warning("trace %032x: edit %s not applied: %s", release.trace_id, issue.edit, issue.reason)
        for call in tc.calls:
            if call.status == cv.STATUS_CORRECTED:
                st.corrected += 1
            elif call.status == cv.STATUS_FALLBACK:
                st.fallback += 1
            elif call.status == cv.STATUS_ERROR:
                st.errors += 1
            else:
                st.unchanged += 1
        if not tc.calls and any(_may_carry_reward(s) for s in spans):
            st.orphan_rewards += len(rewards_from_spans(spans, self.conventions))
        st.triplets += len(records)
        return records, tc.overlays

    @staticmethod
    def _forward_items(release: Release, overlays: Any) -> list[tuple[SpanRef, Span]]:
        items: list[tuple[SpanRef, Span]] = []
        for view in release.spans:
            ref = view.source
            if not isinstance(ref, SpanRef):
                continue
            overlay = overlays.get(view.span_id) if overlays else None
            items.append((ref, apply_overlay(ref.span, overlay) if overlay else ref.span))
        return items
