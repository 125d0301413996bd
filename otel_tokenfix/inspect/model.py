"""Triplet records -> a plain per-call view (tokens with provenance, removed runs, totals).

Why separate from the renderers: the terminal and the HTML page must show the same thing, and this part
is pure (no rich, no files) so it can be tested directly against real tokenizers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

#: Integer provenance codes used on spans and in triplets (see engine/correction.py).
_CODE_NAMES = {0: "inserted", 1: "sampled", 2: "shifted"}
KINDS = ("sampled", "shifted", "inserted", "removed")
#: Trajectory records (several calls merged) also hold the tokens between turns (observations, templates).
CONTEXT = "context"


@dataclass(frozen=True)
class Piece:
    """One displayed run: a response token (kind sampled/shifted/inserted) or removed original text."""

    kind: str
    text: str
    token_id: int | None = None
    logprob: float | None = None


@dataclass
class CallView:
    """Everything the renderers show for one LLM call (one triplet record)."""

    index: int
    trace_id: str
    span_id: str
    model: str
    status: str
    reward: float | None
    edits: int
    pieces: list[Piece]
    prompt_tokens: int
    continuation: str
    has_original: bool
    note: str = ""
    calls: int = 1

    def count(self, kind: str) -> int:
        return sum(1 for p in self.pieces if p.kind == kind)

    @property
    def response_tokens(self) -> int:
        return sum(1 for p in self.pieces if p.kind != "removed")


@dataclass
class Summary:
    calls: int = 0
    traces: int = 0
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    statuses: dict[str, int] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON objects of a triplets JSONL file; a torn, undecodable or non-object line is skipped."""
    with Path(path).open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


def provenance_names(values: Sequence[Any], n: int) -> list[str]:
    """Normalize provenance given as strings or int codes (1 sampled, 2 shifted, 0 inserted)."""
    out: list[str] = []
    if not isinstance(values, (list, tuple)):
        values = ()
    for i in range(n):
        v = values[i] if i < len(values) else None
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, int):
            out.append(_CODE_NAMES.get(v, "sampled"))
        elif isinstance(v, str) and v in ("sampled", "shifted", "inserted"):
            out.append(v)
        else:
            out.append("sampled")
    return out


def token_pieces(tokenizer: PreTrainedTokenizerBase | None, ids: Sequence[int]) -> list[str]:
    """Per-token display text whose concatenation is the decoded text.

    Incremental detokenization (as vLLM does it): a token that ends inside a multi-byte character gets
    ``""`` and the token completing the character carries it, so nothing shows U+FFFD needlessly; the
    context window keeps SentencePiece's leading-space handling right.
    """
    if tokenizer is None:
        return [f"\u27e8{i}\u27e9" for i in ids]
    size = len(tokenizer)
    if any(not 0 <= i < size for i in ids):  # ids of another vocabulary: show them as ids, not garbage
        return [f"\u27e8{i}\u27e9" for i in ids]

    def dec(seq: Sequence[int]) -> str:
        return tokenizer.decode(list(seq), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces: list[str] = []
    prefix_offset = read_offset = 0
    for i in range(len(ids)):
        prefix_text = dec(ids[prefix_offset:read_offset]) if read_offset > prefix_offset else ""
        new_text = dec(ids[prefix_offset : i + 1])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            pieces.append(new_text[len(prefix_text) :] if new_text.startswith(prefix_text) else new_text)
            prefix_offset, read_offset = read_offset, i + 1
            # keep a short context so SentencePiece spaces stay right without quadratic decoding
            if read_offset - prefix_offset > 8:
                prefix_offset = read_offset - 8
        else:
            pieces.append("")
    if ids and pieces and not any(pieces[-4:]):  # a response cut mid-character: show what decode shows
        tail = dec(ids[read_offset:])
        pieces[-1] = tail
    return pieces


def _floats(values: Any, n: int) -> list[float | None]:
    if not isinstance(values, list) or len(values) != n:
        return [None] * n
    out: list[float | None] = []
    for v in values:
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None)
    return out


