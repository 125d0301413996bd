"""TraceAssembly: which spans of which trace are held, when a trace is complete, bounds and timeouts.

Why pure: the SDK processor, the triplet exporter and the OTLP service hold traces the same way and
differ only in their clock, in which spans they hold, and in what they do with a release. This class
does no I/O, takes no lock (callers serialise calls) and never raises on span content.

The rules:
- a span for which ``hold(span)`` is true is held until its trace's *local root* ends; other spans
  pass at once (``AddResult.held`` is false), but if ``remember(span)`` is true (by default: it
  carries edit events) it is kept as *context* so the trace's corrector still sees its edits;
- a trace whose local root is itself held (an agent that traces nothing around its LLM calls) is
  held ``root_grace`` seconds more, so an edit from a *later* trace naming its span id or response id
  still reaches it: edits with an explicit target held in another trace are routed there (the carrier
  joins that trace's ``foreign`` spans and the edit is noted ``routed`` in its own trace);
- bounds: at most ``max_traces`` traces, ``max_spans`` held spans (spans kept only for their edit
  events count too, so an agent editing in a loop under a root that never ends stays bounded) and
  ``max_ids`` token ids on held spans (memory: a 32k-token span weighs 32 of 1k); a trace held longer
  than ``hold_timeout`` seconds without its root ending is released; such early releases have
  ``correct=False`` (forward uncorrected, marked with the reason) — spans are never dropped;
- a span of a trace whose local root already ended (it ended after its root) starts a *late part*: no
  root may ever end it, so it is released ``late_grace`` seconds after its last span (reason
  ``late_part``, corrected, ``complete=False``: a fragment), or when another local root of the trace
  ends (a second request of a distributed trace: complete);
- an edit whose target was already released is *late*: counted, noted ``late``, reported in
  :attr:`TraceAssembly.recent_late`;
- :meth:`drain` releases everything (flush / shutdown), with the edits seen so far.
Every held span leaves in exactly one :class:`Release`.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from . import conventions as cv
from .conventions import Conventions, EditEvent
from .view import SpanView

EditKey = tuple[int, int]  # (carrier span id, event index)

NOTE_ROUTED = "routed"
NOTE_LATE = "late"

REASON_COMPLETE = "complete"
REASON_ROOT_GRACE = "root_grace"
REASON_TIMEOUT = "timeout"
REASON_MAX_TRACES = "max_traces"
REASON_MAX_SPANS = "max_spans"
REASON_MAX_IDS = "max_ids"
REASON_LATE_PART = "late_part"
REASON_FLUSH = "flush"
REASON_SHUTDOWN = "shutdown"
EARLY_REASONS = (REASON_TIMEOUT, REASON_MAX_TRACES, REASON_MAX_SPANS, REASON_MAX_IDS)


@dataclass(frozen=True)
class Release:
    """Spans leaving the assembly together, and what the corrector needs to know about them."""

    trace_id: int
    #: held spans to forward now (each span is in exactly one release)
    spans: tuple[SpanView, ...]
    #: spans of this trace that already passed through, kept for their edit events
    context: tuple[SpanView, ...] = ()
    #: spans of *other* traces carrying edits whose explicit target is in this trace
    foreign: tuple[SpanView, ...] = ()
    #: the trace's local root ended (and a root grace passed)
    complete: bool = True
    reason: str = REASON_COMPLETE
    #: apply the trace's edits; False for early releases (bounds, timeout): forward uncorrected, marked
    correct: bool = True
    #: edits of this trace's spans that must not be applied here: ``routed`` elsewhere or ``late``
    edit_notes: Mapping[EditKey, str] = field(default_factory=dict)

    @property
    def all_spans(self) -> tuple[SpanView, ...]:
        """What the corrector reads: held spans then context (foreign carriers go separately)."""
        return self.spans + self.context


@dataclass(frozen=True)
class AddResult:
    #: True if the span is now held (it leaves later in a release); False: forward it now
    held: bool
    releases: list[Release]


@dataclass(frozen=True)
class LateEdit:
    """An edit that arrived after its target had left (reported, never applied)."""

    edit: EditKey
    carrier_trace_id: int
    target: str
    released_because: str


class _Trace:
    """One trace being held (a plain slots class: created once per trace on the hot path)."""

    __slots__ = ("trace_id", "created", "held", "response_ids", "context", "foreign", "notes", "root_ended",
                 "grace_until", "ids", "late")

    def __init__(self, trace_id: int, created: float) -> None:
        self.trace_id = trace_id
        self.created = created
        self.held: list[SpanView] = []
        self.response_ids: list[str] = []
        self.context: list[SpanView] = []
        self.foreign: list[SpanView] = []
        self.notes: dict[EditKey, str] = {}
        self.root_ended = False
        self.grace_until: float | None = None
        self.ids = 0
        #: a late part of a trace whose root had already ended (released after a sliding root grace)
        self.late = False


class TraceAssembly:
    """Per-trace holding with bounds and timeouts; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        hold: Callable[[SpanView], bool] | None = None,
        remember: Callable[[SpanView], bool] | None = None,
        conventions: Conventions = cv.DEFAULT_CONVENTIONS,
        max_traces: int = 1024,
        max_spans: int = 8192,
        hold_timeout: float = 1800.0,
        root_grace: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        memory: int = 16384,
        max_ids: int = 4_000_000,
        late_grace: float = 2.0,
    ) -> None:
        self.conventions = conventions
        self._hold = hold or (lambda span: cv.has_response_key(span, conventions))
        self._remember = remember or (lambda span: cv.has_edit_events(span, conventions))
        self.max_traces = max(1, int(max_traces))
        self.max_spans = max(1, int(max_spans))
        self.max_ids = max(1, int(max_ids))
        self.hold_timeout = float(hold_timeout)
        self.root_grace = max(0.0, float(root_grace))
        self.late_grace = max(0.0, float(late_grace))
        self.clock = clock
        self._memory = memory
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._grace: deque[tuple[float, int]] = deque()
        self._by_span: dict[int, int] = {}
        self._by_response: dict[str, int] = {}
        self._released_spans: OrderedDict[int, str] = OrderedDict()
        self._released_responses: OrderedDict[str, str] = OrderedDict()
        self._released_traces: OrderedDict[int, str] = OrderedDict()
        #: traces whose local root already ended: a later part of one is not waited for (no root will end it)
        self._ended_roots: OrderedDict[int, None] = OrderedDict()
        self._late_part = False
        self.held_spans = 0
        #: token ids held (prompt + response attributes, estimated by length): memory is bounded by ids
        self.held_ids = 0
        #: spans kept only for their edit events (context, routed carriers): they count against max_spans too
        self.context_spans = 0
        self.late_edits = 0
        self.routed_edits = 0
        self.recent_late: deque[LateEdit] = deque(maxlen=100)

    # --- public API --------------------------------------------------------------------------------
    @property
    def held_traces(self) -> int:
        return sum(1 for t in self._traces.values() if t.held)

    def __len__(self) -> int:
        return self.held_spans

    def add(self, span: SpanView, now: float | None = None) -> AddResult:
        """Take one ended span. Returns whether it is held and every release it (or time) caused."""
        now = self.clock() if now is None else now
        releases = self._expire(now) if (self._grace or self._traces) else []
        entry = self._traces.get(span.trace_id)
        if span.events:
            edits = cv.read_edits(span, self.conventions)
            if edits:
                entry = self._route_edits(span, edits, entry, now)
        held = bool(self._hold(span))
        if held:
            entry = entry or self._new_entry(span.trace_id, now)
            entry.held.append(span)
            self.held_spans += 1
            weight = _ids_weight(span, self.conventions)
            entry.ids += weight
            self.held_ids += weight
            self._by_span[span.span_id] = span.trace_id
            response_id = cv.read_response_id(span, self.conventions)
            if response_id:
                self._by_response[response_id] = span.trace_id
                entry.response_ids.append(response_id)
        elif self._remember(span):
            entry = entry or self._new_entry(span.trace_id, now)
            entry.context.append(span)
            self.context_spans += 1
        if entry is not None and entry.late and not self._late_part:
            if span.is_local_root:  # another local root of the trace (a second request): it ends the part
                releases.extend(self._finish(entry, REASON_COMPLETE, complete=True, correct=True))
                entry = None
            else:  # activity keeps a late part open: the grace slides
                entry.grace_until = now + self.late_grace
                self._grace.append((entry.grace_until, entry.trace_id))
        if span.is_local_root:
            self._remember_lru(self._ended_roots, span.trace_id, None)
            if entry is not None and not entry.root_ended:
                entry.root_ended = True
                if held and self.root_grace > 0:
                    entry.grace_until = now + self.root_grace
                    self._grace.append((entry.grace_until, entry.trace_id))
                else:
                    releases.extend(self._finish(entry, REASON_COMPLETE, complete=True, correct=True))
        if self._late_part:  # a late part with no grace to wait: leaves now
            self._late_part = False
            releases.extend(self._expire(now))
        releases.extend(self._enforce_bounds())
        return AddResult(held, releases)

    def end_root(self, trace_id: int, now: float | None = None) -> list[Release]:
        """A local root that is neither held nor remembered ended (the hot path: the edge need not build a
        SpanView for it). Same effect as :meth:`add` of such a span."""
        now = self.clock() if now is None else now
        releases = self._expire(now) if (self._grace or self._traces) else []
        self._remember_lru(self._ended_roots, trace_id, None)
        entry = self._traces.get(trace_id)
        if entry is not None and (not entry.root_ended or entry.late):
            entry.root_ended = True
            releases.extend(self._finish(entry, REASON_COMPLETE, complete=True, correct=True))
        return releases

    def tick(self, now: float | None = None) -> list[Release]:
        """Release traces whose root grace ended or whose hold timed out."""
        return self._expire(self.clock() if now is None else now)

    def drain(self, reason: str = REASON_FLUSH) -> list[Release]:
        """Release everything (force_flush / shutdown), applying the edits seen so far."""
        releases: list[Release] = []
        for entry in list(self._traces.values()):
            releases.extend(self._finish(entry, reason, complete=_whole(entry), correct=True))
        self._grace.clear()
        return releases

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (for a timer thread); ``None`` if nothing held."""
        deadlines = []
        if self._grace:
            deadlines.append(self._grace[0][0])
        for entry in self._traces.values():
            if not entry.root_ended:
                deadlines.append(entry.created + self.hold_timeout)
                break
        return min(deadlines) if deadlines else None

    # --- internals ---------------------------------------------------------------------------------
    def _new_entry(self, trace_id: int, now: float) -> _Trace:
        entry = _Trace(trace_id, now)
        self._traces[trace_id] = entry
        if trace_id in self._ended_roots:
            # a late part of a trace whose local root already ended (an agent's root returned before its
            # last step): no root will end it, so it waits out the root grace, not the hold timeout
            entry.root_ended = True
            entry.late = True
            entry.grace_until = now + self.late_grace
            self._grace.append((entry.grace_until, trace_id))
            self._late_part = self.late_grace <= 0
        return entry

    def _route_edits(
        self, span: SpanView, edits: Iterable[EditEvent], entry: _Trace | None, now: float
    ) -> _Trace | None:
        routed_to: set[int] = set()
        for edit in edits:
            note = None
            if edit.targeted:
                target_trace = None
                if edit.target_span_id is not None:
                    target_trace = self._by_span.get(edit.target_span_id)
                if target_trace is None and edit.target_response_id is not None:
                    target_trace = self._by_response.get(edit.target_response_id)
                if target_trace is not None and target_trace != span.trace_id:
                    note = NOTE_ROUTED
                    self.routed_edits += 1
                    if target_trace not in routed_to:
                        routed_to.add(target_trace)
                        self._traces[target_trace].foreign.append(span)
                        self.context_spans += 1
                elif target_trace is None:
                    gone = None
                    if edit.target_span_id is not None:
                        gone = self._released_spans.get(edit.target_span_id)
                    if gone is None and edit.target_response_id is not None:
                        gone = self._released_responses.get(edit.target_response_id)
                    if gone is not None:
                        note = NOTE_LATE
                        target = (
                            format(edit.target_span_id, "016x")
                            if edit.target_span_id is not None
                            else str(edit.target_response_id)
                        )
                        self._late(edit, target, gone)
            elif (entry is None or not entry.held) and span.trace_id in self._released_traces:
                gone = self._released_traces[span.trace_id]
                if gone != "":  # the trace had held spans that already left
                    note = NOTE_LATE
                    self._late(edit, "most recent LLM span of the trace", gone)
            if note is not None:
                entry = entry or self._new_entry(span.trace_id, now)
                entry.notes[edit.key] = note
        return entry

    def _late(self, edit: EditEvent, target: str, reason: str) -> None:
        self.late_edits += 1
        self.recent_late.append(LateEdit(edit.key, edit.carrier_trace_id, target, reason))

    def _finish(self, entry: _Trace, reason: str, *, complete: bool, correct: bool) -> list[Release]:
        self._traces.pop(entry.trace_id, None)
        self.held_spans -= len(entry.held)
        self.held_ids -= entry.ids
        self.context_spans -= len(entry.context) + len(entry.foreign)
        for span in entry.held:
            self._by_span.pop(span.span_id, None)
            self._remember_lru(self._released_spans, span.span_id, reason)
        for response_id in entry.response_ids:
            if self._by_response.get(response_id) == entry.trace_id:
                del self._by_response[response_id]
            self._remember_lru(self._released_responses, response_id, reason)
        self._remember_trace(entry.trace_id, reason if entry.held else "")
        if not entry.held and not self._unnoted_edits(entry):
            return []
        return [
            Release(
                trace_id=entry.trace_id,
                spans=tuple(entry.held),
                context=tuple(entry.context),
                foreign=tuple(entry.foreign),
                complete=complete,
                reason=reason,
                correct=correct,
                edit_notes=dict(entry.notes),
            )
        ]

    def _unnoted_edits(self, entry: _Trace) -> bool:
        """Whether a trace without held spans still has edits for the corrector to report."""
        return any(
            e.key not in entry.notes for s in entry.context for e in cv.read_edits(s, self.conventions)
        )

    def _remember_trace(self, trace_id: int, reason: str) -> None:
        if self._released_traces.get(trace_id):  # keep the first non-empty reason
            return
        self._remember_lru(self._released_traces, trace_id, reason)

    def _remember_lru(self, lru: OrderedDict, key, value: str) -> None:  # type: ignore[type-arg]
        if key in lru:
            lru.move_to_end(key)
        lru[key] = value
        if len(lru) > self._memory:
            lru.popitem(last=False)

    def _expire(self, now: float) -> list[Release]:
        releases: list[Release] = []
        while self._grace and self._grace[0][0] <= now:
            _, trace_id = self._grace.popleft()
            entry = self._traces.get(trace_id)
            if entry is not None and entry.grace_until is not None and entry.grace_until <= now:
                if entry.late:  # a fragment of a trace whose root left earlier: corrected, not complete
                    releases.extend(self._finish(entry, REASON_LATE_PART, complete=False, correct=True))
                else:
                    releases.extend(self._finish(entry, REASON_ROOT_GRACE, complete=True, correct=True))
        if self._traces:
            limit = now - self.hold_timeout
            expired = []
            for entry in self._traces.values():  # creation order: stop at the first young entry
                if entry.created > limit:
                    break
                if not entry.root_ended:  # root-ended entries are waiting out their grace
                    expired.append(entry)
            for entry in expired:
                releases.extend(self._finish(entry, REASON_TIMEOUT, complete=False, correct=False))
        return releases

    def _enforce_bounds(self) -> list[Release]:
        releases: list[Release] = []
        while len(self._traces) > self.max_traces:
            entry = next(iter(self._traces.values()))
            releases.extend(self._finish(entry, REASON_MAX_TRACES, complete=_whole(entry), correct=entry.root_ended))
        while self.held_spans + self.context_spans > self.max_spans:
            entry = next((t for t in self._traces.values() if t.held or t.context or t.foreign), None)
            if entry is None:  # pragma: no cover - the counters count only entries' spans
                break
            releases.extend(self._finish(entry, REASON_MAX_SPANS, complete=_whole(entry), correct=entry.root_ended))
        while self.held_ids > self.max_ids:
            entry = next((t for t in self._traces.values() if t.held), None)
            if entry is None:  # pragma: no cover - held_ids counts only entries' held spans
                break
            releases.extend(self._finish(entry, REASON_MAX_IDS, complete=_whole(entry), correct=entry.root_ended))
        return releases


def _whole(entry: _Trace) -> bool:
    """Released as a complete trace: its root ended and it is not a late fragment."""
    return entry.root_ended and not entry.late


def _ids_weight(span: SpanView, conv: Conventions) -> int:
    """Token ids a held span keeps alive, estimated without parsing (an array's length; a repr string's
    length / 6, about what one id takes written out)."""
    attrs = span.attributes
    total = 0
    for key in conv.prompt_keys + conv.response_keys:
        value = attrs.get(key)
        if isinstance(value, (tuple, list)):
            total += len(value)
        elif isinstance(value, str):
            total += len(value) // 6
    return total
