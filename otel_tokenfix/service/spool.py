"""Crash-safe spool for ``otel-tokenfix serve --spool DIR``: accepted OTLP requests survive a SIGKILL.

Why: the service acknowledges a request before its traces are complete (a trace may span many requests
and is held until its root arrives), so a crash would lose every held span. With a spool the service
appends each request body to an append-only log and fsyncs it *before* acknowledging; once every span a
request carried has left in a release whose triplets are flushed to the sink, a commit marker is
written. At start the service replays the uncommitted requests; triplets already written (the crash came
between the sink flush and the commit marker, or the client resends a request the spool replayed) are
skipped by (trace_id, span_id), so each triplet appears once.

Three small parts, kept apart so each is testable on its own:

- :class:`Spool` — the log. Segment files ``spool-<first seq>.log`` of records
  ``magic(2) kind(1) seq(8) length(4) crc32(4) payload``; a torn tail (crash mid-write) is detected by
  length/checksum and truncated on open; fully committed segments are deleted (compaction).
- :class:`SpoolLedger` — pure bookkeeping: which request carried which spans, which requests are done.
- :func:`sink_keys` / :class:`TripletDedup` — what a JSONL triplet sink already holds.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"TS"
REQUEST = 1
COMMIT = 2
_HEADER = struct.Struct(">2sBQII")  # magic, kind, seq, length, crc32
_SEGMENT_RE = re.compile(r"^spool-(\d+)\.log$")
#: A record larger than this is treated as corruption (the service's own body limit is far below it).
MAX_RECORD = 1 << 30


class SpoolError(OSError):
    """The spool directory cannot be used (not writable, or a record cannot be made durable)."""


@dataclass
class SpoolStats:
    """What the spool saw; the service exposes these with its other counters."""

    appended: int = 0
    committed: int = 0
    recovered: int = 0  # uncommitted requests found at open (to replay)
    torn_bytes: int = 0  # bytes of a torn tail truncated at open
    corrupt_records: int = 0  # records skipped because their checksum did not match
    segments_removed: int = 0


@dataclass
class _Segment:
    number: int
    path: Path
    requests: set[int] = field(default_factory=set)


def _encode(kind: int, seq: int, payload: bytes) -> bytes:
    head = struct.pack(">BQI", kind, seq, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _HEADER.pack(MAGIC, kind, seq, len(payload), crc) + payload


def _parse_at(data: bytes, offset: int) -> tuple[int, int, bytes, int] | None:
    """The record at ``offset`` as (kind, seq, payload, end), or None if it is not a whole valid one."""
    if offset + _HEADER.size > len(data):
        return None
    magic, kind, seq, length, crc = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if magic != MAGIC or kind not in (REQUEST, COMMIT) or length > MAX_RECORD or end > len(data):
        return None
    payload = bytes(data[offset + _HEADER.size : end])
    if zlib.crc32(payload, zlib.crc32(struct.pack(">BQI", kind, seq, length))) != crc:
        return None
    return kind, seq, payload, end


def _scan(data: bytes) -> tuple[list[tuple[int, int, bytes]], int, int]:
    """Parse records from ``data``: (records, end of the last valid record, corrupt regions skipped).

    Where a record does not parse (a flipped bit, a damaged length), the scan resynchronises on the next
    position that holds a whole record with a valid checksum, so one damaged record never hides the
    acknowledged records after it. What follows the last valid record is a torn tail.
    """
    records: list[tuple[int, int, bytes]] = []
    offset = good_end = corrupt = 0
    size = len(data)
    while offset + _HEADER.size <= size:
        rec = _parse_at(data, offset)
        if rec is None:
            nxt = data.find(MAGIC, offset + 1)
            while nxt != -1 and _parse_at(data, nxt) is None:
                nxt = data.find(MAGIC, nxt + 1)
            if nxt == -1:
                break
            corrupt += 1
            offset = nxt
            continue
        kind, seq, payload, end = rec
        records.append((kind, seq, payload))
        offset = good_end = end
    return records, good_end, corrupt


class Spool:
    """Append-only, checksummed, fsynced log of accepted request bodies with commit markers.

    Thread-safe. ``append`` returns only after the record is on disk (``fsync=True``), so the caller
    may acknowledge the request. ``pending()`` lists the requests that were appended but not committed
    before the last stop, in append order: the service replays them at start.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True, segment_bytes: int = 16 << 20):
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = max(1, int(segment_bytes))
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.directory}: {exc}") from exc
        self._segments: list[_Segment] = []
        self._uncommitted: dict[int, bytes] = {}
        self._committed: set[int] = set()
        self._next_seq = 1
        self._recover()
        self._pending = sorted(self._uncommitted.items())
        self.stats.recovered = len(self._pending)
        self._open_active()

    # -- recovery -----------------------------------------------------------------------------------
    def _recover(self) -> None:
        numbers = sorted(
            int(m.group(1)) for p in self.directory.iterdir() if (m := _SEGMENT_RE.match(p.name))
        )
        max_seq = 0
        for i, number in enumerate(numbers):
            path = self._segment_path(number)
            data = path.read_bytes()
            records, good, corrupt = _scan(data)
            self.stats.corrupt_records += corrupt
            if good < len(data):
                self.stats.torn_bytes += len(data) - good
                if i == len(numbers) - 1:  # torn tail of the last segment: cut it so appends stay parseable
                    with open(path, "r+b") as fh:
                        fh.truncate(good)
                        self._sync(fh)
            segment = _Segment(number, path)
            for kind, seq, payload in records:
                max_seq = max(max_seq, seq)
                if kind == REQUEST:
                    segment.requests.add(seq)
                    if seq not in self._committed:
                        self._uncommitted[seq] = payload
                else:
                    self._committed.add(seq)
                    self._uncommitted.pop(seq, None)
            self._segments.append(segment)
        # a segment is named after the first sequence number it holds, so numbers survive compaction
        self._next_seq = max(max_seq + 1, numbers[-1] if numbers else 1)
        # commits only matter for requests still on disk
        on_disk = set().union(*(s.requests for s in self._segments)) if self._segments else set()
        self._committed &= on_disk

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"spool-{number:012d}.log"

    def _open_active(self) -> None:
        if not self._segments:
            self._segments.append(_Segment(1, self._segment_path(1)))
        active = self._segments[-1]
        self._fh = open(active.path, "ab")
        self._sync_dir()

    def _sync(self, fh) -> None:
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())

    def _sync_dir(self) -> None:
        if not self.fsync:
            return
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # -- API ----------------------------------------------------------------------------------------
    def pending(self) -> list[tuple[int, bytes]]:
        """Requests appended but not committed before this spool was opened, oldest first."""
        return list(self._pending)

    def append(self, payload: bytes) -> int:
        """Write one request durably; returns its sequence number. Raises SpoolError if it cannot."""
        with self._lock:
            seq = self._next_seq
            self._write_locked(_encode(REQUEST, seq, payload), sync=True)
            self._next_seq += 1
            self._segments[-1].requests.add(seq)
            self.stats.appended += 1
            if self._fh.tell() >= self.segment_bytes:
                self._compact_locked()
            return seq

    def commit(self, seqs: int | Iterable[int]) -> None:
        """Mark requests done (their traces' triplets are flushed). Not fsynced: a lost marker only
        means a replay, and the replay is deduplicated against the sink."""
        todo = [seqs] if isinstance(seqs, int) else list(seqs)
        with self._lock:
            new = [s for s in todo if s not in self._committed]
            if not new:
                return
            self._write_locked(b"".join(_encode(COMMIT, s, b"") for s in new), sync=False)
            self._committed.update(new)
            self.stats.committed += len(new)
            self._compact_locked()

    def _write_locked(self, data: bytes, *, sync: bool) -> None:
        """Append ``data``; on failure (disk full, file too large) cut the file back to where it was, so
        a half-written record never sits in front of later ones. Raises SpoolError."""
        start = self._fh.tell()
        try:
            self._fh.write(data)
            if sync:
                self._sync(self._fh)
            else:
                self._fh.flush()
        except (OSError, ValueError) as exc:
            path = self._segments[-1].path
            try:
                self._fh.close()
            except (OSError, ValueError):
                pass
            try:
                os.truncate(path, start)
            finally:
                self._fh = open(path, "ab")
            raise SpoolError(f"spool write failed: {exc}") from exc

    def uncommitted(self) -> int:
        """How many requests on disk still wait for their commit marker."""
        with self._lock:
            return sum(len(s.requests - self._committed) for s in self._segments)

    def compact(self) -> int:
        """Delete fully committed segments (rolling the active one if it is fully committed); returns
        the number of segments removed."""
        with self._lock:
            return self._compact_locked(force=True)

    def _compact_locked(self, force: bool = False) -> int:
        active = self._segments[-1]
        size = self._fh.tell()
        # a new segment needs a new first sequence number: never roll a segment that holds no request
        rollable = size > 0 and self._next_seq > active.number
        if rollable and (size >= self.segment_bytes or (force and active.requests <= self._committed)):
            self._fh.close()  # roll: the old segment goes once its requests (and all before) commit
            nxt = _Segment(self._next_seq, self._segment_path(self._next_seq))
            self._segments.append(nxt)
            self._fh = open(nxt.path, "ab")
        removed = 0
        while len(self._segments) > 1 and self._segments[0].requests <= self._committed:
            seg = self._segments.pop(0)
            self._committed -= seg.requests
            seg.path.unlink(missing_ok=True)
            removed += 1
        if removed or size >= self.segment_bytes:
            self._sync_dir()
        self.stats.segments_removed += removed
        return removed

    def close(self) -> None:
        """Sync, drop fully committed segments (a clean stop leaves an empty spool), close."""
        with self._lock:
            try:
                self._sync(self._fh)
                self._compact_locked(force=True)
            except (OSError, ValueError):
                pass
            self._fh.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpoolLedger:
    """Pure bookkeeping: a request is done when every span it carried has left in a flushed release.

    ``add(seq, keys)`` when a request is accepted, one key per span (the service uses
    ``(trace_id, span_id)``; a key may repeat); ``released(key)`` once a release holding that span has
    had its triplets flushed to the sink: returns the requests that just became done (commit them).
    Keys are matched to requests first in, first out, so a span sent twice (a client retrying a request
    the spool already replayed) is accounted to both requests in turn.

    Why spans and not traces: a late span of trace T can be journaled by one request handler while
    another handler releases and flushes T; a trace-level ledger would then commit the late span's
    request before the span reached the assembly, and a crash at that moment would lose it.
    """

    def __init__(self) -> None:
        self._open: dict[int, Counter[Hashable]] = {}
        self._by_key: dict[Hashable, deque[int]] = {}
        self._lock = threading.Lock()

    def add(self, seq: int, keys: Iterable[Hashable]) -> list[int]:
        """Register a request; returns ``[seq]`` at once if it carried nothing to wait for."""
        counts = Counter(keys)
        with self._lock:
            if not counts:
                return [seq]
            self._open[seq] = counts
            for key, n in counts.items():
                self._by_key.setdefault(key, deque()).extend([seq] * n)
        return []

    def released(self, key: Hashable) -> list[int]:
        with self._lock:
            return self._release_locked(key)

    def released_many(self, keys: Iterable[Hashable]) -> list[int]:
        with self._lock:
            done: list[int] = []
            for key in keys:
                done.extend(self._release_locked(key))
        return sorted(done)

    def _release_locked(self, key: Hashable) -> list[int]:
        waiting = self._by_key.get(key)
        if not waiting:
            return []
        seq = waiting.popleft()
        if not waiting:
            del self._by_key[key]
        counts = self._open.get(seq)
        if counts is None:  # pragma: no cover - every queued seq is open
            return []
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]
        if counts:
            return []
        del self._open[seq]
        return [seq]

    def outstanding(self) -> int:
        with self._lock:
            return len(self._open)


