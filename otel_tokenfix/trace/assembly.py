"""TraceAssembly: which spans of which trace are held, when a trace is complete, bounds and timeouts.

Why pure: the SDK processor, the triplet exporter and the OTLP service hold traces the same way and
differ only in their clock, in which spans they hold, and in what they do with a release. This class
does no I/O, takes no lock (callers serialise calls) and never raises on span content.

The rules:
- a span for which ``hold(span)`` is true is held until its trace's *local root* ends; other spans
  pass at once (``AddResult.held`` is false), but if ``remember(span)`` is true (by default: it
  carries edit events, or it is an LLM call without token ids) it is kept as *context* so the trace's
  corrector still sees its edits (and that call, when it resolves an untargeted edit);
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
- :meth:`drain` releases everything (flush / shutdown), with the edits seen so far;
- the *pending lane* (:attr:`TraceAssembly.pending`): an edge may append a span it classified as held
  (not a local root, no events) without its lock; every locked operation first takes the pending spans in,
  in arrival order, as :meth:`TraceAssembly.add_held` would. Bounds count them from then on, so an edge
  takes them in itself once it has appended a few (the SDK processor: 64, fewer for small bounds).
Every held span leaves in exactly one :class:`Release`.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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


_NO_NOTES: Mapping[EditKey, str] = MappingProxyType({})
_NEVER = float("inf")


@dataclass(slots=True)
class Release:
    """Spans leaving the assembly together, and what the corrector needs to know about them (read-only).

    Not ``frozen``: one is built per released trace on the SDK processor's hot path, and a frozen
    dataclass costs four times as much to build (``object.__setattr__`` per field)."""

    trace_id: int
    #: held spans to forward now (each span is in exactly one release): what was passed to :meth:`add` /
    #: :meth:`add_held` as ``item`` (by default the SpanView itself)
    spans: tuple[Any, ...]
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
    #: no span of the release carries events and its trace had no edits (an express trace, see add_held)
    plain: bool = False

    @property
    def all_spans(self) -> tuple[Any, ...]:
        """What the corrector reads: held spans then context (foreign carriers go separately)."""
        return self.spans + self.context


def edits_in_play(release: Release, conv: Conventions = cv.DEFAULT_CONVENTIONS) -> bool:
    """Whether an edit event is in play for a released trace: on one of its spans (held or context: SpanViews
    or raw SDK spans alike, anything whose ``events`` have names), on a span of another trace aiming at it
    (foreign), or noted here. Without one nothing can change: the SDK processor and the OTLP service send
    such a trace on untouched (no ids parsed, no copy, no ``unchanged`` mark). Other events change nothing."""
    if release.foreign or release.edit_notes:
        return True
    return any(span.events and cv.has_edit_events(span, conv) for span in release.all_spans)


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


_MISSING = object()


class _Memory:
    """A bounded map of recent keys (released spans, ended roots): two generations of plain dicts.

    Why not an LRU ``OrderedDict``: it is written once per released span on the hot path; a plain dict
    store is cheaper than ``move_to_end`` + store + size check. It remembers between ``size`` and
    ``2 * size`` of the most recent keys. ``cur[key] = value`` on :attr:`cur` is a single dict store, safe
    without the caller's lock (see :meth:`TraceAssembly.root_ended_unlocked`); rotating is not."""

    __slots__ = ("cur", "prev", "size")

    def __init__(self, size: int) -> None:
        self.cur: dict[Any, Any] = {}
        self.prev: dict[Any, Any] = {}
        self.size = max(1, int(size))

    def set(self, key: Any, value: Any) -> None:
        cur = self.cur
        cur[key] = value
        if len(cur) > self.size:
            self.rotate()

    def rotate(self) -> None:
        self.prev = self.cur
        self.cur = {}

    def update(self, items: dict[Any, Any]) -> None:
        """Many :meth:`set` at once, in ``size`` chunks (so it still remembers at least the last ``size``)."""
        if len(items) <= self.size:
            self.cur.update(items)
            if len(self.cur) > self.size:
                self.rotate()
            return
        keys = list(items)
        for i in range(0, len(keys), self.size):
            self.update({k: items[k] for k in keys[i:i + self.size]})

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.cur.get(key, _MISSING)
        if value is _MISSING:
            value = self.prev.get(key, default)
        return value

    def __contains__(self, key: Any) -> bool:
        return key in self.cur or key in self.prev

    def __len__(self) -> int:
        return len(self.cur) + len(self.prev)


