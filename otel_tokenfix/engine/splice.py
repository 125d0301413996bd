"""Windows and the splice: re-encode only small windows around each changed region.

Each changed region is widened to allowed cut points plus anchor tokens (never an added/special token,
never across a hidden token, never a token that shows U+FFFD); overlapping or touching windows merge; a
window spanning hidden tokens is split around them. Each window is encoded together with a few kept tokens
of margin so that the result is what the tokenizer itself would write in context (canonical), and its
bytes must equal the target bytes; otherwise ``Retry`` asks the caller for wider anchors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .correction import TokenFixError
from .diff import Region
from .doc import Doc
from .provenance import Builder
from .table import TokenTable

#: Tokens of context each side used to check that a window stays canonical.
CANON_MARGIN = 3


class Retry(Exception):
    """A window could not be written or kept canonical with the current anchors."""


@dataclass
class _Window:
    a: int  # index into doc.cut_k of the left cut
    z: int  # index into doc.cut_k of the right cut
    t0: int  # target byte offset of the left cut
    t1: int  # target byte offset of the right cut
    regions: list[Region]


def _anchorable(doc: Doc, table: TokenTable, k_lo: int, k_hi: int, left: bool) -> bool:
    """Visible tokens [k_lo, k_hi) can join the window next to them (on their right if ``left``): none is
    an added token, and no hidden token sits between them or between them and the window."""
    if k_hi <= k_lo:
        return True
    if doc.any_added and not table.added_ids.isdisjoint(doc.vids[k_lo:k_hi].tolist()):
        return False
    if doc.gapless:
        return True
    lo, hi = (k_lo, min(k_hi + 1, int(doc.vids.size))) if left else (max(k_lo - 1, 0), k_hi)
    return int(doc.vis[hi - 1] - doc.vis[lo]) == hi - 1 - lo


def _windows(doc: Doc, table: TokenTable, regions: list[Region], anchors: int) -> list[_Window]:
    """One window per changed region (cover + ``anchors`` tokens each side), merged when they touch; each
    knows its target byte range (display offsets shifted by the length changes of earlier regions)."""
    cut_d, cut_k = doc.cut_d, doc.cut_k
    last = len(cut_k) - 1
    wins: list[_Window] = []
    delta = 0
    for d0, d1, t0, t1 in regions:
        a = int(cut_d.searchsorted(d0, "right")) - 1
        z = int(cut_d.searchsorted(d1, "left"))
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


def encode_exact(table: TokenTable, data: bytes) -> list[int]:
    """Ids whose bytes are exactly ``data`` (else ``Retry``: the caller widens or falls back)."""
    try:
        new = table.encode(data.decode("utf-8"))
    except (UnicodeDecodeError, TokenFixError) as exc:
        raise Retry from exc
    if table.join(new) != data:
        raise Retry
    return new


def _margins(table: TokenTable, doc: Doc, k_lo: int, k_hi: int) -> tuple[list[int], list[int]]:
    """Up to CANON_MARGIN visible tokens each side of a window that may be re-encoded with it."""
    nv = int(doc.vids.size)
    if doc.gapless and not doc.any_added:  # every neighbour is accepted
        return doc.vids[max(k_lo - CANON_MARGIN, 0) : k_lo].tolist(), doc.vids[k_hi : k_hi + CANON_MARGIN].tolist()
    m_lo = k_lo
    while m_lo > 0 and k_lo - m_lo < CANON_MARGIN and _anchorable(doc, table, m_lo - 1, m_lo, True):
        m_lo -= 1
    m_hi = k_hi
    while m_hi < nv and m_hi - k_hi < CANON_MARGIN and _anchorable(doc, table, m_hi, m_hi + 1, False):
        m_hi += 1
    return doc.vids[m_lo:k_lo].tolist(), doc.vids[k_hi:m_hi].tolist()


def _encode_window(table: TokenTable, doc: Doc, k_lo: int, k_hi: int, data: bytes, old: list[int]) -> list[int]:
    """Encode a window's target bytes so that, with a margin of kept tokens around it, it is what the
    tokenizer itself would write (canonical in context). One encode in the common case: the window plus
    its margins; if the margins do not come back unchanged, the window alone, and then a canonical old
    context means the window must widen (``Retry``)."""
    left, right = _margins(table, doc, k_lo, k_hi)
    return encode_in_context(table, left, right, data, old)


def encode_in_context(table: TokenTable, left: list[int], right: list[int], data: bytes, old: list[int]) -> list[int]:
    """``_encode_window`` with its margins given: kept ids ``left`` and ``right`` around the window."""
    lb, rb = table.join(left), table.join(right)
    try:
        ctx = table.encode((lb + data + rb).decode("utf-8"))
    except (UnicodeDecodeError, TokenFixError):
        return encode_exact(table, data)
    n_r = len(ctx) - len(right)
    if ctx[: len(left)] == left and ctx[n_r:] == right and n_r >= len(left):
        mid = ctx[len(left) : n_r]
        if table.join(mid) == data:
            return mid
    new = encode_exact(table, data)
    if new == old:
        return new
    old_ctx = left + old + right
    try:
        if table.encode(table.join(old_ctx).decode("utf-8")) == old_ctx:
            raise Retry  # the sampled context was canonical: keep the result canonical too
    except (UnicodeDecodeError, TokenFixError):
        pass
    return new


def _pieces(doc: Doc, tb: bytes, w: _Window) -> list[tuple[int, int, int, int]]:
    """Split a window at hidden tokens inside it: (k_start, k_end, t_start, t_end) per piece."""
    vis, cut_k, cut_d = doc.vis, doc.cut_k, doc.cut_d
    k_lo, k_hi = int(cut_k[w.a]), int(cut_k[w.z])
    ks = [k_lo]
    ts = [w.t0]
    if not doc.gapless and k_hi - k_lo > 1 and int(vis[k_hi - 1]) - int(vis[k_lo]) != k_hi - 1 - k_lo:
        gaps = np.flatnonzero(np.diff(vis[k_lo:k_hi]) > 1) + k_lo + 1
        for k in gaps.tolist():
            j = int(np.searchsorted(cut_k, k, "right")) - 1  # nearest allowed cut at or before k
            t = _char_floor(tb, max(ts[-1], min(_map_offset(int(cut_d[j]), w), w.t1)))
            ks.append(k)
            ts.append(max(t, ts[-1]))
    ks.append(k_hi)
    ts.append(w.t1)
    return [(ks[i], ks[i + 1], ts[i], ts[i + 1]) for i in range(len(ks) - 1)]


def _insert_pos(doc: Doc, table: TokenTable, k: int) -> int:
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


def splice(
    table: TokenTable, doc: Doc, tb: bytes, regions: list[Region], anchors: int, canonical: bool, out: Builder
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
            new = _encode_window(table, doc, k0, k1, data, old) if canonical else encode_exact(table, data)
            p = 0
            while p < len(old) and p < len(new) and old[p] == new[p]:
                p += 1
            s = 0
            while s < len(old) - p and s < len(new) - p and old[-1 - s] == new[-1 - s]:
                s += 1
            base = out.n
            src: list[int | None] = list(range(p0, p0 + p))
            src.extend([None] * (len(new) - p - s))
            src.extend(range(p1 - s, p1))
            out.add(new, src)
            if len(new) - p - s or len(old) - p - s:
                changed.append((p0 + p, p1 - s, base + p, base + len(new) - s))
            pos = p1
    out.copy(pos, len(ids))
    return changed
