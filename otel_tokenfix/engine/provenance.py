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

    Why: a 32k-token response with one edit is two copied runs; building ids, source indices, provenance
    and logprobs by slices instead of per-token Python keeps a correction far below a full re-encode."""

    def __init__(self, original: list[int], logprobs: list[float] | None) -> None:
        self.original = original
        self.logprobs = logprobs
        self.ids: list[int] = []
        self.segs: list[tuple[int, int, int, list[int | None] | None]] = []
        self.moved: dict[int, int] = {}

    def copy(self, a: int, b: int) -> None:
        if b > a:
            self.segs.append((len(self.ids), a, b, None))
            self.ids.extend(self.original[a:b])

    def add(self, new_ids: list[int], src: list[int | None]) -> None:
        if new_ids:
            self.segs.append((len(self.ids), 0, 0, src))
            self.ids.extend(new_ids)

    def finish(self, *, method: str, edits: int = 1, text: str | None = None) -> Correction:
        src: list[int | None] = []
        prov: list[Provenance] = []
        lp_in = self.logprobs
        lp: list[float | None] | None = None if lp_in is None else []
        prefix = True
        kept = 0
        moved = self.moved
        for o, a, b, sl in self.segs:
            if sl is None:
                src.extend(_ints(b)[a:b])
                if lp is not None:
                    lp.extend(lp_in[a:b])  # type: ignore[index]
                if prefix and a == o:
                    prov.extend([SAMPLED] * (b - a))
                else:
                    prefix = False
                    prov.extend([SHIFTED] * (b - a))
                kept += b - a
                continue
            for k, s in enumerate(sl):
                s = moved.get(o + k, s)
                src.append(s)
                if s is None:
                    prefix = False
                    prov.append(INSERTED)
                    if lp is not None:
                        lp.append(None)
                    continue
                kept += 1
                if lp is not None:
                    lp.append(lp_in[s])  # type: ignore[index]
                if prefix and s == o + k:
                    prov.append(SAMPLED)
                else:
                    prefix = False
                    prov.append(SHIFTED)
        if kept == len(self.original) and len(self.ids) == kept and self.ids == self.original:
            method = "unchanged"
        return Correction(
            token_ids=self.ids,
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