class _Trace:
    """One trace being held (a plain slots class: created once per trace on the hot path; the containers
    most traces never use start as shared empty tuples / mapping and become lists / a dict on first use)."""

    __slots__ = ("trace_id", "created", "held", "span_ids", "response_ids", "context", "foreign", "notes",
                 "root_ended", "grace_until", "ids", "late")

    def __init__(self, trace_id: int, created: float) -> None:
        self.trace_id = trace_id
        self.created = created
        self.held: list[Any] = []
        self.span_ids: list[int] = []
        self.response_ids: tuple[str, ...] | list[str] = ()
        self.context: tuple[SpanView, ...] | list[SpanView] = ()
        self.foreign: tuple[SpanView, ...] | list[SpanView] = ()
        self.notes: Mapping[EditKey, str] = _NO_NOTES
        self.root_ended = False
        self.grace_until: float | None = None
        self.ids = 0
        #: a late part of a trace whose root had already ended (released after a sliding root grace)
        self.late = False


class TraceAssembly:
    """Per-trace holding with bounds and timeouts; see the module docstring for the rules."""

    # slots: the SDK processor's hot path reads and writes a dozen of these per span
    __slots__ = ("_by_response", "_by_span", "_ended_roots", "_express", "_express_log", "_grace", "_hold",
                 "_item_weight", "express_out", "lane_spans", "pending",
                 "_root_notes", "note_root_unlocked",
                 "_late_part", "_memory", "_next_due", "_released_responses", "_released_spans", "_released_traces",
                 "_remember", "_traces", "clock", "context_spans", "conventions", "held_ids", "held_spans",
                 "hold_timeout", "late_edits", "late_grace", "max_ids", "max_spans", "max_traces", "recent_late",
                 "root_grace", "routed_edits", "__weakref__")

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
        item_weight: Callable[[Any], int] | None = None,
    ) -> None:
        self.conventions = conventions
        self._hold = hold or (lambda span: cv.has_response_key(span, conventions))
        self._remember = remember or (
            lambda span: cv.has_edit_events(span, conventions) or cv.idless_llm_reason(span, conventions) is not None
        )
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
        #: no grace ends and no hold times out before this (``_expire`` is skipped until then)
        self._next_due = _NEVER
        self._by_span: dict[int, int] = {}
        self._by_response: dict[str, int] = {}
        self._released_spans = _Memory(memory)
        self._released_responses = _Memory(memory)
        self._released_traces = _Memory(memory)
        #: traces whose local root already ended: a later part of one is not waited for (no root will end it)
        self._ended_roots = _Memory(memory)
        #: local roots noted without the lock (:attr:`note_root_unlocked`), folded into ``_ended_roots``
        #: under the lock when something reads it (only when a span is taken into the express or full lanes:
        #: spans that leave with their root straight from the pending lane never need it)
        self._root_notes: deque[int] = deque(maxlen=memory)
        #: ``note_root_unlocked(trace_id)``: one C call (``deque.append``, atomic), see root_ended_unlocked
        self.note_root_unlocked = self._root_notes.append
        self._late_part = False
        #: the pending lane: ``(trace id, span id, item, response id or None)`` of spans an edge classified as
        #: held (LLM spans, not a local root, no events), appended *without* the caller's lock (``deque.append``
        #: is atomic); every locked operation takes them in first (:meth:`_take_pending`), weighing each then
        #: with ``item_weight`` — most spans leave with their root before anything needs their weight.
        self.pending: deque[tuple[int, int, Any, str | None]] = deque()
        self._item_weight = item_weight or _weightless
        #: spans taken from the pending lane so far, and spans :meth:`end_express` returned (counters for the
        #: edge's statistics, kept here because they change under the caller's lock anyway)
        self.lane_spans = 0
        self.express_out = 0
        #: the express lane (see add_held): trace id -> [created, ids, response ids, item, span id, item, ...]
        self._express: dict[int, list[Any]] = {}
        #: express and pending-lane releases (all complete) not yet written into the released-span memories:
        #: ``(trace id, response ids or None, span id, span id, ...)`` (ids only: the spans are not kept alive)
        self._express_log: deque[tuple[Any, ...]] = deque(maxlen=memory)
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
        pending = {p[0] for p in list(self.pending)} - self._traces.keys() - self._express.keys()
        return sum(1 for t in self._traces.values() if t.held) + len(self._express) + len(pending)

    def __len__(self) -> int:
        return self.held_spans + len(self.pending)

    def take_pending(self, now: float | None = None) -> list[Release]:
        """Take the pending lane's spans in now (an edge that appended many; a timer). Returns the releases
        caused (bounds)."""
        releases: list[Release] = []
        if self.pending:
            self._take_pending(self.clock() if now is None else now, releases)
        return releases

    def add(self, span: SpanView, now: float | None = None, *, item: Any = None) -> AddResult:
        """Take one ended span. Returns whether it is held and every release it (or time) caused.

        ``item``: what a release hands back for this span if it is held (default: ``span`` itself)."""
        now = self.clock() if now is None else now
        releases = self._expire(now) if now >= self._next_due else []
        if self.pending:
            self._take_pending(now, releases)
        if self._express or self._express_log:
            self._settle()
        entry = self._traces.get(span.trace_id)
        if span.events:
            edits = cv.read_edits(span, self.conventions)
            if edits:
                entry = self._route_edits(span, edits, entry, now)
        held = bool(self._hold(span))
        if held:
            entry = entry or self._new_entry(span.trace_id, now)
            self._put(entry, span.span_id, span if item is None else item,
                      ids_weight(span.attributes, self.conventions), cv.read_response_id(span, self.conventions))
        elif self._remember(span):
            entry = entry or self._new_entry(span.trace_id, now)
            if not entry.context:
                entry.context = []
            entry.context.append(span)  # type: ignore[union-attr]
            self.context_spans += 1
        self._after_add(entry, span.trace_id, span.is_local_root, held, now, releases)
        return AddResult(held, releases)

    def add_held(self, trace_id: int, span_id: int, item: Any, local_root: bool, weight: int,
                 response_id: str | None = None, now: float | None = None) -> list[Release]:
        """:meth:`add` for a span the edge already classified as held and carrying no events — the SDK
        processor's hot path: it builds no SpanView for it (``item``, the raw span, is what the release
        hands back). ``weight``: :func:`ids_weight` of its attributes. Returns the releases caused.

        The common case (not a root, its trace neither held otherwise nor past its root) takes the *express
        lane*: a trace id -> list entry with no index, no grace and no memory writes. Express traces count
        against every bound and the hold timeout like any other; whenever something needs more (an edit
        event arrives, a bound or timeout is hit, a flush) they are first *settled* into full entries, and
        the memories of released spans are written then, so routing and late-edit detection see them."""
        now = self.clock() if now is None else now
        releases: list[Release] = []
        if self.pending:
            self._take_pending(now, releases)
        if not local_root and self._hold_express(trace_id, span_id, item, weight, response_id, now):
            return releases
        self._add_held_full(trace_id, span_id, item, local_root, weight, response_id, now, releases)
        return releases

    def _add_held_full(self, trace_id: int, span_id: int, item: Any, local_root: bool, weight: int,
                       response_id: str | None, now: float, releases: list[Release]) -> None:
        """add_held when the express lane refused (a root, a late part, a held trace, a due timeout, a bound):
        the full path, which expires what is due and enforces the bounds after adding."""
        if now >= self._next_due:
            releases.extend(self._expire(now))
        if self._express or self._express_log:
            self._settle()
        entry = self._traces.get(trace_id) or self._new_entry(trace_id, now)
        self._put(entry, span_id, item, weight, response_id)
        self._after_add(entry, trace_id, local_root, True, now, releases)

    def _take_pending(self, now: float, releases: list[Release],
                      ending: int | None = None) -> list[tuple[int, int, Any, str | None]] | None:
        """Take the pending lane's spans in, in arrival order, as :meth:`add_held` would (adding the releases
        caused to ``releases``). Spans of trace ``ending`` (whose local root is ending now: the caller
        releases them with it) are returned instead."""
        pending = self.pending
        popleft = pending.popleft
        own: list[tuple[int, int, Any, str | None]] | None = None
        while pending:
            p = popleft()
            self.lane_spans += 1
            trace_id, span_id, item, response_id = p
            if trace_id == ending:
                if own is None:
                    own = []
                own.append(p)
                continue
            weight = self._weigh(item)
            if not self._hold_express(trace_id, span_id, item, weight, response_id, now):
                self._add_held_full(trace_id, span_id, item, False, weight, response_id, now, releases)
        return own

    def _weigh(self, item: Any) -> int:
        """A pending item's weight (the edge's reader; the assembly never raises on span content: a reader that
        fails weighs nothing)."""
        try:
            return int(self._item_weight(item))
        except Exception:  # noqa: BLE001
            return 0

    def _complete_express(self, trace_id: int, e: list[Any] | None,
                          own: list[tuple[int, int, Any, str | None]] | None) -> list[Any]:
        """An express trace (``e``, popped) and/or its pending spans (``own``) leave complete: returns the items
        to forward; logs the span and response ids for the released memories (:meth:`_fold`), not the items."""
        if e is None:
            items: list[Any] = []
            span_ids: list[int] = []
            response_ids = None
        else:
            items = e[3::2]
            span_ids = e[4::2]
            response_ids = e[2]
            self.held_spans -= len(items)
            self.held_ids -= e[1]
        for _, span_id, item, response_id in own or ():  # they leave unweighed
            items.append(item)
            span_ids.append(span_id)
            if response_id:
                if response_ids is None:
                    response_ids = []
                response_ids.append(response_id)
        self._express_log.append((trace_id, response_ids, *span_ids))
        return items

    def _hold_express(self, trace_id: int, span_id: int, item: Any, weight: int, response_id: str | None,
                      now: float) -> bool:
        """The express lane (see :meth:`add_held`, which tries it first): a span that is not a local root joins
        it when nothing else is due — no timeout or grace due, no bound reached, its trace neither held
        otherwise nor past its root. Returns False having changed nothing when any of that fails.
        An express entry is ``[created, ids, response ids or None, item, span id, item, span id, ...]``."""
        traces = self._traces
        if now >= self._next_due or self._late_part or (traces and trace_id in traces):
            return False
        spans = self.held_spans + 1
        ids = self.held_ids + weight
        if spans + self.context_spans > self.max_spans or ids > self.max_ids:
            return False
        express = self._express
        e = express.get(trace_id)
        if e is None:
            if len(express) + len(traces) >= self.max_traces:
                return False
            e = express[trace_id] = [now, weight, None, item, span_id]  # stored before reading the ended roots
            if self._root_ended(trace_id):  # a late part: add_held handles it
                del express[trace_id]
                return False
            due = now + self.hold_timeout
            if due < self._next_due:
                self._next_due = due
        else:
            e[1] += weight
            e += (item, span_id)
        if response_id:
            if e[2] is None:
                e[2] = []
            e[2].append(response_id)
        self.held_spans = spans
        self.held_ids = ids
        return True

    def end_express(self, trace_id: int, now: float | None = None, *, noted: bool = False) -> list[Any] | None:
        """:meth:`end_root`'s commonest case in the fewest steps: the local root of a trace whose held spans are
        all in the express lane or pending (nothing pending of other traces) ended and nothing else is due.
        Returns the trace's held items (all complete, to forward as they are: such a trace has no edits),
        or None having changed nothing: the caller then calls :meth:`end_root`. ``noted``: the caller
        already passed the root to :attr:`note_root_unlocked`. ``now``: read from the clock only if something
        can be due (the SDK processor's hot path passes none)."""
        next_due = self._next_due
        if next_due != _NEVER and (self.clock() if now is None else now) >= next_due:
            return None
        pending = self.pending
        if not pending:
            e = self._express.pop(trace_id, None)
            if e is None:
                return None
            if not noted:
                self.note_root_unlocked(trace_id)  # folded into the ended roots when something reads them
            items = self._complete_express(trace_id, e, None)
            self.express_out += len(items)
            return items
        traces = self._traces
        if traces and trace_id in traces:
            return None
        popleft = pending.popleft
        p = popleft()  # more may be appended meanwhile, at the other end
        if p[0] != trace_id:  # another trace's span: end_root takes the lane in, in order
            pending.appendleft(p)
            return None
        own = [p]
        while pending:
            q = popleft()
            if q[0] != trace_id:
                pending.appendleft(q)
                pending.extendleft(reversed(own))
                return None
            own.append(q)
        if not noted:
            self.note_root_unlocked(trace_id)
        self.lane_spans += len(own)
        e = self._express.pop(trace_id, None) if self._express else None
        if e is not None or len(own) > 1:
            items = self._complete_express(trace_id, e, own)
            self.express_out += len(items)
            return items
        # the commonest case of all, inlined: the trace's one LLM span, pending
        _, span_id, item, response_id = p
        self._express_log.append((trace_id, [response_id] if response_id else None, span_id))
        self.express_out += 1
        return [item]

    def end_root(self, trace_id: int, now: float | None = None) -> list[Release]:
        """A local root that is neither held nor remembered ended (the hot path: the edge need not build a
        SpanView for it). Same effect as :meth:`add` of such a span."""
        now = self.clock() if now is None else now
        releases = self._expire(now) if now >= self._next_due else []
        # the trace's pending spans ended before its root (the root may already be noted: not a late part)
        own = self._take_pending(now, releases, ending=trace_id) if self.pending else None
        ended = self._ended_roots
        ended.cur[trace_id] = None
        if len(ended.cur) > ended.size:
            ended.rotate()
        e = self._express.pop(trace_id, None)
        if e is not None or (own and trace_id not in self._traces):  # an express trace completes
            spans = self._complete_express(trace_id, e, own)
            releases.append(Release(trace_id, tuple(spans), (), (), True, REASON_COMPLETE, True, _NO_NOTES, True))
            return releases
        entry = self._traces.get(trace_id)
        if own and entry is not None:  # a trace with a full entry: its pending spans join it
            for _, span_id, item, response_id in own:
                self._put(entry, span_id, item, self._weigh(item), response_id)
        if entry is not None and (not entry.root_ended or entry.late):
            entry.root_ended = True
            releases.extend(self._finish(entry, REASON_COMPLETE, complete=True, correct=True))
        return releases

    def root_ended_unlocked(self, trace_id: int) -> bool:
        """Note that a local root with nothing else to do ended, *without* the caller's lock (the SDK
        processor's root fast path inlines the same: :attr:`note_root_unlocked`, then a look at
        :attr:`pending` and :attr:`holding`). Returns False when the caller must call :meth:`end_express` /
        :meth:`end_root` under its lock instead (something is held or pending: this trace's spans may be; a
        timeout may be due).

        Why it is safe: the note is one atomic append, made before reading whether anything is held or
        pending; a span that starts holding a trace (under the lock) is stored before the notes are read, and
        a pending span is classified only when taken in, under the lock. Whatever the interleaving, one side
        sees the other: either this call returns False (the caller releases the trace under the lock, its
        pending spans with it) or the span sees the root ended (a late part)."""
        self.note_root_unlocked(trace_id)
        return not self.pending and not self._traces and not self._express

    @property
    def holding(self) -> tuple[Mapping[int, Any], Mapping[int, Any]]:
        """The two containers of held traces (full entries, express lane): the same objects for the
        assembly's life, so a lock-free caller may keep them and test ``a or b`` (see root_ended_unlocked)."""
        return self._traces, self._express

    def released_reason(self, trace_id: int) -> str | None:
        """Why a recently released trace left (``""``: it had no held spans); ``None`` if not remembered."""
        if self._express_log:
            self._fold()
        return self._released_traces.get(trace_id)

    def tick(self, now: float | None = None) -> list[Release]:
        """Take the pending spans in; release traces whose root grace ended or whose hold timed out."""
        now = self.clock() if now is None else now
        releases: list[Release] = []
        if self.pending:
            self._take_pending(now, releases)
        releases.extend(self._expire(now))
        return releases

    def drain(self, reason: str = REASON_FLUSH) -> list[Release]:
        """Release everything (force_flush / shutdown), applying the edits seen so far."""
        releases: list[Release] = []
        if self.pending:
            self._take_pending(self.clock(), releases)
        self._settle()
        for entry in list(self._traces.values()):
            releases.extend(self._finish(entry, reason, complete=_whole(entry), correct=True))
        self._grace.clear()
        self._next_due = _NEVER
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
        for e in self._express.values():  # creation order: the first is the oldest
            deadlines.append(e[0] + self.hold_timeout)
            break
        return min(deadlines) if deadlines else None

    def _settle(self) -> None:
        """Turn express traces into full entries (indexed, in creation order among the others) and write
        pending express releases into the memories: something needs the full bookkeeping now."""
        if self._express_log:
            self._fold()
        if not self._express:
            return
        express = self._express
        moved = []
        for trace_id, e in express.items():
            created, ids, response_ids = e[0], e[1], e[2]
            span_ids = e[4::2]
            entry = _Trace(trace_id, created)
            entry.held = e[3::2]
            entry.span_ids = span_ids
            entry.ids = ids  # held_spans / held_ids already count them
            for span_id in span_ids:
                self._by_span[span_id] = trace_id
            if response_ids:
                entry.response_ids = response_ids
                for response_id in response_ids:
                    self._by_response[response_id] = trace_id
            moved.append(entry)
        merged = list(heapq.merge(self._traces.values(), moved, key=lambda t: t.created))
        # rebuilt in place (the containers are shared with lock-free readers, see ``holding``); the full
        # entries are in place before the express lane empties, so such a reader always sees a held trace
        traces = self._traces
        traces.clear()
        traces.update((t.trace_id, t) for t in merged)
        express.clear()

    def _fold(self) -> None:
        """Write express releases into the memories of released spans, responses and traces (in order).

        Why in bulk: the log waits until an edit needs the memories, so the first edit after a long edit-free
        stretch folds up to ``memory`` traces at once, on its caller's thread and under its lock (16k traces:
        ~22 ms with a call per key; a few ms with dict updates)."""
        log = self._express_log
        if not log:
            return
        entries = list(log)  # appended only under the caller's lock, as this runs
        log.clear()
        reason = REASON_COMPLETE
        self._released_spans.update(dict.fromkeys([s for e in entries for s in e[2:]], reason))
        self._released_responses.update(dict.fromkeys([r for e in entries if e[1] for r in e[1]], reason))
        traces = self._released_traces
        known = traces.cur.get, traces.prev.get  # keep the first non-empty reason
        traces.update({e[0]: reason for e in entries if not (known[0](e[0]) or known[1](e[0]))})

    # --- internals ---------------------------------------------------------------------------------
    def _root_ended(self, trace_id: int) -> bool:
        """Whether ``trace_id``'s local root ended recently (after folding the lock-free notes)."""
        notes = self._root_notes
        ended = self._ended_roots
        if notes:
            popleft = notes.popleft
            cur = ended.cur
            for _ in range(len(notes)):  # appends may continue meanwhile, at the other end
                cur[popleft()] = None
                if len(cur) > ended.size:
                    ended.rotate()
                    cur = ended.cur
        return trace_id in ended.cur or trace_id in ended.prev

    def _put(self, entry: _Trace, span_id: int, item: Any, weight: int, response_id: str | None) -> None:
        entry.held.append(item)
        entry.span_ids.append(span_id)
        self.held_spans += 1
        entry.ids += weight
        self.held_ids += weight
        self._by_span[span_id] = entry.trace_id
        if response_id:
            self._by_response[response_id] = entry.trace_id
            if not entry.response_ids:
                entry.response_ids = []
            entry.response_ids.append(response_id)  # type: ignore[union-attr]

    def _after_add(self, entry: _Trace | None, trace_id: int, local_root: bool, held: bool, now: float,
                   releases: list[Release]) -> None:
        """What a new span means for its trace: a late part slides or ends, a local root completes it."""
        if entry is not None and entry.late and not self._late_part:
            if local_root:  # another local root of the trace (a second request): it ends the part
                releases.extend(self._finish(entry, REASON_COMPLETE, complete=True, correct=True))
                entry = None
            else:  # activity keeps a late part open: the grace slides
                self._start_grace(entry, now + self.late_grace)
        if local_root:
            self._ended_roots.set(trace_id, None)
            if entry is not None and not entry.root_ended:
                entry.root_ended = True
                if held and self.root_grace > 0:
                    self._start_grace(entry, now + self.root_grace)
                else:
                    releases.extend(self._finish(entry, REASON_COMPLETE, complete=True, correct=True))
        if self._late_part:  # a late part with no grace to wait: leaves now
            self._late_part = False
            releases.extend(self._expire(now))
        releases.extend(self._enforce_bounds())

    def _start_grace(self, entry: _Trace, until: float) -> None:
        entry.grace_until = until
        self._grace.append((until, entry.trace_id))
        if until < self._next_due:
            self._next_due = until

    def _new_entry(self, trace_id: int, now: float) -> _Trace:
        entry = _Trace(trace_id, now)
        self._traces[trace_id] = entry  # stored before reading the ended roots: see root_ended_unlocked
        due = now + self.hold_timeout
        if due < self._next_due:
            self._next_due = due
        if self._root_ended(trace_id):
            # a late part of a trace whose local root already ended (an agent's root returned before its
            # last step): no root will end it, so it waits out the root grace, not the hold timeout
            entry.root_ended = True
            entry.late = True
            self._start_grace(entry, now + self.late_grace)
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
                        target = self._traces[target_trace]
                        if not target.foreign:
                            target.foreign = []
                        target.foreign.append(span)  # type: ignore[union-attr]
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
                gone = self._released_traces.get(span.trace_id)
                if gone != "":  # the trace had held spans that already left
                    note = NOTE_LATE
                    self._late(edit, "most recent LLM span of the trace", gone)
            if note is not None:
                entry = entry or self._new_entry(span.trace_id, now)
                if not entry.notes:
                    entry.notes = {}
                entry.notes[edit.key] = note  # type: ignore[index]
        return entry

    def _late(self, edit: EditEvent, target: str, reason: str) -> None:
        self.late_edits += 1
        self.recent_late.append(LateEdit(edit.key, edit.carrier_trace_id, target, reason))

    def _finish(self, entry: _Trace, reason: str, *, complete: bool, correct: bool) -> list[Release]:
        if self._express_log:  # earlier express releases first: the memories keep the first reason
            self._fold()
        trace_id = entry.trace_id
        del self._traces[trace_id]
        held = entry.held
        self.held_spans -= len(held)
        self.held_ids -= entry.ids
        if entry.context or entry.foreign:
            self.context_spans -= len(entry.context) + len(entry.foreign)
        by_span = self._by_span
        released = self._released_spans
        for span_id in entry.span_ids:
            by_span.pop(span_id, None)
            released.set(span_id, reason)
        for response_id in entry.response_ids:
            if self._by_response.get(response_id) == trace_id:
                del self._by_response[response_id]
            self._released_responses.set(response_id, reason)
        if not self._released_traces.get(trace_id):  # keep the first non-empty reason
            self._released_traces.set(trace_id, reason if held else "")
        if not held and not self._unnoted_edits(entry):
            return []
        return [Release(trace_id, tuple(held), tuple(entry.context), tuple(entry.foreign), complete, reason,
                        correct, dict(entry.notes) if entry.notes else _NO_NOTES)]

    def _unnoted_edits(self, entry: _Trace) -> bool:
        """Whether a trace without held spans still has edits for the corrector to report."""
        return any(
            e.key not in entry.notes for s in entry.context for e in cv.read_edits(s, self.conventions)
        )

    def _expire(self, now: float) -> list[Release]:
        releases: list[Release] = []
        if self._express and next(iter(self._express.values()))[0] <= now - self.hold_timeout:
            self._settle()  # an express trace timed out: full entries time out below
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
        due = self.next_deadline()
        self._next_due = _NEVER if due is None else due
        return releases

    def _enforce_bounds(self) -> list[Release]:
        releases: list[Release] = []
        if self._express and (self.held_spans + self.context_spans > self.max_spans or self.held_ids > self.max_ids
                              or len(self._express) + len(self._traces) > self.max_traces):
            self._settle()  # the oldest traces leave first, express or not
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


def _weightless(item: Any) -> int:
    return 0


def _whole(entry: _Trace) -> bool:
    """Released as a complete trace: its root ended and it is not a late fragment."""
    return entry.root_ended and not entry.late


def ids_weight(attributes: Mapping[str, Any], conv: Conventions = cv.DEFAULT_CONVENTIONS) -> int:
    """Token ids a held span keeps alive, estimated without parsing (an array's length; a repr string's
    length / 6, about what one id takes written out)."""
    total = 0
    for key in conv.id_key_set.intersection(attributes):
        value = attributes[key]
        total += len(value) if value.__class__ is tuple else value_weight(value)
    return total


def value_weight(value: Any) -> int:
    """:func:`ids_weight` of one attribute value."""
    if isinstance(value, (tuple, list)):
        return len(value)
    if isinstance(value, str):
        return len(value) // 6
    return 0
