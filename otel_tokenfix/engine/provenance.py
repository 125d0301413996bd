"""Provenance from source indices: which output tokens are sampled, shifted or inserted.

Why one rule in one place: a kept token is ``sampled`` (exactly on-policy) only if everything before it is
the untouched original prefix; after the first edit every kept token is ``shifted`` (its logprob was
computed under a different context). Text edits, token edits and chains all build a ``source_index``
and come here.
"""

from __future__ import annotations

from collections.abc import Sequence

from .correction import INSERTED, SAMPLED, SHIFTED, Correction, Provenance, TokenFixError


def check_logprobs(token_ids: Sequence[int], logprobs: Sequence[float | None] | None) -> list[float] | None:
    """Logprobs must be one per sampled token (or absent)."""
    if logprobs is None:
        return None
    lp = list(logprobs)
    if len(lp) != len(token_ids):
        raise TokenFixError(f"logprobs has {len(lp)} values for {len(token_ids)} token ids")
    return lp  # type: ignore[return-value]


def provenance_of(source_index: Sequence[int | None]) -> list[Provenance]:
    out: list[Provenance] = []
    prefix = True
    for i, s in enumerate(source_index):
        if s is None:
            prefix = False
            out.append(INSERTED)
        elif prefix and s == i:
            out.append(SAMPLED)
        else:
            prefix = False
            out.append(SHIFTED)
    return out


def make_correction(
    original_ids: Sequence[int],
    token_ids: list[int],
    source_index: list[int | None],
    *,
    logprobs: list[float] | None,
    method: str,
    edits: int = 1,
    text: str | None = None,
) -> Correction:
    """Assemble a Correction; provenance, removed count and carried logprobs follow from source_index."""
    n_kept = len(source_index) - source_index.count(None)
    if n_kept == len(original_ids) and token_ids == list(original_ids) and method != "reencode":
        method = "unchanged"
    out_lp = None if logprobs is None else [None if s is None else logprobs[s] for s in source_index]
    return Correction(
        token_ids=token_ids,
        provenance=provenance_of(source_index),
        source_index=source_index,
        logprobs=out_lp,
        removed=len(original_ids) - n_kept,
        method=method,
        original_ids=list(original_ids),
        original_logprobs=logprobs,
        edits=edits,
        text=text,
    )


_INTS: list[int] = []


def _ints(n: int) -> list[int]:
    """A shared list ``[0, 1, ..., >= n-1]``: slicing it reuses int objects instead of allocating 32k new
    ones per correction (a measurable share of the time on long responses)."""
    global _INTS
    if len(_INTS) < n:
        _INTS = list(range(max(n, 2 * len(_INTS))))
    return _INTS


class Builder:
    """Assemble corrected ids from copied runs of the original and new pieces, in O(runs) list operations.

    Why: a 32k-token response with one edit is two copied runs; outputs are preallocated once and filled
    by slice assignment (no per-token Python, no list growth), which keeps a correction far below a full
    re-encode."""

    def __init__(self, original: list[int], logprobs: list[float] | None) -> None:
        self.original = original
        self.logprobs = logprobs
        self.n = 0  # output length so far
        self.segs: list[tuple[int, int, int, list[int] | None, list[int | None] | None]] = []
        self.moved: dict[int, int] = {}
        self._ids: list[int] | None = None

    def copy(self, a: int, b: int) -> None:
        if b > a:
            self.segs.append((self.n, a, b, None, None))
            self.n += b - a
            self._ids = None

    def add(self, new_ids: list[int], src: list[int | None]) -> None:
        if new_ids:
            self.segs.append((self.n, 0, 0, new_ids, src))
            self.n += len(new_ids)
            self._ids = None

    @property
    def ids(self) -> list[int]:
        """The corrected ids (materialised once)."""
        if self._ids is None:
            ids: list[int] = [0] * self.n
            orig = self.original
            for o, a, b, new, _ in self.segs:
                if new is None:
                    ids[o : o + b - a] = orig[a:b]
                else:
                    ids[o : o + len(new)] = new
            self._ids = ids
        return self._ids

    def finish(self, *, method: str, edits: int = 1, text: str | None = None) -> Correction:
        n = self.n
        ids = self.ids
        src: list[int | None] = [None] * n
        prov: list[Provenance] = [SHIFTED] * n
        lp_in = self.logprobs
        lp: list[float | None] | None = None if lp_in is None else [None] * n
        prefix = True
        kept = 0
        moved = self.moved
        for o, a, b, new, sl in self.segs:
            if new is None:
                m = b - a
                src[o : o + m] = _ints(b)[a:b]
                if lp is not None:
                    lp[o : o + m] = lp_in[a:b]  # type: ignore[index]
                if prefix and a == o:
                    prov[o : o + m] = [SAMPLED] * m
                else:
                    prefix = False
                kept += m
                continue
            for k, s in enumerate(sl):  # type: ignore[arg-type]
                s = moved.get(o + k, s)
                if s is None:
                    prefix = False
                    prov[o + k] = INSERTED
                    continue
                src[o + k] = s
                kept += 1
                if lp is not None:
                    lp[o + k] = lp_in[s]  # type: ignore[index]
                if prefix and s == o + k:
                    prov[o + k] = SAMPLED
                else:
                    prefix = False
        if kept == len(self.original) and n == kept and ids == self.original:
            method = "unchanged"
        return Correction(
            token_ids=ids,
            provenance=prov,
            source_index=src,
            logprobs=lp,
            removed=len(self.original) - kept,
            method=method,
            original_ids=self.original,
            original_logprobs=lp_in,
            edits=edits,
            text=text,
        )
