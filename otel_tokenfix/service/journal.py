"""``serve --spool DIR``: the request journal over the crash-safe spool (``service/spool.py``).

Why: the service acknowledges a request before its traces are complete. With a journal each request
body is appended and fsynced before the acknowledgement; once every span it carried has left in a
release whose triplets are flushed to the sink, a commit marker is written. At start, uncommitted
requests are replayed through the same pipeline, and triplets already written (before the crash, or
from a client resending a request the spool replayed) are skipped by (trace_id, span_id).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import DecodeError

from ..otlp.decode import parse_request, request_views
from ..triplets.record import TripletRecord
from .pipeline import ServiceUnavailable
from .spool import Spool, SpoolError, SpoolLedger, TripletDedup, sink_keys

log = logging.getLogger("otel_tokenfix.service.spool")


class SpoolJournal:
    def __init__(self, directory: str | os.PathLike[str], sink_path: str | os.PathLike[str], *,
                 fsync: bool = True) -> None:
        self.spool = Spool(directory, fsync=fsync)
        self.ledger = SpoolLedger()
        self.sink_path = sink_path
        self.dedup = TripletDedup()

    def accepted(self, raw: bytes | None, keys: Iterable[tuple[int, int]]) -> None:
        if raw is None:
            return
        try:
            seq = self.spool.append(raw)
        except SpoolError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        done = self.ledger.add(seq, keys)
        if done:
            self._commit(done)

    def flushed(self, keys: Iterable[tuple[int, int]]) -> None:
        seqs = self.ledger.released_many(keys)
        if seqs:
            self._commit(seqs)

    def _commit(self, seqs: list[int]) -> None:
        try:
            self.spool.commit(seqs)
        except SpoolError as exc:  # a lost marker only means a (deduplicated) replay
            log.warning("spool commit failed: %s", exc)

    def replay(self, pipeline: Any) -> int:
        """Feed uncommitted requests through ``pipeline`` (not journaled again); returns their count."""
        pending = self.spool.pending()
        if not pending:
            return 0
        parsed = []
        for seq, payload in pending:
            try:
                parsed.append((seq, request_views(parse_request(payload))))
            except DecodeError:
                log.error("spool: request %d is not a valid OTLP request; skipped", seq)
                self._commit([seq])
        traces = {format(v.trace_id, "032x") for _, views in parsed for v in views}
        self.dedup.preload(sink_keys(self.sink_path, traces))
        for seq, views in parsed:
            done = self.ledger.add(seq, [(v.trace_id, v.span_id) for v in views])
            if done:
                self._commit(done)
            pipeline.add_views(views)
        return len(pending)

    def fresh(self, record: TripletRecord) -> bool:
        """Record filter: False for a triplet already written (see :class:`TripletDedup`)."""
        return self.dedup.fresh({"trace_id": record.trace_id, "span_id": record.span_id})

    def close(self) -> None:
        self.spool.close()
