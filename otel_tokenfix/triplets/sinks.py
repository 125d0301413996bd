"""Where triplet records go: a JSONL file, a Python callable, a list; plus a retrying front.

Why the JSONL sink writes each trace with a single ``os.write`` on an ``O_APPEND`` descriptor: readers
(``tail -f``, a trainer polling the file) must never see a partial line, even when the process dies or
several processes append to the same file. A short write (disk full) is completed in a loop; if that
fails the error is raised so the retrying front keeps the records.

One thing a single write cannot prevent: Linux may stop a write of many pages at a page boundary when the
writer is SIGKILLed, leaving a torn last line. The next writer to open the file closes such a fragment off
with a newline before its first record (else its first record would be glued to the fragment and lost to
readers, who skip malformed lines). Writers hold an exclusive ``flock`` for each write and for that check,
so a writer never mistakes another's write in progress for a fragment (no blank lines either).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .record import TripletRecord

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no advisory locks, the fragment check runs unlocked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


@runtime_checkable
class TripletSink(Protocol):
    """Receives one trace's records at a time (in call order). May raise: the caller retries."""

    def write(self, records: Sequence[TripletRecord]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps records in ``self.records`` (tests, notebooks)."""

    def __init__(self) -> None:
        self.records: list[TripletRecord] = []
        self._lock = threading.Lock()

    def write(self, records: Sequence[TripletRecord]) -> None:
        with self._lock:
            self.records.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class CallableSink:
    """Calls ``fn(record)`` per record, or ``fn(records)`` per trace with ``batch=True``.

    Per record, a failure part-way leaves the records before it delivered: when the same batch object
    is retried (as :class:`RetryingSink` does), delivery resumes after them instead of sending them twice.
    """

    def __init__(self, fn: Callable[..., object], *, batch: bool = False) -> None:
        self.fn = fn
        self.batch = batch
        self._partial: Sequence[TripletRecord] | None = None  # the batch a failure interrupted
        self._delivered = 0

    def write(self, records: Sequence[TripletRecord]) -> None:
        if self.batch:
            self.fn(list(records))
            return
        start = self._delivered if records is self._partial else 0
        self._partial, self._delivered = records, start
        for i in range(start, len(records)):
            self.fn(records[i])
            self._delivered = i + 1
        self._partial, self._delivered = None, 0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends one JSON line per record; one ``os.write`` per ``write`` call (a trace, or the service's batch
    of traces: each trace's lines stay together); optional ``fsync`` per call.

    If the file is renamed or deleted (log rotation), the next write reopens the path.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is not None and not self._same_file():
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            readable = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            except PermissionError:  # a write-only file: appended to without the fragment check
                fd, readable = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), False
            try:
                _lock(fd)
                try:
                    st = os.fstat(fd)
                    if readable and st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                        os.write(fd, b"\n")
                        log.warning("tokenfix: %s ended in a torn line (a writer was killed mid-write); closed it "
                                    "off with a newline before appending (readers skip the fragment)", self.path)
                finally:
                    _unlock(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self._ident = (st.st_dev, st.st_ino)
        return self._fd

    def _same_file(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ident

    def write(self, records: Sequence[TripletRecord]) -> None:
        if not records:
            return
        data = b"".join([r.to_json_line() for r in records])
        with self._lock:
            fd = self._open()
            _lock(fd)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                _unlock(fd)
            if self.fsync:
                os.fsync(fd)

    def flush(self) -> None:
        with self._lock:
            if self._fd is not None and self.fsync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                try:
                    os.close(self._fd)
                finally:
                    self._fd = None


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def make_sink(target: object) -> TripletSink:
    """A sink from a path (str/PathLike), a callable, a list (records are appended) or a sink."""
    if isinstance(target, TripletSink):
        return target
    if isinstance(target, (str, os.PathLike)):
        return JsonlSink(target)
    if isinstance(target, list):
        return CallableSink(target.append)
    if callable(target):
        return CallableSink(target)
    raise TypeError(f"cannot make a triplet sink from {type(target).__name__}")


@dataclass
class SinkStats:
    written: int = 0
    failures: int = 0
    pending: int = 0
    dropped: int = 0


class RetryingSink:
    """Front for any sink: records that fail to write stay pending and are retried, never silently lost.

    A failed batch is kept (up to ``max_pending`` records; beyond that the oldest batch is dropped and
    counted and logged as an error). Retries happen on the next ``write``/``flush`` once a backoff has
    elapsed (doubling from ``backoff_s`` up to ``max_backoff_s``); ``flush(force=True)`` retries at once;
    ``close`` keeps retrying while the backlog shrinks and gives up after ``close_attempts`` attempts in a
    row that wrote nothing (a flaky sink must not lose a long backlog at shutdown). Never raises.
    """

    def __init__(
        self,
        sink: TripletSink,
        *,
        max_pending: int = 100_000,
        backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        close_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.max_pending = max_pending
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.close_attempts = close_attempts
        self.clock = clock
        self.stats = SinkStats()
        self._pending: deque[list[TripletRecord]] = deque()
        self._next_try = 0.0
        self._delay = backoff_s
        self._lock = threading.RLock()

    @property
    def pending(self) -> int:
        return self.stats.pending

    def _try_pending(self, force: bool) -> bool:
        """Write pending batches in order; True when none remain."""
        if not self._pending:
            return True
        if not force and self.clock() < self._next_try:
            return False
        while self._pending:
            batch = self._pending[0]
            try:
                self.sink.write(batch)
            except Exception as exc:  # the sink's failure is a value here: count, log, keep
                self.stats.failures += 1
                self._next_try = self.clock() + self._delay
                self._delay = min(self._delay * 2, self.max_backoff_s)
                log.warning("triplet sink failed (%s); %d records pending, will retry", exc, self.stats.pending)
                return False
            self._pending.popleft()
            self.stats.pending -= len(batch)
            self.stats.written += len(batch)
            self._delay = self.backoff_s
        return True

    def write(self, records: Sequence[TripletRecord]) -> None:
        if not records:
            self.flush()
            return
        with self._lock:
            self._pending.append(list(records))
            self.stats.pending += len(records)
            while self.stats.pending > self.max_pending and len(self._pending) > 1:
                lost = self._pending.popleft()
                self.stats.pending -= len(lost)
                self.stats.dropped += len(lost)
                log.error("triplet sink backlog over %d records: dropped %d (oldest)", self.max_pending, len(lost))
            self._try_pending(force=False)

    def flush(self, force: bool = False) -> bool:
        """Retry pending records (after the backoff unless ``force``) and flush the sink."""
        with self._lock:
            ok = self._try_pending(force)
            if ok:
                try:
                    self.sink.flush()
                except Exception as exc:
                    log.warning("triplet sink flush failed: %s", exc)
                    return False
            return ok

    def close(self) -> bool:
        """Last retries, then close the sink; pending records left are logged as an error (counted)."""
        with self._lock:
            ok = False
            stalled = 0
            while stalled < max(1, self.close_attempts):
                before = self.stats.pending
                if self.flush(force=True):
                    ok = True
                    break
                stalled = stalled + 1 if self.stats.pending >= before else 0
                time.sleep(min(self._delay, 0.2))
            if not ok:
                log.error("triplet sink closed with %d records not written", self.stats.pending)
            try:
                self.sink.close()
            except Exception as exc:
                log.warning("triplet sink close failed: %s", exc)
            return ok
