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

from .correction import INSERTED, SAMPLED, SHIFTED, Correction, Provenance, TokenFixError, View
from .diff import _bytes_affixes, diff_utf8
from .doc import Doc, Shown, build_doc, reference_decode, visible_bytes
from .provenance import Builder, _ints, check_logprobs, make_correction
from .splice import CANON_MARGIN, Retry, encode_exact, encode_in_context, splice
from .table import TokenTable, get_table
from .tokens import align_ids, match_moved

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

#: Anchor tokens per side on successive attempts; after the last, the full re-encode fallback.
ANCHOR_STEPS = (1, 3, 8, 24)
#: Allowed cuts of untouched context kept on each side of the changed bytes by the local fast path: more
#: than the widest anchors plus the canonical margin, so no window or canonical check reaches the slice edge.
LOCAL_MARGIN = ANCHOR_STEPS[-1] + CANON_MARGIN + 8
#: The same for the first anchor step alone: the local path first tries that step on a narrower slice and
#: cuts the LOCAL_MARGIN slice (all steps) only if it needs wider anchors.
LOCAL_MARGIN_FIRST = ANCHOR_STEPS[0] + CANON_MARGIN + 8
#: From this many ids the local path is tried.
LOCAL_MIN_IDS = 0
#: Above this share of the visible tokens in the slice, the whole-response path is as fast.
LOCAL_MAX_SHARE = 0.5


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
    shown = None
    if table.kind == "bytelevel" and len(ids) >= LOCAL_MIN_IDS:
        shown = visible_bytes(table, info, view)
        fast = _local(table, tokenizer, ids, arr, lp, edited_text, tb, view, canonical, shown)
        if fast is not None:
            return fast
    doc = build_doc(table, tokenizer, ids, arr, info, view, shown)
    if doc is not None:
        regions = diff_utf8(doc.disp, tb)
        if not regions:
            return make_correction(ids, ids, list(range(len(ids))), logprobs=lp, method="unchanged", text=edited_text)
        done = _splice_steps(table, tokenizer, doc, tb, regions, lp, edited_text, view, canonical)
        if done is not None:
            return done
    out = _reencode(table, tokenizer, ids, arr, edited_text, view)
    if reference_decode(tokenizer, out, view) != edited_text:
        why = "its normalizer rewrites text" if table.lossy_normalizer else "lossy tokenizer?"
        raise TokenFixError(f"the tokenizer cannot reproduce the edited text exactly ({why})")
    return make_correction(ids, out, align_ids(ids, out), logprobs=lp, method="reencode", text=edited_text)


def _splice_steps(
    table: TokenTable,
    tokenizer: Any,
    doc: Doc,
    tb: bytes,
    regions: list,
    lp: list[float] | None,
    edited_text: str,
    view: View,
    canonical: bool,
    steps: tuple[int, ...] = ANCHOR_STEPS,
) -> Correction | None:
    """Splice with anchors widening step by step (``steps``: a prefix of ANCHOR_STEPS); ``None`` if no
    step could be proven (re-encode)."""
    ids = doc.ids
    for step, anchors in enumerate(steps):
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
    return None


def _outward(d: bytes, off: np.ndarray, k: int, step: int, stop: int, margin: int) -> int:
    """Move token boundary ``k`` by ``step`` across ``margin`` allowed cuts (boundaries on a character
    start) or until ``stop``; the boundary reached is itself an allowed cut (or ``stop``). Offsets are read
    in small chunks as Python ints (numpy scalar access per boundary costs more than the whole walk)."""
    n_bytes = len(d)
    if step < 0:
        far = max(k - margin, stop)
        if far == k or d[int(off[far]) : int(off[k - 1]) + 1].isascii():
            return far  # every boundary on the way starts a character: each one is an allowed cut
    else:
        far = min(k + margin, stop)
        if far == k or d[int(off[k + 1]) : int(off[far]) + 1].isascii():
            return far
    count = 0
    chunk_len = 4 * margin
    while k != stop and count < margin:
        if step < 0:
            chunk = off[max(stop, k - chunk_len) : k].tolist()[::-1]  # boundaries k-1, k-2, ...
        else:
            chunk = off[k + 1 : min(stop, k + chunk_len) + 1].tolist()  # boundaries k+1, k+2, ...
        for x in chunk:
            k += step
            if k == stop or x >= n_bytes or (d[x] & 0xC0) != 0x80:
                count += 1
                if count == margin:
                    break
    return k


