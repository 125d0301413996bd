"""The triplet record: one LLM call (or one merged trajectory) as RL training data.

Why a plain dataclass with its own JSON shape: the SDK exporter, the OTLP service and the file converter
all write the same record, and trainers read it without importing us. The shape is documented in
``docs/triplets.md`` and ``docs/triplet.schema.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..trace.view import CheckedList

MaskPolicy = Literal["kept", "sampled", "all"]
MASK_POLICIES: tuple[str, ...] = ("kept", "sampled", "all")

#: Provenance codes in records (same as on spans): 0 inserted, 1 sampled, 2 shifted.
INSERTED, SAMPLED, SHIFTED = 0, 1, 2
_NAMES_TO_CODES = {"inserted": INSERTED, "sampled": SAMPLED, "shifted": SHIFTED}
_CODES = frozenset((INSERTED, SAMPLED, SHIFTED))


try:  # optional speed-up (see TripletRecord.to_json)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

#: one encoder for every record (``json.dumps`` with options builds a new one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


_FLOAT_OR_NONE = frozenset((float, type(None)))


def _same(value: Any) -> Any:
    return value


def provenance_codes(provenance: Sequence[Any]) -> list[int]:
    """Normalise provenance given as names (``"sampled"``) or codes (``1``) to codes.

    Why the set passes: a response has thousands of tokens but at most three distinct values, so the
    checks run over ``set(...)`` / ``map(type, ...)`` in C and only odd inputs take the per-token loop."""
    values = list(provenance)  # a copy: records never alias the caller's lists
    if not values or provenance.__class__ is CheckedList:  # the corrector's codes: ints 0-2 by construction
        return values
    distinct = set(values)
    if distinct <= _CODES and set(map(type, values)) == {int}:  # the common case: plain int codes
        return values
    if not isinstance(values[0], str) and distinct <= _CODES:
        return [int(v) for v in values]
    if all(isinstance(v, str) for v in distinct):
        unknown = distinct - _NAMES_TO_CODES.keys()
        if unknown:
            raise KeyError(next(iter(unknown)))
        return [_NAMES_TO_CODES[p] for p in values]
    if not isinstance(values[0], str):
        bad = next(v for v in values if v not in _CODES)
        raise ValueError(f"unknown provenance code {bad!r}")
    out: list[int] = []
    for p in values:
        if isinstance(p, str):
            out.append(_NAMES_TO_CODES[p])
        else:
            code = int(p)
            if code not in _CODES:
                raise ValueError(f"unknown provenance code {p!r}")
            out.append(code)
    return out


#: byte -> mask value tables: ``bytes(codes).translate(table)`` maps a whole response in C
_KEPT_TABLE = bytes([0] + [1] * 255)
_SAMPLED_TABLE = bytes([0, 1] + [0] * 254)


def build_mask(provenance: Sequence[int], policy: str = "kept") -> list[int]:
    """Training mask for a response under a policy.

    ``kept``: sampled and shifted tokens 1, inserted 0 (train every token the model actually produced);
    ``sampled``: only tokens before the first edit (exactly on-policy: their context is unchanged);
    ``all``: every token (the edit is trained as if sampled, like re-tokenizing trainers do).

    Codes that fit a byte are mapped in C (``bytes.translate``); anything else per token, with the same result.
    """
    if policy == "kept":
        if INSERTED not in provenance:  # most calls: nothing inserted (C-speed scan)
            return [1] * len(provenance)
        try:
            return list(bytes(provenance).translate(_KEPT_TABLE))
        except (TypeError, ValueError):  # not ints in 0..255 (floats, other codes): the general path
            return [0 if p == INSERTED else 1 for p in provenance]
    if policy == "sampled":
        try:
            return list(bytes(provenance).translate(_SAMPLED_TABLE))
        except (TypeError, ValueError):
            return [1 if p == SAMPLED else 0 for p in provenance]
    if policy == "all":
        return [1] * len(provenance)
    raise ValueError(f"unknown mask policy {policy!r}; expected one of {MASK_POLICIES}")


def normalize_log_probs(log_probs: Sequence[Any] | None, length: int) -> list[float | None] | None:
    """Log-probs of exactly ``length`` entries (None for positions without one), or None.

    Why so strict: agent-lightning v1.0 silently drops log-probs whose length differs from the response;
    a wrong-length list is worse than none, so we never emit one. NaN (how spans mark inserted
    positions) and infinities (not valid JSON) become None.
    """
    if log_probs is None or len(log_probs) != length:
        return None
    if log_probs.__class__ is CheckedList:  # floats or None by construction: only the finiteness pass
        if math.isfinite(sum(filter(None, log_probs))):
            return list(log_probs)
        isfinite = math.isfinite
        return [None if v is None or not isfinite(v) else v for v in log_probs]
    # fast path (C passes only): floats and None (a corrected call's inserted positions) whose non-None
    # values have a finite sum hold no NaN or infinity; only other inputs take the per-token loop
    types = set(map(type, log_probs))
    if types <= _FLOAT_OR_NONE and math.isfinite(sum(filter(None, log_probs))):
        return list(log_probs)
    isfinite = math.isfinite
    return [None if v is None or not isfinite(v) else float(v) for v in log_probs]


@dataclass
class TripletRecord:
    """One training row. ``index`` is the call's (or trajectory's) position in its trace, in call order."""

    trace_id: str
    span_id: str
    index: int
    prompt_ids: list[int]
    response_ids: list[int]
    mask: list[int]
    provenance: list[int]
    log_probs: list[float | None] | None = None
    reward: float | None = None
    text: str | None = None
    rollout_id: str | None = None
    attempt_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: per token, index into ``metadata.original_token_ids`` (None: inserted); only on corrected calls
    source_index: list[int | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.response_ids)
        if len(self.mask) != n or len(self.provenance) != n:
            raise ValueError("mask and provenance must have the response's length")
        if self.log_probs is not None and len(self.log_probs) != n:
            raise ValueError("log_probs must have the response's length or be None")
        if self.source_index is not None and len(self.source_index) != n:
            raise ValueError("source_index must have the response's length or be None")

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity used for de-duplication when a sink retries."""
        return (self.trace_id, self.span_id, self.index)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape (see docs/triplet.schema.json)."""
        return self._shape(list, dict)

    def _shape(self, seq: Any, mapping: Any) -> dict[str, Any]:
        """``to_dict`` with the containers passed through ``seq`` / ``mapping`` (copies, or as they are
        for :meth:`to_json`, which only reads them)."""
        d: dict[str, Any] = {"trace_id": self.trace_id, "span_id": self.span_id}
        if self.rollout_id is not None:
            d["rollout_id"] = self.rollout_id
        if self.attempt_id is not None:
            d["attempt_id"] = self.attempt_id
        d["index"] = self.index
        d["prompt"] = {"token_ids": seq(self.prompt_ids)}
        response: dict[str, Any] = {
            "token_ids": seq(self.response_ids),
            "log_probs": None if self.log_probs is None else seq(self.log_probs),
            "mask": seq(self.mask),
            "provenance": seq(self.provenance),
        }
        if self.source_index is not None:
            response["source_index"] = seq(self.source_index)
        if self.text is not None:
            response["text"] = self.text
        d["response"] = response
        d["reward"] = self.reward
        d["metadata"] = mapping(self.metadata)
        return d

    def to_json(self) -> str:
        """One line of JSON (no NaN: log-probs use null), without container copies. With ``orjson``
        installed it encodes (about 10x faster than the stdlib on 1k-token records; the same JSON values,
        floats may be spelled differently, e.g. ``1e-5``); anything it refuses (ints over 64 bits,
        non-string keys) goes through the stdlib encoder."""
        shape = self._shape(_same, _same)
        if _orjson is not None:
            try:
                return _orjson.dumps(shape).decode()
            except TypeError:  # orjson.JSONEncodeError is a TypeError
                pass
        return _ENCODER.encode(shape)

    def to_json_line(self) -> bytes:
        """:meth:`to_json` + newline as UTF-8 bytes, what a JSONL sink writes (no str round trip: orjson
        encodes to bytes)."""
        if _orjson is not None:
            try:
                return _orjson.dumps(self._shape(_same, _same), option=_orjson.OPT_APPEND_NEWLINE)
            except TypeError:
                pass
        return (self.to_json() + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TripletRecord:
        """Inverse of :meth:`to_dict` (for readers of JSONL files and the service's tests)."""
        resp = d["response"]
        return cls(
            trace_id=d["trace_id"],
            span_id=d["span_id"],
            index=int(d["index"]),
            prompt_ids=list(d["prompt"]["token_ids"]),
            response_ids=list(resp["token_ids"]),
            mask=list(resp["mask"]),
            provenance=list(resp["provenance"]),
            log_probs=None if resp.get("log_probs") is None else list(resp["log_probs"]),
            reward=d.get("reward"),
            text=resp.get("text"),
            rollout_id=d.get("rollout_id"),
            attempt_id=d.get("attempt_id"),
            metadata=dict(d.get("metadata") or {}),
            source_index=None if resp.get("source_index") is None else list(resp["source_index"]),
        )

    @classmethod
    def from_json(cls, line: str) -> TripletRecord:
        return cls.from_dict(json.loads(line))


def read_jsonl(path: str | os.PathLike[str], *, strict: bool = False) -> Iterator[TripletRecord]:
    """Records of a triplets JSONL file, in file order. A line that is not a whole record (a file still
    being written, a foreign line) is skipped, or raises with ``strict=True``."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield TripletRecord.from_json(line)
            except (ValueError, KeyError, TypeError) as exc:
                if strict:
                    raise ValueError(f"{path}:{n}: not a triplet record: {exc}") from exc
