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

import codecs
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .correction import Correction, TokenFixError, View
from .diff import Region, diff_utf8
from .provenance import Builder, check_logprobs, make_correction
from .table import TokenTable, get_table
from .tokens import align_ids, match_moved

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

#: Anchor tokens per side on successive attempts; after the last, the full re-encode fallback.
ANCHOR_STEPS = (1, 3, 8, 24)
#: Tokens of context each side used to check that a window stays canonical.
CANON_MARGIN = 3


class _Retry(Exception):
    """A window could not be written or kept canonical with the current anchors."""


@dataclass
class _Doc:
    """The sampled ids seen through one view, with byte offsets of the allowed cut points."""

    ids: list[int]
    vis: np.ndarray  # positions (into ids) of visible tokens
    vids: np.ndarray  # visible ids
    cut_k: np.ndarray  # allowed cut points, as boundaries 0..nv between visible tokens
    cut_d: np.ndarray  # display-byte offset of each allowed cut
    disp: bytes  # what decode shows (after the dummy-prefix strip)
    disp_text: str  # the same, decoded
    clean: bool  # display == valid UTF-8 of the token bytes (byte-level check is a proof)
    bad: np.ndarray | None = None  # per segment between cuts: shows U+FFFD for invalid bytes (never an anchor)


def _decode(tokenizer: Any, ids: Sequence[int], view: View) -> str:
    """The reference decode for a view (clean-up of tokenization spaces off: it is lossy)."""
    from tokenizers import Tokenizer

    skip = view == "content"
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.decode(list(ids), skip_special_tokens=skip)
    return tokenizer.decode(list(ids), skip_special_tokens=skip, clean_up_tokenization_spaces=False)


def _spm_display(table: TokenTable, vids: Sequence[int]) -> str:
    """Emulate SentencePiece byte fallback: a run of byte tokens decodes as one, else U+FFFD per byte."""
    out: list[str] = []
    run = bytearray()
    byte_id = {v: k for k, v in table.byte_ids.items()}
    for i in vids:
        if i in byte_id:
            run.append(byte_id[i])
            continue
        if run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("\ufffd" * len(run))
            run.clear()
        out.append(table.token_bytes[i].decode("utf-8", "replace"))  # type: ignore[union-attr]
    if run:
        try:
            out.append(run.decode("utf-8"))
        except UnicodeDecodeError:
            out.append("\ufffd" * len(run))
    return "".join(out)