def _ints(values: Any) -> list[int] | None:
    if isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return list(values)
    return None


def _dict(value: Any) -> dict[str, Any]:
    """A record part that should be an object; anything else reads as empty (files are not trusted)."""
    return value if isinstance(value, dict) else {}


def original_ids_of(record: dict[str, Any]) -> list[int] | None:
    """The pre-edit sampled ids, wherever the record keeps them (None when it does not)."""
    response = _dict(record.get("response"))
    meta = _dict(record.get("metadata"))
    for holder, key in (
        (response, "original_token_ids"),
        (meta, "original_token_ids"),
        (meta, "original_response_token_ids"),
        (meta, "original_ids"),
        (response, "original_ids"),
    ):
        ids = _ints(holder.get(key)) if isinstance(holder, dict) else None
        if ids is not None:
            return ids
    original = response.get("original") if isinstance(response, dict) else None
    if isinstance(original, dict):
        return _ints(original.get("token_ids"))
    return None


def source_index_of(record: dict[str, Any], n: int, m: int) -> list[int | None] | None:
    """The record's ``source_index`` if it is usable: ``n`` entries, each ``None`` or an index below ``m``
    (the original's length); otherwise None and the view aligns the ids itself."""
    response = _dict(record.get("response"))
    meta = _dict(record.get("metadata"))
    for holder in (response, meta):
        si = holder.get("source_index")
        if not isinstance(si, list) or len(si) != n:
            continue
        out = [v if isinstance(v, int) and not isinstance(v, bool) else None for v in si]
        if all(v is None or 0 <= v < m for v in out):
            return out
    return None


def _removed_before(
    source_index: Sequence[int | None], original: Sequence[int], response: Sequence[int]
) -> dict[int, list[int]]:
    """Map response position -> original indices removed just before it (len(response) = at the end).

    A removed token is shown right after the kept token that preceded it in the original (at the start if
    none did): with ordinary edits that is exactly where it was; when the engine kept a moved sentence's
    tokens, deleted words still appear next to their old neighbours.
    """
    pos_of = {s: pos for pos, s in enumerate(source_index) if s is not None}
    if not pos_of:
        return {len(response): list(range(len(original)))} if original else {}
    removed: dict[int, list[int]] = {}
    last: int | None = None
    for k in range(len(original)):
        if k in pos_of:
            last = k
            continue
        at = pos_of[last] + 1 if last is not None else 0
        removed.setdefault(at, []).append(k)
    return removed


def _align(original: Sequence[int], response: Sequence[int]) -> list[int | None]:
    """Source index of each response token by an LCS over ids (when the record has no source_index)."""
    from rapidfuzz.distance import Indel

    src: list[int | None] = [None] * len(response)
    for op in Indel.opcodes(list(original), list(response)):
        if op.tag == "equal":
            for k in range(op.dest_end - op.dest_start):
                src[op.dest_start + k] = op.src_start + k
    return src


_MISMATCH_KINDS = {
    "edit_window": "in an edited window",
    "response": "outside edits",
    "prompt": "in the prompt",
    "end": "next prompt too short",
}


def _continuation_text(meta: dict[str, Any]) -> str:
    """One short phrase for the continuation check (``ok``, ``-`` for the last call, or where it breaks)."""
    cont = meta.get("continuation")
    if cont is None:
        return "-"
    if isinstance(cont, bool):
        return "ok" if cont else "broken"
    if isinstance(cont, str):
        return cont
    if not isinstance(cont, dict):
        return str(cont)
    holds = cont.get("holds", cont.get("ok"))
    if holds is True:
        return "ok"
    if holds is None:
        return str(cont.get("reason") or cont.get("status") or "-")
    first = cont.get("first_mismatch")
    parts = ["broken"]
    if isinstance(first, dict):
        if first.get("position") is not None:
            parts.append(f"at {first['position']}")
        kind = first.get("kind")
        if kind:
            parts.append(_MISMATCH_KINDS.get(str(kind), str(kind)))
    if cont.get("confined_to_edits") is True:
        parts.append("(confined to edits)")
    return " ".join(parts)


