"""Does the next call's prompt continue this call's prompt + corrected response? And if not, where not.

Why: trainers merge turns into one sequence only when ``next_prompt[:len(P + R)] == P + R``. After an
edit the server re-tokenized the edited text inside the next prompt, and chat templates re-render
history; users today only see "merge failed". This module says where the first mismatch is and whether
it lies inside an edited window (re-tokenization of the edit) or elsewhere (template or drift), and
whether the differences are confined to edited windows (then an edit-aware merge is still sound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Indel

#: Kinds of first mismatch.
PROMPT = "prompt"  # the next prompt does not start with this prompt (history rewritten / template)
EDIT_WINDOW = "edit_window"  # inside (or at the edge of) a window the correction wrote
RESPONSE = "response"  # in the response, outside every edited window (re-tokenization drift, template)
END = "end"  # the next prompt ends before this prompt + response does


def edit_windows(source_index: Sequence[int | None]) -> list[tuple[int, int]]:
    """Half-open response-position ranges the correction touched.

    An inserted token (``source_index`` None) is in a window; a pure deletion between two kept tokens
    (their source indices jump) is an empty window at that position; so is a deletion at the start.
    """
    windows: list[tuple[int, int]] = []
    n = len(source_index)
    i = 0
    prev_src: int | None = -1
    while i < n:
        s = source_index[i]
        if s is None:
            j = i
            while j < n and source_index[j] is None:
                j += 1
            windows.append((i, j))
            i = j
            prev_src = None
            continue
        if prev_src is not None and s != prev_src + 1:
            windows.append((i, i))
        prev_src = s
        i += 1
    return windows


def _in_windows(pos: int, windows: Sequence[tuple[int, int]]) -> bool:
    """A position is in a window if it lies inside it or touches its edge (a re-tokenized edit may merge
    with the neighbouring kept token)."""
    return any(a - 1 <= pos <= b for a, b in windows)


@dataclass(frozen=True)
class Continuation:
    """The continuation check of one call against the next call of the same trace.

    ``holds``: strict prefix condition. ``kind``/``position``/``response_position``: the first mismatch
    (position in the next prompt; response position when it lies in the response). ``confined``: every
    difference between the corrected response and its slice of the next prompt lies in an edited window,
    so the turns can still be merged with the server's tokens for those windows (mask 0).
    ``next_end``: where this response ends inside the next prompt when ``holds`` or ``confined``.
    """

    holds: bool
    kind: str | None = None
    position: int | None = None
    response_position: int | None = None
    expected: int | None = None
    found: int | None = None
    confined: bool = False
    next_end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"holds": self.holds}
        if not self.holds:
            d["first_mismatch"] = {
                "kind": self.kind,
                "position": self.position,
                "response_position": self.response_position,
                "expected": self.expected,
                "found": self.found,
            }
            d["confined_to_edits"] = self.confined
        return d


def _common_prefix(a: Sequence[int], b: Sequence[int], start: int = 0) -> int:
    """Length of the common prefix, comparing 512-id slices at C speed before the last linear step."""
    a, b = list(a), list(b)
    n = min(len(a), len(b))
    i = start
    step = 512
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_continuation(
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    next_prompt_ids: Sequence[int],
    source_index: Sequence[int | None] | None = None,
) -> Continuation:
    """Compare ``prompt + response`` with the start of ``next_prompt``; see :class:`Continuation`."""
    lp, lr = len(prompt_ids), len(response_ids)
    p = _common_prefix(prompt_ids, next_prompt_ids)
    if p < lp:
        if p >= len(next_prompt_ids):
            return Continuation(False, END, p, None, prompt_ids[p], None)
        return Continuation(False, PROMPT, p, None, prompt_ids[p], next_prompt_ids[p])
    tail = next_prompt_ids[lp:]
    r = _common_prefix(response_ids, tail)
    if r == lr:
        return Continuation(True, next_end=lp + lr)
    windows = edit_windows(source_index) if source_index is not None else []
    expected = response_ids[r]
    found = tail[r] if r < len(tail) else None
    if found is None:
        return Continuation(False, END, lp + r, r, expected, None)
    kind = EDIT_WINDOW if _in_windows(r, windows) else RESPONSE
    end = _confined_end(response_ids, tail, r, windows) if windows else None
    return Continuation(False, kind, lp + r, r, expected, found, end is not None, None if end is None else lp + end)


def _confined_end(
    response: Sequence[int], tail: Sequence[int], start: int, windows: Sequence[tuple[int, int]]
) -> int | None:
    """End of the response inside ``tail`` when every difference lies in an edited window, else None.

    The edited text is the same on both sides, so the server's slice has about the response's length;
    the diff looks at that much of the tail (plus slack) to avoid aligning into the next observation.
    """
    inserted = sum(b - a for a, b in windows)
    slack = max(16, inserted)
    a = list(response[start:])
    b = list(tail[start : start + len(a) + slack])
    end_in_b: int | None = None
    for tag, i1, i2, j1, _j2 in Indel.opcodes(a, b):
        if tag == "equal":
            if i2 == len(a):
                end_in_b = j1 + (i2 - i1)
                break
            continue
        if i1 == len(a):  # pure insertion after the whole response: the between-turn tokens
            break
        lo, hi = start + i1, start + max(i2, i1 + 1) - 1
        if not all(_in_windows(pos, windows) for pos in range(lo, hi + 1)):
            return None
    if end_in_b is None:
        return None
    return start + end_in_b
