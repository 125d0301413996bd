"""Near-linear diff of long, nearly identical sequences (text or token ids), coarse to fine.

Why not one global LCS: ``difflib`` is quadratic and even bit-parallel ``rapidfuzz`` costs O(n*m/64), i.e.
~0.15 s for 30k tokens with 10 scattered edits. Edits in agent traces are few and local, so we trim the
common prefix/suffix, diff coarse chunks (lines, or content-defined chunks of ids), and only descend into
the chunks that differ. Result: the list of changed regions, ``(a0, a1, b0, b1)`` half-open, in order.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
from rapidfuzz.distance import Indel

Region = tuple[int, int, int, int]

#: Direct LCS when len(a) * len(b) stays below this (bit-parallel: ~1-2 ms).
DIRECT_LIMIT = 4_000_000
#: Above this, a region no chunking could split is reported whole (a rewrite; ~30 ms of LCS at most).
HARD_LIMIT = 200_000_000


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common prefix, by binary search on slice equality (C-speed compares)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 32:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    while lo < hi and a[lo] == b[lo]:
        lo += 1
    return lo


def common_suffix(a: Sequence[Any], b: Sequence[Any], limit: int) -> int:
    """Length of the common suffix, at most ``limit``."""
    n = min(len(a), len(b), limit)
    la, lb = len(a), len(b)
    if a[la - n :] == b[lb - n :]:
        return n
    lo, hi = 0, n
    while hi - lo > 32:
        mid = (lo + hi) // 2
        if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
            lo = mid
        else:
            hi = mid
    while lo < hi and a[la - lo - 1] == b[lb - lo - 1]:
        lo += 1
    return lo


def _direct(a: Sequence[Any], b: Sequence[Any], a_off: int, b_off: int) -> list[Region]:
    out: list[Region] = []
    for op in Indel.opcodes(a, b):
        if op.tag != "equal":
            out.append((op.src_start + a_off, op.src_end + a_off, op.dest_start + b_off, op.dest_end + b_off))
    return _merge(out)


def _merge(regions: list[Region]) -> list[Region]:
    """Merge touching regions (an insert next to a delete is one replace)."""
    out: list[Region] = []
    for r in regions:
        if out and out[-1][1] == r[0] and out[-1][3] == r[2]:
            p = out[-1]
            out[-1] = (p[0], r[1], p[2], r[3])
        else:
            out.append(r)
    return out


Splitter = Callable[[Sequence[Any]], list[Any]]


def _split_lines(s: Sequence[Any]) -> list[Any]:
    return s.splitlines(keepends=True)  # type: ignore[attr-defined]


_WORD = re.compile(r"\s+|\w+|[^\w\s]+")


def _split_words(s: Sequence[Any]) -> list[Any]:
    return _WORD.findall(s)  # type: ignore[arg-type]


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)


def _stable_hash(x: Any) -> int:
    """A hash that does not change between processes (``hash(str)`` is salted per process, which would make
    chunk boundaries, and so corrections, differ from run to run)."""
    if isinstance(x, str):
        return zlib.crc32(x.encode("utf-8", "surrogatepass"))
    if isinstance(x, tuple) and x and not isinstance(x[0], int):
        return zlib.crc32("\x00".join(x).encode("utf-8", "surrogatepass"))
    return hash(x) & 0xFFFFFFFFFFFFFFFF  # ints and tuples of ints hash deterministically


def _keys(seq: Sequence[Any]) -> np.ndarray:
    """A well-mixed 64-bit key per item (per character pair for text), vectorised."""
    if isinstance(seq, str):
        cp = np.frombuffer(seq.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
        prev = np.zeros_like(cp)
        prev[1:] = cp[:-1]
        k = cp * _M1 + prev * _M2
    elif isinstance(seq[0], int):
        k = np.asarray(seq, dtype=np.int64).astype(np.uint64) * _M1
    else:
        k = np.fromiter(map(_stable_hash, seq), dtype=np.uint64, count=len(seq)) * _M1
    k ^= k >> np.uint64(31)
    k *= _M2
    k ^= k >> np.uint64(29)
    return k


def _cdc(k: int, max_len: int) -> Splitter:
    """Content-defined chunks: cut after items whose key hits 1 in ``k`` (an edit moves no boundary but its
    own), and at least every ``max_len`` items (a run of one repeated item still splits, into equal chunks
    that keep matching)."""

    def split(seq: Sequence[Any]) -> list[Any]:
        n = len(seq)
        if n == 0:
            return []
        natural = (np.flatnonzero(_keys(seq) % np.uint64(k) == 0) + 1).tolist()
        if not natural or natural[-1] != n:
            natural.append(n)
        ends: list[int] = []
        start = 0
        for e in natural:
            while e - start > max_len:
                start += max_len
                ends.append(start)
            ends.append(e)
            start = e
        as_tuple = not isinstance(seq, (str, bytes))
        out: list[Any] = []
        start = 0
        for e in ends:
            out.append(tuple(seq[start:e]) if as_tuple else seq[start:e])
            start = e
        return out

    return split


def _diff(
    a: Sequence[Any], b: Sequence[Any], a_off: int, b_off: int, levels: list[Splitter], direct: int = DIRECT_LIMIT
) -> list[Region]:
    p = common_prefix(a, b)
    s = common_suffix(a, b, min(len(a), len(b)) - p)
    a_mid, b_mid = a[p : len(a) - s], b[p : len(b) - s]
    a_off, b_off = a_off + p, b_off + p
    if not a_mid and not b_mid:
        return []
    if not a_mid or not b_mid:
        return [(a_off, a_off + len(a_mid), b_off, b_off + len(b_mid))]
    if len(a_mid) * len(b_mid) <= direct:
        return _direct(a_mid, b_mid, a_off, b_off)
    if not levels:
        if len(a_mid) * len(b_mid) <= HARD_LIMIT:
            return _direct(a_mid, b_mid, a_off, b_off)
        return [(a_off, a_off + len(a_mid), b_off, b_off + len(b_mid))]  # a rewrite: one region
    split, rest = levels[0], levels[1:]
    ca, cb = split(a_mid), split(b_mid)
    if len(ca) <= 1 and len(cb) <= 1:
        return _diff(a_mid, b_mid, a_off, b_off, rest)
    pa = list(accumulate(map(len, ca), initial=0))
    pb = list(accumulate(map(len, cb), initial=0))
    coarse = _diff(ca, cb, 0, 0, [_cdc(32, 128)])  # chunk lists: content-defined super-chunks if long
    out: list[Region] = []
    for i0, i1, j0, j1 in coarse:
        x0, x1, y0, y1 = pa[i0], pa[i1], pb[j0], pb[j1]
        out.extend(_diff(a_mid[x0:x1], b_mid[y0:y1], a_off + x0, b_off + y0, rest))
    return _merge(out)


def diff_text(a: str, b: str) -> list[Region]:
    """Changed regions between two strings (char offsets): lines, words, ~8-character chunks, characters."""
    return _diff(a, b, 0, 0, [_split_lines, _split_words, _cdc(8, 32)])


def char_to_byte_regions(a: str, b: str, regions: list[Region]) -> list[Region]:
    """The same regions in UTF-8 byte offsets (identity for ASCII)."""
    a_ascii, b_ascii = a.isascii(), b.isascii()
    if a_ascii and b_ascii:
        return regions

    def mapper(s: str, ascii_: bool) -> Callable[[int], int]:
        if ascii_:
            return lambda i: i
        state = [0, 0]  # char offset, byte offset (offsets are asked in increasing order)

        def f(i: int) -> int:
            c, by = state
            by += len(s[c:i].encode("utf-8", "surrogatepass"))
            state[0], state[1] = i, by
            return by

        return f

    fa, fb = mapper(a, a_ascii), mapper(b, b_ascii)
    out: list[Region] = []
    for a0, a1, b0, b1 in regions:
        x0 = fa(a0)
        x1 = fa(a1)
        y0 = fb(b0)
        y1 = fb(b1)
        out.append((x0, x1, y0, y1))
    return out


def diff_ids(a: Sequence[int], b: Sequence[int]) -> list[Region]:
    """Changed regions between two id lists: content-defined chunks of ~64, then ~8, then ids."""
    # A true LCS up to ~4k x 4k differing ids (a few ms); chunked beyond (repetitive runs align worse).
    return _diff(list(a), list(b), 0, 0, [_cdc(64, 256), _cdc(8, 32)], direct=16_000_000)


def _bytes_affixes(a: bytes, b: bytes) -> tuple[int, int]:
    """Common prefix and (non-overlapping) suffix lengths of two byte strings.

    Binary search on slice equality (memcmp): ~15 us on 128 KB, where an element-wise numpy compare of
    the whole strings costs ~80 us."""
    p = common_prefix(a, b)
    return p, common_suffix(a, b, min(len(a), len(b)) - p)


def diff_utf8(a: bytes, b: bytes, affixes: tuple[int, int] | None = None) -> list[Region]:
    """Changed regions (byte offsets, on character boundaries) between two valid UTF-8 byte strings.

    The common prefix/suffix is trimmed on the bytes (vectorised, no decode of long texts); only the
    differing middle is decoded and diffed as text. ``affixes``: ``_bytes_affixes(a, b)`` if known."""
    p, s = _bytes_affixes(a, b) if affixes is None else affixes

    def cont(x: bytes, i: int) -> bool:
        return 0 <= i < len(x) and (x[i] & 0xC0) == 0x80

    while p > 0 and (cont(a, p) or cont(b, p)):
        p -= 1
    while s > 0 and (cont(a, len(a) - s) or cont(b, len(b) - s)):
        s -= 1
    ma, mb = a[p : len(a) - s].decode("utf-8"), b[p : len(b) - s].decode("utf-8")
    if not ma and not mb:
        return []
    return [(x0 + p, x1 + p, y0 + p, y1 + p) for x0, x1, y0, y1 in char_to_byte_regions(ma, mb, diff_text(ma, mb))]
