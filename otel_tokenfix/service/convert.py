"""``otel-tokenfix convert``: a Collector ``file`` exporter output (OTLP/JSON lines, optionally gzip) ->
triplets JSONL, through the very pipeline ``serve`` runs.

Why a data clock: the file is read far faster than it was written, so grace periods and hold timeouts
are measured in the spans' own time (the latest end time seen so far), not in wall-clock time. A trace
leaves memory as soon as its root has ended and the grace passed in *data* time, so memory stays bounded
by the traces open at one point of the recording, not by the file size.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ..otlp.decode import request_views
from ..otlp.jsonfmt import OTLPJsonError, request_from_json
from .pipeline import Pipeline, PipelineOptions

log = logging.getLogger("otel_tokenfix.convert")


@dataclass
class ConvertResult:
    lines: int = 0
    bad_lines: int = 0
    spans: int = 0
    traces: int = 0
    triplets: int = 0
    corrected: int = 0
    errors: int = 0
    incomplete_traces: int = 0
    #: most spans held at once: what bounds memory (open traces), independent of the file size
    max_held_spans: int = 0


class _DataClock:
    """Seconds of span time: the latest end time seen (monotone; 0 until a span arrives)."""

    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, end_time_ns: int) -> None:
        t = end_time_ns / 1e9
        if t > self.now:
            self.now = t

    def __call__(self) -> float:
        return self.now


def open_input(path: str | os.PathLike[str]) -> tuple[IO[bytes], IO[bytes]]:
    """(line stream, raw file for progress). Gzip is detected by its magic bytes, not the name."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw
    return raw, raw


def iter_lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        line = line.strip()
        if line:
            yield line


def convert_file(
    src: str | os.PathLike[str],
    sink: Any,
    *,
    tokenizers: Any,
    options: PipelineOptions | None = None,
    progress: Callable[[int, ConvertResult], None] | None = None,
) -> ConvertResult:
    """Stream ``src`` through a :class:`Pipeline` writing to ``sink``; ``progress(bytes_read, result)``."""
    clock = _DataClock()
    pipeline = Pipeline(tokenizers=tokenizers, sink=sink, options=options, clock=clock)
    result = ConvertResult()
    stream, raw = open_input(src)
    try:
        for line in iter_lines(stream):
            result.lines += 1
            try:
                request = request_from_json(line)
            except OTLPJsonError as exc:
                result.bad_lines += 1
                log.warning("line %d skipped: %s", result.lines, exc)
                continue
            views = request_views(request)
            for v in views:
                clock.advance(v.end_time)
            result.spans += len(views)
            pipeline.add_views(views)
            result.max_held_spans = max(result.max_held_spans, pipeline.assembly.held_spans)
            if progress is not None:
                progress(raw.tell(), _fill(result, pipeline))
    finally:
        pipeline.close()
        stream.close()
        raw.close()
    return _fill(result, pipeline)


def _fill(result: ConvertResult, pipeline: Pipeline) -> ConvertResult:
    st = pipeline.stats
    result.traces = st.traces
    result.triplets = st.triplets
    result.corrected = st.corrected + st.fallback
    result.errors = st.errors
    result.incomplete_traces = st.incomplete_traces
    return result
