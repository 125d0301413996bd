"""Text edits: correct sampled ids so they decode exactly to the edited text, re-encoding only small windows.

How (all in bytes, no full decode/encode):
1. The visible bytes ``D`` of the sampled ids (content view: special tokens hidden but kept in place) come
   from the per-tokenizer table; the target is the edited text's UTF-8.
2. A coarse-to-fine diff gives changed regions. Each region is widened to token boundaries that are
   character boundaries, plus one anchor token each side (never an added/special token, never across a
   hidden token). Overlapping or touching windows merge.
3. Each window's new text is encoded with the table's exact encoder and spliced in; its bytes must equal
   the target bytes (else widen, finally re-encode everything with LCS provenance).
4. Canonical where it can be: if the old window context was the canonical encoding, the new one must be
   too (re-encoding a margin around it must reproduce it), else the window widens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .correction import Correction, TokenFixError, View
from .diff import diff_utf8
from .doc import build_doc, reference_decode
from .provenance import Builder, check_logprobs, make_correction
from .splice import Retry, encode_exact, splice
from .table import TokenTable, get_table
from .tokens import align_ids, match_moved

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

#: Anchor tokens per side on successive attempts; after the last, the full re-encode fallback.
ANCHOR_STEPS = (1, 3, 8, 24)


def _reencode(table: TokenTable, tokenizer: Any, ids: list[int], arr: np.ndarray, text: str, view: View) -> list[int]:
    """Fallback: encode the whole text; hidden tokens keep their place at the start/end (hidden tokens
    from the middle go after the text). In the raw view control tokens are re-encoded as text: exact, but
    only reached when no splice could be proven (reported as ``method="reencode"``)."""
    if view == "content":
        hid = table.hidden[arr]
        vis = np.flatnonzero(~hid)
    else:
        vis = np.arange(arr.size)
    if vis.size:
        lead, trail = ids[: int(vis[0])], ids[int(vis[-1]) + 1 :]
        span = range(int(vis[0]), int(vis[-1]) + 1)
        middle_hidden = [ids[i] for i in span if view == "content" and table.hidden[ids[i]]]
    else:
        n_bos = 0
        while n_bos < len(ids) and table.bos is not None and ids[n_bos] == table.bos:
            n_bos += 1
        lead, trail, middle_hidden = ids[:n_bos], ids[n_bos:], []
    data = (b" " if table.strip_leading_space and text else b"") + text.encode("utf-8")
    try:
        new = encode_exact(table, data)
    except Retry:
        new = _bytewise(table, data)
    return lead + new + middle_hidden + trail


def _bytewise(table: TokenTable, data: bytes) -> list[int]:
    """Last resort: encode char by char, byte-fallback tokens for chars that cannot be written otherwise."""
    text = data.decode("utf-8")
    out: list[int] = []
    for ch in text:
        try:
            ids = table.encode(ch)
        except TokenFixError:
            ids = []
        if ids and table.join(ids) == ch.encode("utf-8"):
            out.extend(ids)
            continue
        raw = ch.encode("utf-8")
        if not all(b in table.byte_ids for b in raw):
            why = "its normalizer rewrites text" if table.lossy_normalizer else "no byte-fallback token"
            raise TokenFixError(f"this tokenizer cannot write {ch!r} exactly ({why})")
        out.extend(table.byte_ids[b] for b in raw)
    return out


def correct_text(
    tokenizer: PreTrainedTokenizerBase,
    token_ids: Sequence[int],
    edited_text: str,
    *,
    logprobs: Sequence[float] | None = None,
    view: View = "content",
    canonical: bool = True,
) -> Correction:
    """Correct sampled ``token_ids`` so they decode exactly to ``edited_text``, keeping every untouched token.

    ``view="content"``: the text as an OpenAI-compatible API shows it (special tokens hidden, kept in
    place); ``view="raw"``: the full decode. Raises ``TokenFixError`` on bad input only."""
    if view not in ("content", "raw"):
        raise TokenFixError(f"unknown view {view!r}: use 'content' or 'raw'")
    if not isinstance(edited_text, str):
        raise TokenFixError(f"edited_text must be a str, not {type(edited_text).__name__}")
    table = get_table(tokenizer)
    arr, info = table.lookup(token_ids)
    ids = list(token_ids)
    if ids and type(ids[0]) is not int:  # numpy ints and the like: hand back plain ints
        ids = arr.tolist()
    lp = check_logprobs(ids, logprobs)
    try:
        tb = edited_text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenFixError("edited_text contains lone surrogates and cannot be tokenized") from exc
    doc = build_doc(table, tokenizer, ids, arr, info, view)
    if doc is not None:
        regions = diff_utf8(doc.disp, tb)
        if not regions:
            return make_correction(ids, ids, list(range(len(ids))), logprobs=lp, method="unchanged", text=edited_text)
        for step, anchors in enumerate(ANCHOR_STEPS):
            out = Builder(ids, lp)
            try:
                changed = splice(table, doc, tb, regions, anchors, canonical, out)
            except Retry:
                continue
            if not doc.clean and reference_decode(tokenizer, out.ids, view) != edited_text:
                continue
            if changed:
                match_moved(ids, out.ids, changed, out.moved, cross_singles=False)
            return out.finish(method="splice" if step == 0 else "widened", text=edited_text)
    out = _reencode(table, tokenizer, ids, arr, edited_text, view)
    if reference_decode(tokenizer, out, view) != edited_text:
        why = "its normalizer rewrites text" if table.lossy_normalizer else "lossy tokenizer?"
        raise TokenFixError(f"the tokenizer cannot reproduce the edited text exactly ({why})")
    return make_correction(ids, out, align_ids(ids, out), logprobs=lp, method="reencode", text=edited_text)