def _local(
    table: TokenTable,
    tokenizer: Any,
    ids: list[int],
    arr: np.ndarray,
    lp: list[float] | None,
    edited_text: str,
    tb: bytes,
    view: View,
    canonical: bool,
    shown: Shown,
) -> Correction | None:
    """Fast path for byte-level responses: correct only a slice of ids around the changed bytes.

    Why it gives the same result as the whole-response path: the slice keeps LOCAL_MARGIN allowed cuts of
    untouched context on each side of the bytes that differ (more than the widest anchors plus the
    canonical margin), so the diff regions, windows, canonical checks and moved-run matching are exactly
    those of the whole response; the bytes outside the slice equal the edited text's bytes and start/end
    on character boundaries, so they are valid UTF-8 and decode the same on their own. The first anchor
    step is tried on a slice with LOCAL_MARGIN_FIRST cuts (what that step can reach), which gives that
    step's result of the whole response; only if it fails are all steps run on the LOCAL_MARGIN slice.
    Before any slice, ``_one_window`` tries the common case of one window straight on the whole response.
    Only the display bytes and a common prefix/suffix are computed over all ids; output lists are built
    by slicing. ``None``: not applicable (or not proven here), the caller takes the whole-response path."""
    vis, sel, off, _, d = shown
    if d == tb:
        return _stitch(ids, lp, 0, 0, [], [], [], None, 0, "unchanged", edited_text)
    nv = int(off.size) - 1
    gapless = type(sel) is slice
    p, s = _bytes_affixes(d, tb)
    if gapless and not table.has_empty:
        quick = _one_window(table, ids, lp, tb, d, off, sel.start, p, s, edited_text, canonical)  # type: ignore[union-attr]
        if quick is not None:
            return quick
    k_lo0 = max(min(int(np.searchsorted(off, p, "right")) - 1, nv), 0)
    k_hi0 = max(min(int(np.searchsorted(off, len(d) - s, "left")), nv), k_lo0)
    for margin, steps in ((LOCAL_MARGIN_FIRST, ANCHOR_STEPS[:1]), (LOCAL_MARGIN, ANCHOR_STEPS)):
        k_lo = _outward(d, off, k_lo0, -1, 0, margin)
        k_hi = _outward(d, off, k_hi0, 1, nv, margin)
        if k_hi - k_lo > LOCAL_MAX_SHARE * nv:
            return None  # most of the response: the whole-response path costs the same
        if gapless:
            first = sel.start  # type: ignore[union-attr]
            i0 = first + k_lo if k_lo > 0 else 0
            i1 = first + k_hi if k_hi < nv else len(ids)
            sub_vis = np.arange(first + k_lo - i0, first + k_hi - i0)
        else:
            assert vis is not None
            i0 = int(vis[k_lo]) if k_lo > 0 else 0
            i1 = int(vis[k_hi - 1]) + 1 if k_hi < nv else len(ids)
            sub_vis = vis[k_lo:k_hi] - i0
        b0, b1 = int(off[k_lo]), int(off[k_hi])
        sub_text_b = tb[b0 : len(tb) - (len(d) - b1)]
        doc = _slice_doc(table, ids[i0:i1], arr, sub_vis, i0, off[k_lo : k_hi + 1], d[b0:b1], gapless)
        if doc is None:
            return None
        regions = diff_utf8(doc.disp, sub_text_b, (p - b0, s - (len(d) - b1)))
        sub_text = sub_text_b.decode("utf-8")
        sub_lp = None if lp is None else lp[i0:i1]
        c = _splice_steps(table, tokenizer, doc, sub_text_b, regions, sub_lp, sub_text, view, canonical, steps)
        if c is not None:
            return _stitch(
                ids, lp, i0, i1, c.token_ids, c.source_index, c.provenance, c.logprobs, c.removed, c.method, edited_text
            )
    return None


#: The one-window path declines when the changed bytes span more tokens than this (the general path
#: decides how the changes split into windows).
ONE_WINDOW_MAX_TOKENS = 16


