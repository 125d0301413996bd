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
    kept = {s for s in source_index if s is not None}
    if len(kept) != sum(1 for s in source_index if s is not None):
        raise AssertionError("a source token was kept twice")  # engine bug, never user input
    if len(kept) == len(original_ids) and token_ids == list(original_ids) and method != "reencode":
        method = "unchanged" if edits <= 1 else method
    out_lp = None if logprobs is None else [None if s is None else logprobs[s] for s in source_index]
    return Correction(
        token_ids=token_ids,
        provenance=provenance_of(source_index),
        source_index=source_index,
        logprobs=out_lp,
        removed=len(original_ids) - len(kept),
        method=method,
        original_ids=list(original_ids),
        original_logprobs=logprobs,
        edits=edits,
        text=text,
    )
