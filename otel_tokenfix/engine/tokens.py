"""Token-level edits: align edited ids to the sampled ids (LCS plus moved runs).

Why: an agent may delete, insert or reorder ids directly. A near-linear LCS keeps every untouched id;
a deleted run that reappears elsewhere (a reorder) is matched back, so its tokens keep their sampled
origin and logprobs (as ``shifted``) instead of counting as new text.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

from .correction import Correction, TokenFixError
from .diff import Region, diff_ids
from .provenance import check_logprobs, make_correction

#: Candidate positions tried per 2-gram when looking for a moved run (bounds pathological repeats).
MAX_CANDIDATES = 16


def _as_ids(ids: Sequence[int], what: str) -> list[int]:
    try:
        arr = array.array("q", ids)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TokenFixError(f"{what} must be a sequence of integers: {exc}") from exc
    if arr and min(arr) < 0:
        raise TokenFixError(f"{what} contains a negative id")
    return arr.tolist()


def match_moved(
    a: Sequence[int], b: Sequence[int], regions: list[Region], src: Any, *, cross_singles: bool = True
) -> None:
    """Fill ``src`` (indexed by positions of ``b``) for inserted runs that reappear from deleted runs.

    A match counts if it is >= 2 ids long (from any region), or if it is a whole deleted run of one id
    (from any region if ``cross_singles``, as for an explicit token reorder; else from its own region)."""
    deleted: list[int] = []
    seg_end: dict[int, int] = {}
    for a0, a1, _, _ in regions:
        for p in range(a0, a1):
            deleted.append(p)
            seg_end[p] = a1
    if not deleted:
        return
    used = bytearray(len(a))
    grams: dict[tuple[int, int], list[int]] = {}
    singles: dict[tuple[int, int], list[int]] = {}
    for r, (a0, a1, _, _) in enumerate(regions):
        if a1 - a0 == 1:
            singles.setdefault((a[a0], -1 if cross_singles else r), []).append(a0)
        for p in range(a0, a1 - 1):
            lst = grams.setdefault((a[p], a[p + 1]), [])
            if len(lst) < MAX_CANDIDATES:
                lst.append(p)
    for r, (_, _, b0, b1) in enumerate(regions):
        key = -1 if cross_singles else r
        j = b0
        while j < b1:
            best_p, best_len = -1, 0
            if j + 1 < b1:
                for p in grams.get((b[j], b[j + 1]), ()):
                    if used[p] or used[p + 1]:
                        continue
                    n = _run(a, b, p, j, min(seg_end[p] - p, b1 - j), used)
                    if n > best_len:
                        best_p, best_len = p, n
            if best_len < 2:
                best_p, best_len = -1, 0
                for p in singles.get((b[j], key), ()):
                    if not used[p] and (j + 1 == b1 or b[j + 1] != b[j]):
                        best_p, best_len = p, 1
                        break
            if best_len:
                used[best_p : best_p + best_len] = b"\x01" * best_len
                for k in range(best_len):
                    src[j + k] = best_p + k
                j += best_len
            else:
                j += 1


def _run(a: Sequence[int], b: Sequence[int], p: int, j: int, limit: int, used: bytearray) -> int:
    """Length of the common run a[p:], b[j:] (at most ``limit``, over unused ids), by galloping slice compares."""
    n, step = 0, 8
    while n < limit:
        m = min(step, limit - n)
        if a[p + n : p + n + m] == b[j + n : j + n + m] and not any(used[p + n : p + n + m]):
            n += m
            step *= 2
        elif m == 1:
            break
        else:
            step = max(1, m // 2)
    return n


def align_ids(a: Sequence[int], b: Sequence[int], *, moved: bool = True) -> list[int | None]:
    """For each id of ``b``, the index of the id of ``a`` it keeps (or None)."""
    regions = diff_ids(a, b)
    src: list[int | None] = [None] * len(b)
    pa = pb = 0
    for _a0, a1, b0, b1 in regions:
        src[pb:b0] = range(pa, pa + b0 - pb)
        pa, pb = a1, b1
    src[pb:] = range(pa, pa + len(b) - pb)
    if moved and regions:
        match_moved(a, b, regions, src)
    return src


def correct_tokens(
    token_ids: Sequence[int], edited_token_ids: Sequence[int], *, logprobs: Sequence[float] | None = None
) -> Correction:
    """Provenance for a token-level edit of the sampled ids (no tokenizer needed)."""
    a = _as_ids(token_ids, "token_ids")
    b = _as_ids(edited_token_ids, "edited_token_ids")
    lp = check_logprobs(a, logprobs)
    src = align_ids(a, b)
    return make_correction(a, b, src, logprobs=lp, method="tokens")
