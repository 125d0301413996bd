"""Shared checks for engine tests: exactness, kept tokens, provenance consistency."""

from __future__ import annotations

from collections.abc import Sequence

from otel_tokenfix.engine import Correction
from otel_tokenfix.engine.table import get_table


def decode(tok, ids: Sequence[int], view: str = "content") -> str:
    return tok.decode(list(ids), skip_special_tokens=view == "content", clean_up_tokenization_spaces=False)


def canonical(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def roundtrips(tok, text: str) -> bool:
    return decode(tok, canonical(tok, text)) == text


def assert_consistent(c: Correction, original: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
    """Provenance, source indices, removed count and logprobs agree with each other."""
    n = len(c.token_ids)
    assert len(c.provenance) == n and len(c.source_index) == n
    kept = [s for s in c.source_index if s is not None]
    assert len(kept) == len(set(kept)), "a sampled token kept twice"
    assert c.removed == len(original) - len(kept)
    prefix = True
    for i, (tid, src, prov) in enumerate(zip(c.token_ids, c.source_index, c.provenance, strict=True)):
        if src is None:
            assert prov == "inserted"
            prefix = False
            continue
        assert original[src] == tid, f"token {i} claims source {src} but ids differ"
        if prefix and src == i:
            assert prov == "sampled"
        else:
            prefix = False
            assert prov == "shifted"
    if logprobs is not None:
        assert c.logprobs is not None and len(c.logprobs) == n
        for src, lp in zip(c.source_index, c.logprobs, strict=True):
            assert lp == (None if src is None else logprobs[src])


def prefix_suffix_loss(
    tok, original: Sequence[int], c: Correction, edited: str, view: str = "content"
) -> tuple[int, int]:
    """How many original tokens lying wholly inside the common byte prefix (resp. suffix) of the old and
    the new text were not kept. A minimal splice loses at most its anchor token on each side."""
    table = get_table(tok)
    vis = [i for i, t in enumerate(original) if view == "raw" or not table.hidden[t]]
    raw = b"".join(table.token_bytes[original[i]] for i in vis)
    strip = 1 if table.strip_leading_space and raw[:1] == b" " else 0
    old, new = raw[strip:], edited.encode()
    p = 0
    while p < min(len(old), len(new)) and old[p] == new[p]:
        p += 1
    s = 0
    while s < min(len(old), len(new)) - p and old[-1 - s] == new[-1 - s]:
        s += 1
    offs = [0]
    for i in vis:
        offs.append(offs[-1] + len(table.token_bytes[original[i]]))
    offs = [max(o - strip, 0) for o in offs]
    kept = {s_ for s_ in c.source_index if s_ is not None}
    lost_pre = [j for j, i in enumerate(vis) if offs[j + 1] <= p and i not in kept]
    lost_suf = [j for j, i in enumerate(vis) if offs[j] >= len(old) - s and i not in kept]
    return len(lost_pre), len(lost_suf)