def _visible(table: TokenTable, arr: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Positions and ids of the visible tokens (a cheap slice when hidden ones sit only at the ends)."""
    n = int(arr.size)
    if view == "content":
        hid = table.hidden[arr]
        if hid.any():
            lo = 0
            while lo < n and hid[lo]:
                lo += 1
            hi = n
            while hi > lo and hid[hi - 1]:
                hi -= 1
            if hi - lo > 0 and hid[lo:hi].any():
                vis = np.flatnonzero(~hid)
                return vis, arr[vis]
            return np.arange(lo, hi), arr[lo:hi]
    return np.arange(n), arr


def _byte_index(starts: np.ndarray, lens: np.ndarray, off: np.ndarray, total: int) -> np.ndarray:
    """Indices into the table's flat byte buffer of every byte of the given tokens, in order.

    A cumulative sum of +1 steps with a jump at each token start: fewer passes than repeat + arange."""
    if int(lens.min()) > 0:
        inc = np.ones(total, dtype=np.int64)
        inc[0] = starts[0]
        inc[off[1:-1]] = starts[1:] - (starts[:-1] + lens[:-1] - 1)
        return np.cumsum(inc, out=inc)
    return np.repeat(starts - off[:-1], lens) + np.arange(total, dtype=np.int64)


def _build_doc(table: TokenTable, tokenizer: Any, ids: list[int], arr: np.ndarray, view: View) -> _Doc | None:
    """Visible bytes and allowed cuts; ``None`` if the display cannot be modelled (caller re-encodes)."""
    vis, vids = _visible(table, arr, view)
    lens = table.lengths[vids]
    off = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    total = int(off[-1])
    if total:
        raw = table.flat[_byte_index(table.starts[vids], lens, off, total)]
        b = raw.tobytes()
    else:
        raw = np.zeros(0, dtype=np.uint8)
        b = b""
    s0 = 1 if table.strip_leading_space and b[:1] == b" " else 0
    try:
        disp_text = b[s0:].decode("utf-8")
        clean = True
    except UnicodeDecodeError:
        disp_text = ""
        clean = False
    nv = int(vids.size)
    if clean:
        inner = off[1:-1]
        ok = np.ones(nv + 1, dtype=bool)
        if inner.size:
            ok[1:-1] = (raw[inner] & 0xC0) != 0x80
        cut_k = np.flatnonzero(ok)
        cut_d = np.maximum(off[cut_k] - s0, 0)
        return _Doc(ids, vis, vids, cut_k, cut_d, b[s0:], disp_text, True)
    # Dirty: invalid UTF-8 in the token bytes (a response cut mid-character, an SPM byte run). Cut only
    # where the decoder provably restarts, decode the few segments holding invalid bytes like the decoder
    # does (the rest shows its bytes as they are), and check the whole against the real decode.
    ok = np.ones(nv + 1, dtype=bool)
    if nv > 1:
        ok[1:-1] = (raw[off[1:-1]] & 0xC0) != 0x80
        if table.byte_ids:
            is_byte = np.isin(vids, np.fromiter(table.byte_ids.values(), dtype=np.int64))
            ok[1:-1] &= ~(is_byte[:-1] & is_byte[1:])
    ks = np.flatnonzero(ok) if nv else np.zeros(1, dtype=np.int64)
    seg_b = off[ks]  # byte offset of each cut
    n_seg = max(int(ks.size) - 1, 0)
    bad = np.zeros(max(n_seg, 1), dtype=bool)
    for e0, e1 in _invalid_ranges(b):
        j0 = int(np.searchsorted(seg_b, e0, "right")) - 1
        j1 = int(np.searchsorted(seg_b, e1, "left"))
        bad[max(j0, 0) : max(j1, j0 + 1)] = True
    pieces: list[bytes] = []
    shift = np.zeros(int(ks.size), dtype=np.int64)
    pos = 0
    vlist = vids.tolist()
    for j in np.flatnonzero(bad[:n_seg]).tolist():
        x0, x1 = int(seg_b[j]), int(seg_b[j + 1])
        if table.kind == "metaspace":
            seg = _spm_display(table, vlist[int(ks[j]) : int(ks[j + 1])]).encode("utf-8")
        else:
            seg = b[x0:x1].decode("utf-8", "replace").encode("utf-8")
        pieces.append(b[pos:x0])
        pieces.append(seg)
        pos = x1
        shift[j + 1] += len(seg) - (x1 - x0)
    pieces.append(b[pos:])
    disp_b = b"".join(pieces)
    try:
        disp_s = disp_b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    strip = 1 if table.strip_leading_space and disp_s[:1] == " " else 0
    disp = disp_s[strip:]
    if disp != _decode(tokenizer, ids, view):
        return None
    cut_d = np.maximum(seg_b + np.cumsum(shift) - strip, 0)
    return _Doc(ids, vis, vids, ks, cut_d, disp_b[strip:], disp, False, bad)


_TLS = threading.local()


def _record_invalid(exc: UnicodeError) -> tuple[str, int]:
    _TLS.ranges.append((exc.start, exc.end))  # type: ignore[attr-defined]
    return "", exc.end  # type: ignore[attr-defined]


codecs.register_error("otel_tokenfix.record_invalid", _record_invalid)


def _invalid_ranges(b: bytes) -> list[tuple[int, int]]:
    """Byte ranges of ``b`` that are not valid UTF-8, in one decoding pass."""
    _TLS.ranges = []
    b.decode("utf-8", "otel_tokenfix.record_invalid")
    out: list[tuple[int, int]] = _TLS.ranges
    _TLS.ranges = []
    return out


@dataclass
class _Window:
    a: int  # index into doc.cut_k of the left cut
    z: int  # index into doc.cut_k of the right cut
    t0: int  # target byte offset of the left cut
    t1: int  # target byte offset of the right cut
    regions: list[Region]


def _anchorable(doc: _Doc, table: TokenTable, k_lo: int, k_hi: int, left: bool) -> bool:
    """Visible tokens [k_lo, k_hi) can join the window next to them (on their right if ``left``): none is
    an added token, and no hidden token sits between them or between them and the window."""
    if k_hi <= k_lo:
        return True
    added = table.added
    vids = doc.vids
    for k in range(k_lo, k_hi):
        if added[vids[k]]:
            return False
    lo, hi = (k_lo, min(k_hi + 1, int(vids.size))) if left else (max(k_lo - 1, 0), k_hi)
    return int(doc.vis[hi - 1] - doc.vis[lo]) == hi - 1 - lo


def _windows(doc: _Doc, table: TokenTable, regions: list[Region], anchors: int) -> list[_Window]:
    cut_d, cut_k = doc.cut_d, doc.cut_k
    last = len(cut_k) - 1
    wins: list[_Window] = []
    delta = 0
    for d0, d1, t0, t1 in regions:
        a = int(np.searchsorted(cut_d, d0, "right")) - 1
        z = int(np.searchsorted(cut_d, d1, "left"))
        a, z = max(a, 0), min(z, last)
        bad = doc.bad
        for _ in range(anchors):
            if a > 0 and (bad is None or not bad[a - 1]):
                if _anchorable(doc, table, int(cut_k[a - 1]), int(cut_k[a]), True):
                    a -= 1
        for _ in range(anchors):
            if z < last and (bad is None or not bad[z]):
                if _anchorable(doc, table, int(cut_k[z]), int(cut_k[z + 1]), False):
                    z += 1
        left_t = int(cut_d[a]) + delta
        new_delta = delta + (t1 - t0) - (d1 - d0)
        right_t = int(cut_d[z]) + new_delta
        if wins and a <= wins[-1].z:
            w = wins[-1]
            w.z = max(w.z, z)
            w.t1 = int(cut_d[w.z]) + new_delta
            w.regions.append((d0, d1, t0, t1))
        else:
            wins.append(_Window(a, z, left_t, right_t, [(d0, d1, t0, t1)]))
        delta = new_delta
    return wins


def _map_offset(x: int, w: _Window) -> int:
    """Target offset of display offset ``x`` inside window ``w`` (inserted text goes before hidden tokens)."""
    prev_d, prev_t = w.regions[0][0], w.regions[0][2]
    for d0, d1, t0, t1 in w.regions:
        if x < d0:
            break
        if x < d1:
            return t0 + min(x - d0, t1 - t0)
        prev_d, prev_t = d1, t1
    return x - prev_d + prev_t


def _char_floor(tb: bytes, t: int) -> int:
    while 0 < t < len(tb) and (tb[t] & 0xC0) == 0x80:
        t -= 1
    return t


def _encode_exact(table: TokenTable, data: bytes) -> list[int]:
    try:
        new = table.encode(data.decode("utf-8"))
    except (UnicodeDecodeError, TokenFixError) as exc:
        raise _Retry from exc
    if table.join(new) != data:
        raise _Retry
    return new


def _margins(table: TokenTable, doc: _Doc, k_lo: int, k_hi: int) -> tuple[list[int], list[int]]:
    """Up to CANON_MARGIN visible tokens each side of a window that may be re-encoded with it."""
    nv = int(doc.vids.size)
    m_lo = k_lo
    while m_lo > 0 and k_lo - m_lo < CANON_MARGIN and _anchorable(doc, table, m_lo - 1, m_lo, True):
        m_lo -= 1
    m_hi = k_hi
    while m_hi < nv and m_hi - k_hi < CANON_MARGIN and _anchorable(doc, table, m_hi, m_hi + 1, False):
        m_hi += 1
    return doc.vids[m_lo:k_lo].tolist(), doc.vids[k_hi:m_hi].tolist()


def _encode_window(table: TokenTable, doc: _Doc, k_lo: int, k_hi: int, data: bytes, old: list[int]) -> list[int]:
    """Encode a window's target bytes so that, with a margin of kept tokens around it, it is what the
    tokenizer itself would write (canonical in context). One encode in the common case: the window plus
    its margins; if the margins do not come back unchanged, the window alone, and then a canonical old
    context means the window must widen (``_Retry``)."""
    left, right = _margins(table, doc, k_lo, k_hi)
    lb, rb = table.join(left), table.join(right)
    try:
        ctx = table.encode((lb + data + rb).decode("utf-8"))
    except (UnicodeDecodeError, TokenFixError):
        return _encode_exact(table, data)
    n_r = len(ctx) - len(right)
    if ctx[: len(left)] == left and ctx[n_r:] == right and n_r >= len(left):
        mid = ctx[len(left) : n_r]
        if table.join(mid) == data:
            return mid
    new = _encode_exact(table, data)
    if new == old:
        return new
    old_ctx = left + old + right
    try:
        if table.encode(table.join(old_ctx).decode("utf-8")) == old_ctx:
            raise _Retry  # the sampled context was canonical: keep the result canonical too
    except (UnicodeDecodeError, TokenFixError):
        pass
    return new


def _pieces(doc: _Doc, tb: bytes, w: _Window) -> list[tuple[int, int, int, int]]:
    """Split a window at hidden tokens inside it: (k_start, k_end, t_start, t_end) per piece."""
    vis, cut_k, cut_d = doc.vis, doc.cut_k, doc.cut_d
    k_lo, k_hi = int(cut_k[w.a]), int(cut_k[w.z])
    ks = [k_lo]
    ts = [w.t0]
    if k_hi - k_lo > 1 and int(vis[k_hi - 1]) - int(vis[k_lo]) != k_hi - 1 - k_lo:
        gaps = np.flatnonzero(np.diff(vis[k_lo:k_hi]) > 1) + k_lo + 1
        for k in gaps.tolist():
            j = int(np.searchsorted(cut_k, k, "right")) - 1  # nearest allowed cut at or before k
            t = _char_floor(tb, max(ts[-1], min(_map_offset(int(cut_d[j]), w), w.t1)))
            ks.append(k)
            ts.append(max(t, ts[-1]))
    ks.append(k_hi)
    ts.append(w.t1)
    return [(ks[i], ks[i + 1], ts[i], ts[i + 1]) for i in range(len(ks) - 1)]


def _insert_pos(doc: _Doc, table: TokenTable, k: int) -> int:
    """Where in ids new text goes for an empty piece at visible boundary k (before hidden tokens)."""
    vis, ids = doc.vis, doc.ids
    if k > 0:
        return int(vis[k - 1]) + 1
    if vis.size:
        return int(vis[0])
    lead = 0
    while lead < len(ids) and table.bos is not None and ids[lead] == table.bos:
        lead += 1
    return lead


def _splice(
    table: TokenTable, doc: _Doc, tb: bytes, regions: list[Region], anchors: int, canonical: bool, out: Builder
) -> list[Region]:
    """Splice re-encoded windows into the sampled ids (into ``out``). Returns replaced id ranges."""
    ids, vis = doc.ids, doc.vis
    changed: list[Region] = []
    pos = 0  # next position in ids to copy
    for w in _windows(doc, table, regions, anchors):
        for k0, k1, t0, t1 in _pieces(doc, tb, w):
            if k1 > k0:
                p0, p1 = int(vis[k0]), int(vis[k1 - 1]) + 1
            else:
                p0 = p1 = _insert_pos(doc, table, k0)
            out.copy(pos, p0)
            first = k0 == 0 and table.strip_leading_space
            data = tb[t0:t1]
            if first and (data or k1 < int(doc.vids.size)):
                data = b" " + data
            old = ids[p0:p1]
            new = _encode_window(table, doc, k0, k1, data, old) if canonical else _encode_exact(table, data)
            p = 0
            while p < len(old) and p < len(new) and old[p] == new[p]:
                p += 1
            s = 0
            while s < len(old) - p and s < len(new) - p and old[-1 - s] == new[-1 - s]:
                s += 1
            base = len(out.ids)
            src: list[int | None] = list(range(p0, p0 + p))
            src.extend([None] * (len(new) - p - s))
            src.extend(range(p1 - s, p1))
            out.add(new, src)
            if len(new) - p - s or len(old) - p - s:
                changed.append((p0 + p, p1 - s, base + p, base + len(new) - s))
            pos = p1
    out.copy(pos, len(ids))
    return changed


def _reencode(table: TokenTable, tokenizer: Any, ids: list[int], arr: np.ndarray, text: str, view: View) -> list[int]:
    """Fallback: encode the whole text; hidden tokens keep their place at the start/end."""
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
    data = (b" " if table.strip_leading_space else b"") + text.encode("utf-8")
    try:
        new = _encode_exact(table, data)
    except _Retry:
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
            raise TokenFixError(f"this tokenizer cannot write {ch!r} exactly (no byte-fallback token)")
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
    arr = table.check_ids(token_ids)
    ids = list(token_ids)
    if ids and type(ids[0]) is not int:  # numpy ints and the like: hand back plain ints
        ids = arr.tolist()
    lp = check_logprobs(ids, logprobs)
    try:
        tb = edited_text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenFixError("edited_text contains lone surrogates and cannot be tokenized") from exc
    doc = _build_doc(table, tokenizer, ids, arr, view)
    if doc is not None:
        regions = diff_utf8(doc.disp, tb)
        if not regions:
            return make_correction(ids, ids, list(range(len(ids))), logprobs=lp, method="unchanged", text=edited_text)
        for step, anchors in enumerate(ANCHOR_STEPS):
            out = Builder(ids, lp)
            try:
                changed = _splice(table, doc, tb, regions, anchors, canonical, out)
            except _Retry:
                continue
            if not doc.clean and _decode(tokenizer, out.ids, view) != edited_text:
                continue
            if changed:
                match_moved(ids, out.ids, changed, out.moved, cross_singles=False)
            return out.finish(method="splice" if step == 0 else "widened", text=edited_text)
    out = _reencode(table, tokenizer, ids, arr, edited_text, view)
    if _decode(tokenizer, out, view) != edited_text:
        raise TokenFixError("the tokenizer cannot reproduce the edited text exactly (lossy tokenizer?)")
    return make_correction(ids, out, align_ids(ids, out), logprobs=lp, method="reencode", text=edited_text)
