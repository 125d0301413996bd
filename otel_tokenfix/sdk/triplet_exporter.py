"""TripletExporter: a SpanExporter that turns traces into corrected RL triplets.

Why an exporter (not a processor): it consumes finished spans in batches like any backend, so it plugs
in with ``OTEL_TRACES_EXPORTER=tokenfix_triplets`` and sits behind ``TokenFixSpanProcessor`` or alone.
It holds each trace with the shared :class:`TraceAssembly` (every span: rewards live on non-LLM spans
and the root's grace must cover late batches), corrects it with the shared ``correct_release`` (which
reads spans corrected upstream back instead of correcting them twice), and builds records with the
shared :func:`build_triplets`. Telemetry code never raises into the application: failures are counted
and logged; a failing sink keeps its records pending and retries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..trace import conventions as cv
from ..trace.assembly import REASON_SHUTDOWN, Release, TraceAssembly
from ..trace.corrector import correct_release
from ..triplets.build import TripletOptions, build_triplets, rewards_from_spans
from ..triplets.sinks import RetryingSink, make_sink
from .spans import to_view

log = logging.getLogger(__name__)

ENV_PREFIX = "OTEL_TOKENFIX_TRIPLETS_"
DEFAULT_PATH = "tokenfix-triplets.jsonl"
#: in-process, a trace's spans end (and are exported) before its local root: no grace needed by default
DEFAULT_ROOT_GRACE = 0.0


@dataclass
class ExporterStats:
    """Counters (read them, or log them at shutdown)."""

    spans: int = 0
    traces: int = 0
    incomplete_traces: int = 0
    triplets: int = 0
    corrected: int = 0
    unchanged: int = 0
    fallback: int = 0
    errors: int = 0
    edit_issues: int = 0
    orphan_rewards: int = 0
    #: spans that arrived after their trace was released (held again; released at the timeout, marked)
    late_spans: int = 0
    internal_errors: int = 0


def _env_bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _env_float(value: str | None, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        log.warning("ignoring malformed number %r", value)
        return default


def options_from_env(env: Mapping[str, str]) -> TripletOptions:
    """``OTEL_TOKENFIX_TRIPLETS_{MASK,TRAJECTORY,EDIT_AWARE,FINAL_REWARD,TEXT,ORIGINAL}``."""
    p = ENV_PREFIX
    mask = (env.get(p + "MASK") or "kept").strip().lower()
    return TripletOptions(
        mask=mask,
        trajectory=_env_bool(env.get(p + "TRAJECTORY"), False),
        edit_aware=_env_bool(env.get(p + "EDIT_AWARE"), True),
        final_reward=_env_bool(env.get(p + "FINAL_REWARD"), False),
        include_text=_env_bool(env.get(p + "TEXT"), True),
        include_original=_env_bool(env.get(p + "ORIGINAL"), True),
    )


def tokenizers_from_env(env: Mapping[str, str]) -> Any:
    """A lazy resolver for the shared ``OTEL_TOKENFIX_TOKENIZERS`` / ``..._DEFAULT_TOKENIZER`` settings."""
    from .settings import Settings

    settings = Settings.from_env(env)
    if not settings.tokenizers and not settings.default_tokenizer:
        return None
    return settings.resolver()


def _shared_hold_timeout(env: Mapping[str, str]) -> float:
    """The processor's hold timeout (``OTEL_TOKENFIX_HOLD_TIMEOUT``, shared default) as our fallback."""
    from .settings import Settings

    return float(Settings.from_env(env).hold_timeout)