def _iter_jsonl(path: Path) -> Iterator[dict]:
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # a partial last line was never acknowledged as written
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def sink_keys(path: str | os.PathLike[str], trace_ids: Iterable[str] | None = None) -> set[tuple[str, str]]:
    """(trace_id, span_id) of every triplet in a JSONL sink, optionally only for some trace ids
    (lower-case hex, as the triplet records write them)."""
    wanted = {t.lower() for t in trace_ids} if trace_ids is not None else None
    keys: set[tuple[str, str]] = set()
    for obj in _iter_jsonl(Path(path)):
        tid, sid = obj.get("trace_id"), obj.get("span_id")
        if isinstance(tid, str) and isinstance(sid, str) and (wanted is None or tid.lower() in wanted):
            keys.add((tid.lower(), sid.lower()))
    return keys


class TripletDedup:
    """Drops triplets whose (trace_id, span_id) was already written: those the sink held when the
    service restarted (``preload``) and the most recent ``remember`` ones written since (a client may
    resend a request the spool has already replayed). Bounded: the oldest remembered keys are forgotten."""

    def __init__(self, keys: Iterable[tuple[str, str]] = (), *, remember: int = 1 << 18):
        self._preloaded: set[tuple[str, str]] = set()
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._remember = max(0, int(remember))
        self._lock = threading.Lock()
        self.skipped = 0
        self.preload(keys)

    def preload(self, keys: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            self._preloaded.update((t.lower(), s.lower()) for t, s in keys)

    def __len__(self) -> int:
        return len(self._preloaded) + len(self._recent)

    def fresh(self, record: dict) -> bool:
        """True if this triplet was not written yet (and remember it as written now)."""
        tid, sid = record.get("trace_id"), record.get("span_id")
        if not isinstance(tid, str) or not isinstance(sid, str):
            return True
        key = (tid.lower(), sid.lower())
        with self._lock:
            if key in self._preloaded or key in self._recent:
                self.skipped += 1
                return False
            if self._remember:
                self._recent[key] = None
                if len(self._recent) > self._remember:
                    self._recent.popitem(last=False)
            return True
