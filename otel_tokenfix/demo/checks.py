"""Checks and comparisons the demo prints and its tests assert, over one triplet record.

Why here and pure: the demo must not claim what it did not check. Each call's record is checked for
exactness (the corrected ids decode to the text the agent used) and provenance (every kept token is the
sampled token at its source index, with its logprob, each sampled token used at most once), and compared
with what a full re-tokenization of the edited text would have produced instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

INSERTED, SAMPLED, SHIFTED = 0, 1, 2


@dataclass(frozen=True)
class CallCheck:
    """One call: tokenfix counts, exactness/provenance verdicts, and the re-tokenization comparison."""

    sampled: int
    shifted: int
    inserted: int
    removed: int
    exact: bool
    provenance_ok: bool
    problems: tuple[str, ...]
    retok_tokens: int
    retok_no_origin: int  # tokens of a full re-encode that match no sampled token (LCS against the original)
    retok_lost: int  # sampled tokens a full re-encode drops

    @property
    def kept(self) -> int:
        return self.sampled + self.shifted


def lcs_matches(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence of two id lists (rapidfuzz Indel, near-linear)."""
    from rapidfuzz.distance import Indel

    return sum(op.src_end - op.src_start for op in Indel.opcodes(list(a), list(b)) if op.tag == "equal")


def retokenize(tokenizer: PreTrainedTokenizerBase, text: str, original_ids: Sequence[int]) -> list[int]:
    """What trainers that re-tokenize do: encode the edited text, keep the original's stop token."""
    ids = list(tokenizer.encode(text, add_special_tokens=False)) if text else []
    special = set(tokenizer.all_special_ids)
    if original_ids and original_ids[-1] in special:
        ids.append(original_ids[-1])
    return ids


def check_call(
    tokenizer: PreTrainedTokenizerBase,
    record: dict[str, Any],
    edited_text: str,
    original_ids: Sequence[int],
    original_logprobs: Sequence[float] | None,
) -> CallCheck:
    """Check one triplet record against what the agent saw (original ids) and used (edited text)."""
    response = record["response"]
    ids: list[int] = list(response["token_ids"])
    prov: list[int] = list(response["provenance"])
    logprobs = response.get("log_probs")
    source = response.get("source_index")
    problems: list[str] = []

    decoded = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    exact = decoded == edited_text
    if not exact:
        problems.append(f"decode != edited text: {decoded!r} vs {edited_text!r}")

    bad: list[str] = []  # provenance problems
    if original_logprobs is not None and logprobs is None:
        bad.append("token logprobs: the call had logprobs but the record has none")
    if source is None:  # unchanged call: every token is the sampled one
        source = list(range(len(ids))) if ids == list(original_ids) else None
    if source is None or len(source) != len(ids):
        bad.append("no source_index to check provenance against")
    else:
        seen: set[int] = set()
        for pos, (tok, p, s) in enumerate(zip(ids, prov, source, strict=True)):
            if s is None:
                if p != INSERTED:
                    bad.append(f"token {pos}: no source but provenance {p}")
                continue
            if p == INSERTED:
                bad.append(f"token {pos}: has a source but is marked inserted")
            if not 0 <= s < len(original_ids) or original_ids[s] != tok:
                bad.append(f"token {pos}: id {tok} is not the sampled id at {s}")
            if s in seen:  # a moved token may keep its id (engine's choice), but never twice
                bad.append(f"token {pos}: source index {s} used twice")
            seen.add(s)
            if logprobs is not None and original_logprobs is not None and s < len(original_logprobs):
                if logprobs[pos] is None or abs(logprobs[pos] - original_logprobs[s]) > 1e-9:
                    bad.append(f"token {pos}: logprob is not the sampled one")
        # sampled = exactly on-policy: only tokens of the untouched prefix may say so
        first_edit = next((i for i, s in enumerate(source) if s != i), len(source))
        for pos, p in enumerate(prov):
            if p == SAMPLED and pos >= first_edit:
                bad.append(f"token {pos}: after the first edit but marked sampled")
    provenance_ok = not bad
    problems.extend(bad)

    naive = retokenize(tokenizer, edited_text, original_ids)
    matched = lcs_matches(original_ids, naive)
    meta_tokens = (record.get("metadata") or {}).get("tokens") or {}
    kept = sum(1 for p in prov if p != INSERTED)
    removed = int(meta_tokens.get("removed", len(original_ids) - kept))
    return CallCheck(
        sampled=sum(1 for p in prov if p == SAMPLED),
        shifted=sum(1 for p in prov if p == SHIFTED),
        inserted=sum(1 for p in prov if p == INSERTED),
        removed=removed,
        exact=exact,
        provenance_ok=provenance_ok,
        problems=tuple(problems),
        retok_tokens=len(naive),
        retok_no_origin=len(naive) - matched,
        retok_lost=len(original_ids) - matched,
    )