def call_view(record: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None, position: int = 0) -> CallView:
    """Build the view of one triplet record; tolerant of missing or malformed fields."""
    response = _dict(record.get("response"))
    prompt = _dict(record.get("prompt"))
    meta = _dict(record.get("metadata"))
    ids = _ints(response.get("token_ids")) or []
    n = len(ids)
    prov = provenance_names(response.get("provenance") or [], n)
    logprobs = _floats(response.get("log_probs", response.get("logprobs")), n)
    texts = token_pieces(tokenizer, ids)

    context = _between_turns(meta.get("turns"), n)
    for pos in context:
        prov[pos] = CONTEXT
    original = original_ids_of(record)
    note = ""
    removed_at: dict[int, list[int]] = {}
    if original is not None:
        src = source_index_of(record, n, len(original)) or _align(original, ids)
        removed_at = _removed_before(src, original, ids)
    elif any(p in ("shifted", "inserted") for p in prov):
        note = "record carries no original ids: removed text cannot be shown"

    def removed_pieces(pos: int) -> list[Piece]:
        run = removed_at.get(pos)
        if not run or original is None:
            return []
        rids = [original[k] for k in run]
        return [Piece("removed", t, i, None) for t, i in zip(token_pieces(tokenizer, rids), rids, strict=True)]

    pieces: list[Piece] = []
    for pos in range(n):
        pieces.extend(removed_pieces(pos))
        pieces.append(Piece(prov[pos], texts[pos], ids[pos], logprobs[pos]))
    pieces.extend(removed_pieces(n))

    reward = record.get("reward")
    status = str(
        meta.get("status") or ("corrected" if any(p in ("shifted", "inserted") for p in prov) else "unchanged")
    )
    edits = meta.get("edits")
    return CallView(
        index=int(record.get("index", position)) if isinstance(record.get("index", position), int) else position,
        trace_id=str(record.get("trace_id", "")),
        span_id=str(record.get("span_id", "")),
        model=str(meta.get("model") or ""),
        status=status,
        reward=float(reward) if isinstance(reward, (int, float)) and not isinstance(reward, bool) else None,
        edits=int(edits) if isinstance(edits, int) else (len(edits) if isinstance(edits, list) else 0),
        pieces=pieces,
        prompt_tokens=len(_ints(prompt.get("token_ids")) or []),
        continuation=_continuation_text(meta),
        has_original=original is not None,
        note=note,
        calls=meta["calls"] if isinstance(meta.get("calls"), int) and meta["calls"] > 0 else 1,
    )


def _between_turns(turns: Any, n: int) -> set[int]:
    """Response positions outside every turn's ``[start, end)`` range (trajectory records only)."""
    if not isinstance(turns, list) or not turns:
        return set()
    inside: set[int] = set()
    for turn in turns:
        if isinstance(turn, dict) and isinstance(turn.get("start"), int) and isinstance(turn.get("end"), int):
            inside.update(range(max(0, turn["start"]), min(n, turn["end"])))
    return set(range(n)) - inside if inside else set()


def build(
    records: Iterable[dict[str, Any]], tokenizer: PreTrainedTokenizerBase | None
) -> tuple[list[CallView], Summary]:
    """All call views plus the totals shown at the top."""
    calls = [call_view(r, tokenizer, i) for i, r in enumerate(records)]
    summary = Summary(calls=len(calls), traces=len({c.trace_id for c in calls}))
    for c in calls:
        for kind in KINDS:
            summary.totals[kind] += c.count(kind)
        summary.statuses[c.status] = summary.statuses.get(c.status, 0) + 1
        if c.reward is not None:
            summary.rewards.append(c.reward)
    return calls, summary
