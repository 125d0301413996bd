"""Trajectory mode: merge consecutive calls of a trace into one training sequence where they continue.

Why: multi-turn trainers (agent-lightning's trajectory aggregation, verl's agent loop) train one sequence
per episode: prompt of the first turn, then every response with the tokens between turns (tool output,
template) masked 0. Unlike the usual rule, an edited turn still merges when its only differences from
the next prompt lie inside the edited windows: there the server's own tokens (what the next turn really
saw) replace ours with mask 0, and every sampled token outside the windows keeps its mask and log-prob.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rapidfuzz.distance import Indel

from .continuation import Continuation
from .record import INSERTED, TripletRecord


def align_slice(response: Sequence[int], server_slice: Sequence[int]) -> list[int | None]:
    """For each token of ``server_slice``, the index of the equal response token it aligns to, or None."""
    out: list[int | None] = [None] * len(server_slice)
    for tag, i1, i2, j1, _j2 in Indel.opcodes(list(response), list(server_slice)):
        if tag == "equal":
            for k in range(i2 - i1):
                out[j1 + k] = i1 + k
    return out


_STATUS_ORDER = ("error", "fallback", "corrected", "unchanged")


class _Builder:
    """Accumulates one merged sequence; invariant: prompt + response == last prompt + last response."""

    def __init__(self, rec: TripletRecord) -> None:
        self.first = rec
        self.prompt = list(rec.prompt_ids)
        self.ids = list(rec.response_ids)
        self.mask = list(rec.mask)
        self.prov = list(rec.provenance)
        self.lps: list[float | None] | None = None if rec.log_probs is None else list(rec.log_probs)
        self.last = rec
        self.records = [rec]
        self.turns: list[dict[str, Any]] = [self._turn(rec, 0, len(rec.response_ids))]
        self.resynced = 0

    @staticmethod
    def _turn(rec: TripletRecord, start: int, end: int) -> dict[str, Any]:
        return {"span_id": rec.span_id, "index": rec.index, "start": start, "end": end, "reward": rec.reward}

    def _append(self, ids: Sequence[int], mask: Sequence[int], prov: Sequence[int], lps: Sequence[Any] | None) -> None:
        self.ids.extend(ids)
        self.mask.extend(mask)
        self.prov.extend(prov)
        if self.lps is not None:
            self.lps.extend(lps if lps is not None else [None] * len(ids))

    def merge(self, nxt: TripletRecord, cont: Continuation) -> None:
        prev = self.last
        lp, lr = len(prev.prompt_ids), len(prev.response_ids)
        end = cont.next_end if cont.next_end is not None else lp + lr
        if not cont.holds:  # confined: take the server's tokens for the previous response
            server = list(nxt.prompt_ids[lp:end])
            mapping = align_slice(prev.response_ids, server)
            base = len(self.ids) - lr
            old_mask, old_prov = self.mask[base:], self.prov[base:]
            old_lps = None if self.lps is None else self.lps[base:]
            del self.ids[base:], self.mask[base:], self.prov[base:]
            if self.lps is not None:
                del self.lps[base:]
            for tok, m in zip(server, mapping, strict=False):
                if m is None:
                    self._append([tok], [0], [INSERTED], [None])
                else:
                    self._append([tok], [old_mask[m]], [old_prov[m]], None if old_lps is None else [old_lps[m]])
            self.turns[-1]["end"] = len(self.ids)
            self.resynced += sum(1 for m in mapping if m is None)
        between = list(nxt.prompt_ids[end:])
        self._append(between, [0] * len(between), [INSERTED] * len(between), None)
        start = len(self.ids)
        nxt_lps = nxt.log_probs
        if self.lps is not None and nxt_lps is None:
            self.lps = None  # a turn without log-probs: the merged sequence has none (length rule)
        self._append(nxt.response_ids, nxt.mask, nxt.provenance, nxt_lps)
        self.turns.append(self._turn(nxt, start, len(self.ids)))
        self.last = nxt
        self.records.append(nxt)

    def record(self, index: int) -> TripletRecord:
        rewards = [t["reward"] for t in self.turns]
        reward = next((r for r in reversed(rewards) if r is not None), None)
        meta = dict(self.first.metadata)
        for key in ("original_token_ids", "tokens", "response_id", "reason", "method"):
            meta.pop(key, None)
        statuses = [r.metadata.get("status", "unchanged") for r in self.records]
        meta["status"] = next((s for s in _STATUS_ORDER if s in statuses), "unchanged")
        meta["edits"] = sum(int(r.metadata.get("edits", 0)) for r in self.records)
        meta["complete"] = all(r.metadata.get("complete", True) for r in self.records)
        meta.update({"calls": len(self.turns), "turns": self.turns, "resynced_tokens": self.resynced})
        meta["continuation"] = self.last.metadata.get("continuation")
        return TripletRecord(
            trace_id=self.first.trace_id,
            span_id=self.first.span_id,
            index=index,
            prompt_ids=self.prompt,
            response_ids=self.ids,
            mask=self.mask,
            provenance=self.prov,
            log_probs=self.lps,
            reward=reward,
            text=None,
            rollout_id=self.first.rollout_id,
            attempt_id=self.first.attempt_id,
            metadata=meta,
        )


def merge_trajectory(
    records: Sequence[TripletRecord], continuations: Sequence[Continuation | None], *, edit_aware: bool = True
) -> list[TripletRecord]:
    """Merge consecutive per-call records where the continuation holds (or is confined to edits).

    ``continuations[i]`` relates record i to record i+1 (None for the last). Each merged record's
    ``metadata.turns`` gives every call's response range inside the merged response.
    """
    out: list[TripletRecord] = []
    cur: _Builder | None = None
    for i, rec in enumerate(records):
        if cur is None:
            cur = _Builder(rec)
            continue
        cont = continuations[i - 1]
        if cont is not None and (cont.holds or (edit_aware and cont.confined)):
            cur.merge(rec, cont)
        else:
            out.append(cur.record(len(out)))
            cur = _Builder(rec)
    if cur is not None:
        out.append(cur.record(len(out)))
    return out