def _one_window(
    table: TokenTable,
    ids: list[int],
    lp: list[float] | None,
    tb: bytes,
    d: bytes,
    off: np.ndarray,
    first: int,
    p: int,
    s: int,
    text: str,
    canonical: bool,
) -> Correction | None:
    """The first anchor step of the splice when all changes fall in one window, straight on the whole
    response (no slice Doc, no diff, no Builder): the common one-edit case, at a fixed cost.

    Why it gives the same result as the general path: the visible tokens are consecutive in ``ids``
    (``first`` is the position of the first; the caller checks), no token has empty bytes, and this path
    declines unless the display is valid UTF-8 around the change and no added token lies within the window
    and its canonical margins, so every anchor and margin token is accepted. The changed bytes, trimmed to
    character boundaries like ``diff_utf8`` does, start where the first diff region starts and end where
    the last one ends; if at most one allowed cut lies strictly between the cut before the start and the
    cut after the end, every region's window (one anchor each side) overlaps the next, so the general
    path merges them into exactly the window computed here; with more cuts between, the regions are taken
    from the diff of the window's bytes and each region's window must reach the next (else: decline).
    The splice, moved-run matching, provenance, log-probs and method then follow ``splice`` and
    ``Builder.finish`` on absolute positions. ``None`` when not applicable or when the window must widen
    (``Retry``): the caller runs the general path."""
    nd, nt, nv = len(d), len(tb), int(off.size) - 1
    while p > 0 and ((p < nd and (d[p] & 0xC0) == 0x80) or (p < nt and (tb[p] & 0xC0) == 0x80)):
        p -= 1
    while s > 0 and ((d[nd - s] & 0xC0) == 0x80 or (tb[nt - s] & 0xC0) == 0x80):
        s -= 1
    e = nd - s
    ka = int(off.searchsorted(p, "right")) - 1
    kz = int(off.searchsorted(e, "left"))
    if ka < 0 or kz > nv or kz - ka > ONE_WINDOW_MAX_TOKENS:
        return None
    lo = max(ka - ONE_WINDOW_MAX_TOKENS, 0)
    hi = min(kz + ONE_WINDOW_MAX_TOKENS, nv)
    offs = off[lo : hi + 1].tolist()  # boundaries lo..hi as Python ints

    def allowed(k: int) -> bool:
        return k == 0 or k == nv or (d[offs[k - lo]] & 0xC0) != 0x80

    def cut(k: int, step: int) -> int:
        """The nearest allowed cut from boundary ``k`` on (``k`` itself included) in direction ``step``;
        -1 if none within the boundaries read."""
        while lo <= k <= hi:
            if allowed(k):
                return k
            k += step
        return -1

    def anchored(a: int, z: int) -> tuple[int, int]:
        """One anchor each side: the next allowed cut outward (-1 if not within the boundaries read)."""
        return (cut(a - 1, -1) if a > 0 else a), (cut(z + 1, 1) if z < nv else z)

    a, z = cut(ka, -1), cut(kz, 1)
    if a < 0 or z < 0:
        return None
    k0, k1 = anchored(a, z)
    if k0 < 0 or k1 < 0 or k1 <= k0:
        return None
    if sum(1 for k in range(a + 1, z) if allowed(k)) > 1:
        # Several allowed cuts inside the change: the diff regions might get windows of their own. Take
        # them (diff of the window bytes only) and check that each region's window reaches the next.
        b0, b1 = offs[k0 - lo], offs[k1 - lo]
        try:
            regions = diff_utf8(d[b0:b1], tb[b0 : b1 + nt - nd], (p - b0, s - (nd - b1)))
        except UnicodeDecodeError:
            return None
        prev_z = -1
        for d0, d1, _, _ in regions:
            ra = cut(int(off.searchsorted(b0 + d0, "right")) - 1, -1)
            rz = cut(int(off.searchsorted(b0 + d1, "left")), 1)
            if ra < 0 or rz < 0:
                return None
            ra, rz = anchored(ra, rz)
            if ra < 0 or rz < 0 or (prev_z >= 0 and ra > prev_z):
                return None  # two windows: the general path
            prev_z = max(prev_z, rz)
    m0, m1 = max(k0 - CANON_MARGIN, 0), min(k1 + CANON_MARGIN, nv)
    p0, p1 = first + k0, first + k1
    around = ids[first + m0 : first + m1]
    if table.added_ids and not table.added_ids.isdisjoint(around):
        return None
    b0, b1 = offs[k0 - lo], offs[k1 - lo]
    try:
        d[b0:b1].decode("utf-8")  # with the common prefix/suffix (tb's bytes), the display is valid UTF-8
    except UnicodeDecodeError:
        return None
    data = tb[b0 : b1 + nt - nd]
    old = ids[p0:p1]
    try:
        if canonical:
            new = encode_in_context(table, around[: k0 - m0], around[k1 - m0 :], data, old)
        else:
            new = encode_exact(table, data)
    except Retry:
        return None
    return _assemble(ids, lp, p0, p1, old, new, text)


