"""Chains of edits: each further edit is aligned to the previous result, then composed back.

Why: provenance must always point into the *originally sampled* ids, however many edits an agent makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .correction import Correction, View
from .provenance import make_correction
from .tokens import match_moved

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


def compose(first: Correction, second: Correction) -> Correction:
    """``second`` was computed on ``first.token_ids``; express it relative to ``first``'s original ids."""
    src = [None if s is None else first.source_index[s] for s in second.source_index]
    original = first.original_ids
    _recover(original, second.token_ids, src)
    methods = [m for m in (first.method, second.method) if m != "unchanged"]
    method = "reencode" if "reencode" in methods else (methods[-1] if methods else "unchanged")
    return make_correction(
        original,
        list(second.token_ids),
        src,
        logprobs=first.original_logprobs,
        method=method,
        edits=first.edits + second.edits,
        text=second.text,
    )


def _recover(original: list[int], ids: list[int], src: list[int | None]) -> None:
    """Inserted runs that re-create sampled tokens an earlier edit removed (an undo, a re-typed word) get
    their origin back: pair each inserted run with the gap of the original between its kept neighbours."""
    if None not in src:
        return
    regions: list[tuple[int, int, int, int]] = []
    n = len(src)
    last = -1
    i = 0
    while i < n:
        s = src[i]
        if s is not None:
            last = s
            i += 1
            continue
        j = i
        while j < n and src[j] is None:
            j += 1
        nxt = src[j] if j < n else len(original)
        if nxt is not None and nxt > last + 1:
            regions.append((last + 1, nxt, i, j))
        i = j
    if regions:
        kept = {s for s in src if s is not None}
        regions = [r for r in regions if not any(p in kept for p in range(r[0], r[1]))]
        match_moved(original, ids, regions, src, cross_singles=False)


def chain_text(first: Correction, tokenizer: PreTrainedTokenizerBase, edited_text: str, *, view: View) -> Correction:
    from .text import correct_text

    second = correct_text(tokenizer, first.token_ids, edited_text, view=view)
    return compose(first, second)


def chain_tokens(first: Correction, edited_token_ids: Sequence[int]) -> Correction:
    from .tokens import correct_tokens

    return compose(first, correct_tokens(first.token_ids, edited_token_ids))