class TripletExporter(SpanExporter):
    """Export corrected triplets (one record per LLM call, in call order) to a sink.

    ``sink``: a path (JSONL), a callable, a list, or a :class:`TripletSink`; ``None`` reads
    ``OTEL_TOKENFIX_TRIPLETS_PATH`` (default ``tokenfix-triplets.jsonl``). ``tokenizers``: as for the
    processor (needed only when the exporter applies edits itself); ``None`` reads the shared
    ``OTEL_TOKENFIX_*`` settings. ``options``: mask policy, trajectory mode, final reward (``None``
    reads ``OTEL_TOKENFIX_TRIPLETS_*``). ``root_grace``: seconds a trace stays open after its local
    root arrived, for spans that end after it (fire-and-forget tasks) or when batches are reordered
    (default 0, ``OTEL_TOKENFIX_TRIPLETS_ROOT_GRACE``; spans arriving after their trace left are counted
    in ``stats.late_spans``, logged, and written later marked incomplete — never dropped).
    ``hold_timeout``: a trace whose root never arrives is released after that long, marked incomplete
    (default ``OTEL_TOKENFIX_TRIPLETS_HOLD_TIMEOUT``, else the shared ``OTEL_TOKENFIX_HOLD_TIMEOUT``).
    ``apply_edits``: ``True`` alone (apply the trace's edits), ``False`` behind the processor (only read
    corrected spans back; see :meth:`behind_processor`), ``None`` auto (apply until a span corrected
    upstream is seen; ``OTEL_TOKENFIX_TRIPLETS_APPLY_EDITS``). A daemon timer releases traces between exports
    (``timer=False`` to drive :meth:`tick` yourself). ``provider.force_flush()`` does not reach an
    exporter: call :meth:`force_flush` (releases every held trace) or shut the provider down.
    """

    def __init__(
        self,
        sink: Any = None,
        *,
        tokenizers: Any = None,
        options: TripletOptions | None = None,
        root_grace: float | None = None,
        hold_timeout: float | None = None,
        max_traces: int | None = None,
        max_spans: int | None = None,
        conventions: cv.Conventions = cv.DEFAULT_CONVENTIONS,
        fsync: bool | None = None,
        timer: bool = True,
        clock: Callable[[], float] = time.monotonic,
        env: Mapping[str, str] | None = None,
        sink_backoff_s: float = 0.05,
        sink_max_pending: int = 100_000,
        apply_edits: bool | None = None,
    ) -> None:
        env = os.environ if env is None else env
        p = ENV_PREFIX
        if sink is None:
            from ..triplets.sinks import JsonlSink

            sink = JsonlSink(
                env.get(p + "PATH") or DEFAULT_PATH,
                fsync=_env_bool(env.get(p + "FSYNC"), False) if fsync is None else fsync,
            )
        elif fsync is not None and isinstance(sink, (str, os.PathLike)):
            from ..triplets.sinks import JsonlSink

            sink = JsonlSink(sink, fsync=fsync)
        self.sink: RetryingSink = RetryingSink(
            make_sink(sink), backoff_s=sink_backoff_s, max_pending=sink_max_pending, clock=clock
        )
        self.tokenizers = tokenizers if tokenizers is not None else tokenizers_from_env(env)
        self.options = options if options is not None else options_from_env(env)
        self.conventions = conventions
        self.assembly = TraceAssembly(
            hold=lambda span: True,
            conventions=conventions,
            max_traces=int(_env_float(env.get(p + "MAX_TRACES"), 4096)) if max_traces is None else max_traces,
            max_spans=int(_env_float(env.get(p + "MAX_SPANS"), 200_000)) if max_spans is None else max_spans,
            hold_timeout=_env_float(env.get(p + "HOLD_TIMEOUT"), _shared_hold_timeout(env))
            if hold_timeout is None
            else hold_timeout,
            root_grace=_env_float(env.get(p + "ROOT_GRACE"), DEFAULT_ROOT_GRACE) if root_grace is None else root_grace,
            clock=clock,
        )
        if apply_edits is None:
            raw = (env.get(p + "APPLY_EDITS") or "auto").strip().lower()
            apply_edits = None if raw == "auto" else _env_bool(raw, True)
        #: True: apply the trace's edits (alone); False: only read corrected spans back (behind the
        #: processor); None (auto): apply them until a span corrected upstream is seen.
        self.apply_edits = apply_edits
        self._seen_upstream = False
        self.stats = ExporterStats()
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._shutdown = False
        self._use_timer = timer
        self._timer: threading.Thread | None = None
        self._wake = threading.Event()

    # --- SpanExporter --------------------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            releases: list[Release] = []
            with self._lock:
                for span in spans:
                    try:
                        view = to_view(span)
                    except Exception as exc:  # noqa: BLE001 - a malformed span must not stop the batch
                        self.stats.internal_errors += 1
                        log.warning("tokenfix triplets: skipping a span that cannot be read: %s", exc)
                        continue
                    self.stats.spans += 1
                    if not self._seen_upstream and cv.STATUS in view.attributes:
                        self._seen_upstream = True
                    if self._released_before(view.trace_id):
                        self.stats.late_spans += 1
                        if self.stats.late_spans in (1, 10, 100) or self.stats.late_spans % 1000 == 0:
                            log.warning(
                                "tokenfix triplets: %d span(s) arrived after their trace was released "
                                "(raise OTEL_TOKENFIX_TRIPLETS_ROOT_GRACE?)",
                                self.stats.late_spans,
                            )
                    releases.extend(self.assembly.add(view).releases)
                releases.extend(self.assembly.tick())
            self._emit(releases)
            self.sink.flush()
            self._ensure_timer()
        except Exception:  # noqa: BLE001 - never raise into the SDK / the application
            self.stats.internal_errors += 1
            log.exception("tokenfix triplets: export failed")
        return SpanExportResult.SUCCESS

    def _released_before(self, trace_id: int) -> bool:
        """Whether a trace with held spans already left (the assembly remembers recent releases)."""
        released = getattr(self.assembly, "_released_traces", None)
        return bool(released and released.get(trace_id))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Release every held trace (marked incomplete when its root has not arrived), write, retry."""
        try:
            with self._lock:
                releases = self.assembly.drain()
            self._emit(releases)
            return self.sink.flush(force=True)
        except Exception:  # noqa: BLE001
            self.stats.internal_errors += 1
            log.exception("tokenfix triplets: force_flush failed")
            return False

    def shutdown(self) -> None:
        """Release held traces (incomplete ones marked), write them, close the sink. Idempotent."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        try:
            with self._lock:
                releases = self.assembly.drain(REASON_SHUTDOWN)
            self._emit(releases)
        except Exception:  # noqa: BLE001
            self.stats.internal_errors += 1
            log.exception("tokenfix triplets: shutdown failed to release held traces")
        self.sink.close()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=2.0)
        log.info("tokenfix triplets: %s; sink %s", asdict(self.stats), asdict(self.sink.stats))

    # --- time ------------------------------------------------------------------------------------------
    def tick(self) -> int:
        """Release traces whose grace ended or whose hold timed out; returns how many were released."""
        with self._lock:
            releases = self.assembly.tick()
        self._emit(releases)
        self.sink.flush()
        return len(releases)

    def _ensure_timer(self) -> None:
        if not self._use_timer or self._timer is not None or self._shutdown:
            return
        self._timer = threading.Thread(target=self._run_timer, name="tokenfix-triplets-timer", daemon=True)
        self._timer.start()

    def _run_timer(self) -> None:
        while not self._shutdown:
            with self._lock:
                deadline = self.assembly.next_deadline()
            now = self.assembly.clock()
            wait = 1.0 if deadline is None else min(1.0, max(0.01, deadline - now))
            if self.sink.pending:
                wait = min(wait, max(0.01, self.sink._next_try - now))  # noqa: SLF001 - retry when due
            self._wake.wait(wait)
            if self._shutdown:
                return
            try:
                self.tick()
            except Exception:  # noqa: BLE001
                self.stats.internal_errors += 1
                log.exception("tokenfix triplets: timer tick failed")

    # --- releases -> records -> sink -------------------------------------------------------------------
    def _emit(self, releases: Sequence[Release]) -> None:
        if not releases:
            return
        with self._emit_lock:  # one writer at a time: counters stay exact, a trace's lines stay together
            for release in releases:
                try:
                    records = self._records(release)
                except Exception:  # noqa: BLE001 - a bug in one trace must not stop the others
                    self.stats.internal_errors += 1
                    log.exception("tokenfix triplets: trace %032x could not be built", release.trace_id)
                    continue
                if records:
                    self.sink.write(records)

    def behind_processor(self) -> None:
        """Declare that a ``TokenFixSpanProcessor`` corrects upstream: edits are never applied here.

        Why it matters: behind the processor an edit's target may still be held upstream (e.g. a step
        that ends after its trace's root) while its carrier span already arrived here; applied here, an
        untargeted edit would land on the wrong call. The processor and the configurator call this.
        """
        self.apply_edits = False

    def _reads_back_only(self, release: Release) -> bool:
        if self.apply_edits is not None:
            return not self.apply_edits
        return self._seen_upstream or any(cv.STATUS in s.attributes for s in release.all_spans)

    def _records(self, release: Release) -> list:
        if self._reads_back_only(release):  # edits were applied upstream: show the corrector none
            release = replace(
                release,
                spans=tuple(replace(s, events=()) if s.events else s for s in release.spans),
                context=tuple(replace(s, events=()) if s.events else s for s in release.context),
                foreign=(),
            )
        spans = release.all_spans
        tc = correct_release(release, self.tokenizers, conventions=self.conventions)
        records = build_triplets(
            tc, spans, self.options, complete=release.complete, release_reason=release.reason
        )
        st = self.stats
        st.traces += 1
        if not release.complete:
            st.incomplete_traces += 1
        st.edit_issues += len(tc.issues)
        for issue in tc.issues:
            log.warning("tokenfix triplets: edit %s not applied: %s", issue.edit, issue.reason)
        for call in tc.calls:
            if call.status == cv.STATUS_CORRECTED:
                st.corrected += 1
            elif call.status == cv.STATUS_FALLBACK:
                st.fallback += 1
            elif call.status == cv.STATUS_ERROR:
                st.errors += 1
            else:
                st.unchanged += 1
        if not tc.calls:
            orphans = rewards_from_spans(spans, self.conventions)
            if orphans:
                st.orphan_rewards += len(orphans)
                log.warning(
                    "tokenfix triplets: %d reward(s) of trace %032x arrived with no LLM call to attach to",
                    len(orphans),
                    release.trace_id,
                )
        st.triplets += len(records)
        return records


__all__ = ["TripletExporter", "ExporterStats", "options_from_env"]