def _assemble(
    ids: list[int], lp: list[float] | None, p0: int, p1: int, old: list[int], new: list[int], text: str
) -> Correction:
    """``ids`` with ``ids[p0:p1]`` (``old``) replaced by ``new``: the ids, source indices (common ends of
    old and new kept, moved runs matched back), provenance and log-probs, as ``splice`` and
    ``Builder.finish`` give them."""
    n, m, lo = len(ids), len(new), len(old)
    pp = 0
    while pp < lo and pp < m and old[pp] == new[pp]:
        pp += 1
    ss = 0
    while ss < lo - pp and ss < m - pp and old[-1 - ss] == new[-1 - ss]:
        ss += 1
    out_ids = ids.copy()
    out_ids[p0:p1] = new
    src: list[int | None] = _ints(n)[:n]
    mid: list[int | None] = list(range(p0, p0 + pp))
    mid.extend([None] * (m - pp - ss))
    mid.extend(range(p1 - ss, p1))
    src[p0:p1] = mid
    if m - pp - ss and lo - pp - ss and not set(new[pp : m - ss]).isdisjoint(old[pp : lo - ss]):
        # (a moved run needs an inserted id equal to a removed one: without one, nothing to match)
        match_moved(ids, out_ids, [(p0 + pp, p1 - ss, p0 + pp, p0 + m - ss)], src, cross_singles=False)
        mid = src[p0 : p0 + m]
    prov: list[Provenance] = [SAMPLED] * p0
    prefix = True
    kept = 0
    for k, x in enumerate(mid):
        if x is None:
            prefix = False
            prov.append(INSERTED)
            continue
        kept += 1
        if prefix and x == p0 + k:
            prov.append(SAMPLED)
        else:
            prefix = False
            prov.append(SHIFTED)
    prov += [SAMPLED if prefix and p1 == p0 + m else SHIFTED] * (n - p1)
    kept += p0 + n - p1
    out_lp: list[float | None] | None = None
    if lp is not None:
        out_lp = lp.copy()  # type: ignore[assignment]
        out_lp[p0:p1] = [None if x is None else lp[x] for x in mid]  # type: ignore[index]
    method = "unchanged" if kept == n and m == lo and out_ids == ids else "splice"
    return Correction(
        token_ids=out_ids,
        provenance=prov,
        source_index=src,
        logprobs=out_lp,
        removed=n - kept,
        method=method,
        original_ids=ids,
        original_logprobs=lp,
        edits=1,
        text=text,
    )


def _slice_doc(
    table: TokenTable,
    sub_ids: list[int],
    arr: np.ndarray,
    vis: np.ndarray,
    i0: int,
    off: np.ndarray,
    disp: bytes,
    gapless: bool,
) -> Doc | None:
    """The Doc that ``build_doc`` would give for ``sub_ids`` (clean byte-level display only; ``vis``
    relative to the slice), cut out of the whole response's offsets and bytes instead of gathered again;
    ``None`` if not valid UTF-8."""
    try:
        disp_text = disp.decode("utf-8")
    except UnicodeDecodeError:
        return None
    nv = int(vis.size)
    if disp.isascii():  # every boundary starts a character
        cut_k = np.arange(nv + 1)
        cut_d = off - off[0]
    else:
        ok = np.ones(nv + 1, dtype=bool)
        if nv > 1:
            ok[1:-1] = (np.frombuffer(disp, dtype=np.uint8)[off[1:-1] - off[0]] & 0xC0) != 0x80
        cut_k = np.flatnonzero(ok)
        cut_d = off[cut_k] - off[0]
    vids = arr[i0 + int(vis[0]) : i0 + int(vis[-1]) + 1] if gapless and nv else arr[vis + i0]
    any_added = bool(table.added_ids) and not table.added_ids.isdisjoint(vids.tolist())
    return Doc(sub_ids, vis, vids, cut_k, cut_d, disp, disp_text, True, None, gapless, any_added)


def _stitch(
    ids: list[int],
    lp: list[float] | None,
    i0: int,
    i1: int,
    mid_ids: list[int],
    mid_src: list[int | None],
    mid_prov: list[Provenance],
    mid_lp: list[float | None] | None,
    removed: int,
    method: str,
    text: str,
) -> Correction:
    """The whole-response Correction from a corrected slice ``ids[i0:i1]`` (list slicing, no per-token loop)."""
    n = len(ids)
    m = len(mid_ids)
    out_ids = ids.copy()  # one copy, then a slice assignment (a memmove): no per-token Python
    out_ids[i0:i1] = mid_ids
    src: list[int | None] = _ints(n)[:n]
    src[i0:i1] = [None if x is None else x + i0 for x in mid_src]
    if m == i1 - i0 and all(x == SAMPLED for x in mid_prov):
        prov: list[Provenance] = [SAMPLED] * n
    else:
        prov = [SAMPLED] * i0
        prov += mid_prov
        prov += [SHIFTED] * (n - i1)
    out_lp: list[float | None] | None = None
    if lp is not None:
        out_lp = lp.copy()  # type: ignore[assignment]
        out_lp[i0:i1] = mid_lp if mid_lp is not None else [None] * m  # type: ignore[index]
    return Correction(
        token_ids=out_ids,
        provenance=prov,
        source_index=src,
        logprobs=out_lp,
        removed=removed,
        method=method,
        original_ids=ids,
        original_logprobs=lp,
        edits=1,
        text=text,
    )
