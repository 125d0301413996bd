"""Calling the downstream processor: the SDK's ``BatchSpanProcessor`` straight at its queue.

Why: ``BatchSpanProcessor.on_end`` is two statements, but its sampled check walks three Python properties
(``span.context.trace_flags.sampled``) and costs about as much as the enqueue itself. The wrapper has
already read the span's context tuple on its hot path, so it can do the very same check for a fraction of
that and hand the span to the queue directly — the difference between costing the application ~2x and
~1.1x a bare ``BatchSpanProcessor`` per span.

This is only done when it provably means the same: the downstream's ``on_end`` is the SDK's own function
(not a subclass override) and its compiled body is exactly :func:`_reference_on_end`'s. Any other
processor, or a future SDK whose ``on_end`` does more, is called through ``on_end`` as usual. The wrapper
reads the context as ``span._context`` only for spans carrying the SDK's own containers (its hot path),
whose ``context`` property returns exactly that; any other span goes through ``_forward``, which checks
the class.

One step further (:func:`batch_push`): the queue's ``emit`` asks the kernel for the process id on every call
(fork detection) and costs more than the append it guards. When ``emit`` too compiles to exactly
:func:`_reference_emit`, the wrapper appends to the queue itself in the case where ``emit`` would do nothing
else (not shut down, queue not full) and calls ``emit`` otherwise; fork detection is the processor's own
at-fork hook, which recomputes this in the child (the queue there is the parent's until ``emit`` resets it,
so the child always goes through ``emit``).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

try:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
except ImportError:  # pragma: no cover - the SDK is a dependency
    BatchSpanProcessor = None  # type: ignore[assignment,misc]

_logger = logging.getLogger(__name__)  # named as in the SDK's module: _reference_emit must compile the same


# What ``BatchSpanProcessor.on_end`` must compile to for :func:`batch_emit` to take its queue (no docstring:
# it would be a constant of the code object, and the SDK's function has none).
def _reference_on_end(self: Any, span: Any) -> None:
    if not (span.context and span.context.trace_flags.sampled):
        return
    self._batch_processor.emit(span)  # noqa: SLF001


# What ``BatchProcessor.emit`` (the queue behind ``BatchSpanProcessor``) must compile to for :func:`batch_push`
# to append to its queue itself (no docstring, as the SDK's).
def _reference_emit(self: Any, data: Any) -> None:
    if self._shutdown:
        _logger.info("Shutdown called, ignoring %s.", self._exporting)
        self._metrics.drop_items(1, "already_shutdown")
        return
    if self._pid != os.getpid():
        self._bsp_reset_once.do_once(self._at_fork_reinit)
    if len(self._queue) == self._max_queue_size:
        _logger.warning("Queue full, dropping %s.", self._exporting)
        self._metrics.drop_items(1)
    # This will drop a log from the right side if the queue is at _max_queue_size.
    self._queue.appendleft(data)
    if len(self._queue) >= self._max_export_batch_size and not self._worker_awaken.is_set():
        self._worker_awaken.set()


def _same_code(func: Any, reference: Callable[..., Any]) -> bool:
    code, ref = getattr(func, "__code__", None), reference.__code__
    if code is None:
        return False
    return (code.co_code == ref.co_code and code.co_names == ref.co_names and code.co_consts == ref.co_consts
            and code.co_argcount == ref.co_argcount and code.co_varnames == ref.co_varnames)


def batch_emit(processor: Any) -> Callable[[Any], None] | None:
    """The ``emit`` of ``processor``'s batch queue when calling it after a sampled check is exactly what
    ``processor.on_end`` does; otherwise None (call ``on_end``)."""
    if BatchSpanProcessor is None:
        return None
    try:
        on_end = getattr(type(processor), "on_end", None)
        if on_end is not BatchSpanProcessor.on_end or not _same_code(on_end, _reference_on_end):
            return None
        emit = processor._batch_processor.emit  # noqa: SLF001
        return emit if callable(emit) else None
    except Exception:  # noqa: BLE001 - anything unexpected: the plain on_end path
        return None


def batch_push(processor: Any) -> Callable[[Any], None] | None:
    """:func:`batch_emit`, appending to the queue directly when ``emit`` would do nothing else (see the module
    docstring); ``emit`` itself when its code is not exactly :func:`_reference_emit`, in a forked child, or for a
    queue of another kind; None when :func:`batch_emit` is."""
    emit = batch_emit(processor)
    if emit is None:
        return None
    try:
        queue_processor = processor._batch_processor  # noqa: SLF001
        method = getattr(type(queue_processor), "emit", None)
        if not _same_code(method, _reference_emit) or queue_processor._pid != os.getpid():  # noqa: SLF001
            return emit
        queue = queue_processor._queue  # noqa: SLF001
        limit = int(queue_processor._max_queue_size)  # noqa: SLF001
        batch = int(queue_processor._max_export_batch_size)  # noqa: SLF001
        awaken = queue_processor._worker_awaken  # noqa: SLF001
        if queue.__class__ is not deque or queue.maxlen != limit or not callable(getattr(awaken, "is_set", None)):
            return emit
    except Exception:  # noqa: BLE001 - anything unexpected: emit
        return emit

    def push(span: Any) -> None:
        if queue_processor._shutdown or len(queue) >= limit:  # noqa: SLF001 - emit drops it, logs and counts
            emit(span)
            return
        queue.appendleft(span)
        if len(queue) >= batch and not awaken.is_set():
            awaken.set()

    return push
