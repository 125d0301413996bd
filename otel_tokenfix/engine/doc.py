"""The sampled ids seen through one view: visible bytes, what decode shows, and where they may be cut.

Why a module of its own: everything the splice does rests on one fact, that the display of the sampled
ids is known exactly from the per-tokenizer table. When the token bytes are valid UTF-8 that is a proof;
when they are not (a response cut mid-character, an invalid SentencePiece byte run), the few segments with
invalid bytes are decoded like the tokenizer's decoder does and the whole is checked against it.
"""

from __future__ import annotations

import codecs
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .correction import View
from .table import PACK_HIDDEN, PACK_LEN_MASK, PACK_LEN_SHIFT, PACK_START_SHIFT, TokenTable

_LITTLE = sys.byteorder == "little"


def _hidden_flags(info: np.ndarray) -> np.ndarray:
    """Nonzero where the packed entry is a hidden token (byte 0 of each entry, see PACK_HIDDEN)."""
    return info.view(np.uint8)[::8] if _LITTLE else info & PACK_HIDDEN


def _lengths(vinfo: np.ndarray) -> np.ndarray:
    """Byte length of each packed entry (bytes 2-3 of each entry, see PACK_LEN_SHIFT)."""
    return vinfo.view(np.uint16)[1::4] if _LITTLE else (vinfo >> PACK_LEN_SHIFT) & PACK_LEN_MASK


@dataclass
class Doc:
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
    gapless: bool = False  # the visible tokens are consecutive in ids (no hidden token between two of them)
    any_added: bool = True  # some visible token is an added token (False: no anchor check needed)


def reference_decode(tokenizer: Any, ids: Sequence[int], view: View) -> str:
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


def visible(table: TokenTable, info: np.ndarray, view: View) -> tuple[np.ndarray | None, np.ndarray | slice]:
    """Positions of the visible tokens and an index selecting them. When hidden tokens sit only at the
    ends (the common case) the index is a plain slice (no gather) and the positions are ``None``: they
    are the slice's range, built only by the callers that need them."""
    n = int(info.size)
    if view == "content":
        flags = _hidden_flags(info)
        where = flags.nonzero()[0]
        if where.size:
            pos = where.tolist()  # hidden tokens are few: walk their positions, not the whole mask
            m = len(pos)
            lo = 0
            while lo < m and pos[lo] == lo:
                lo += 1
            hi, t = n, m
            while t > lo and pos[t - 1] == hi - 1:
                hi -= 1
                t -= 1
            if t > lo:  # a hidden token between visible ones
                vis = np.flatnonzero(flags == 0)
                return vis, vis
            return None, slice(lo, hi)
    return None, slice(0, n)


def _byte_index(starts: np.ndarray, lens: np.ndarray, off: np.ndarray, total: int, nonempty: bool) -> np.ndarray:
    """Indices into the table's flat byte buffer of every byte of the given tokens, in order.

    A cumulative sum of +1 steps with a jump at each token start: fewer passes than repeat + arange (which
    is used when some token has no bytes: two starts would fall on one offset)."""
    if nonempty:
        inc = np.empty(total, dtype=np.int64)
        inc.fill(1)
        inc[0] = starts[0]
        inc[off[1:-1]] = starts[1:] - (starts[:-1] + lens[:-1] - 1)
        return inc.cumsum(out=inc)
    return np.repeat(starts - off[:-1], lens) + np.arange(total, dtype=np.int64)


#: What ``visible_bytes`` returns: positions, selector, byte offsets, bytes as an array and as ``bytes``.
Shown = tuple[np.ndarray | None, np.ndarray | slice, np.ndarray, np.ndarray, bytes]


def visible_bytes(table: TokenTable, info: np.ndarray, view: View) -> Shown:
    """The visible tokens' positions and selector, the byte offset of each (plus the end), and their
    bytes (as an array and as ``bytes``): numpy gathers only, no per-token Python."""
    vis, sel = visible(table, info, view)
    vinfo = info[sel]
    lens = _lengths(vinfo)
    off = np.zeros(lens.size + 1, dtype=np.int64)
    lens.cumsum(dtype=np.int64, out=off[1:])  # (methods, not the np.* wrappers: fewer Python frames)
    total = int(off[-1])
    if total:
        nonempty = not table.has_empty or int(lens.min()) > 0
        idx = _byte_index((vinfo >> PACK_START_SHIFT).view(np.int64), lens, off, total, nonempty)
        raw = table.flat[idx]
        return vis, sel, off, raw, raw.tobytes()
    return vis, sel, off, np.zeros(0, dtype=np.uint8), b""


def build_doc(
    table: TokenTable,
    tokenizer: Any,
    ids: list[int],
    arr: np.ndarray,
    info: np.ndarray,
    view: View,
    shown: Shown | None = None,
) -> Doc | None:
    """Visible bytes and allowed cuts; ``None`` if the display cannot be modelled (caller re-encodes).
    ``shown``: ``visible_bytes`` of the same ids and view, if the caller already has it."""
    vis, sel, off, raw, b = visible_bytes(table, info, view) if shown is None else shown
    if vis is None:
        vis = np.arange(sel.start, sel.stop)  # type: ignore[union-attr]
    vids = arr[sel]
    nv = int(vids.size)
    gapless = nv == 0 or int(vis[-1]) - int(vis[0]) == nv - 1
    any_added = bool(table.added_ids) and bool(table.added[vids].any())
    s0 = 1 if table.strip_leading_space and b[:1] == b" " else 0
    try:
        disp_text = b[s0:].decode("utf-8")
        clean = True
    except UnicodeDecodeError:
        disp_text = ""
        clean = False
    if clean:
        inner = off[1:-1]
        ok = np.ones(nv + 1, dtype=bool)
        if inner.size:
            ok[1:-1] = (raw[inner] & 0xC0) != 0x80
        cut_k = np.flatnonzero(ok)
        cut_d = np.maximum(off[cut_k] - s0, 0)
        return Doc(ids, vis, vids, cut_k, cut_d, b[s0:], disp_text, True, None, gapless, any_added)
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
    if disp != reference_decode(tokenizer, ids, view):
        return None
    cut_d = np.maximum(seg_b + np.cumsum(shift) - strip, 0)
    return Doc(ids, vis, vids, ks, cut_d, disp_b[strip:], disp, False, bad, gapless, any_added)


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
