"""The result type of the token engine: corrected ids with per-token provenance.

Why a value and not side effects: the engine is pure; the span processor, the triplet exporter and the
OTLP service all read the same ``Correction`` and decide themselves what to log, count or export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

Provenance = Literal["sampled", "shifted", "inserted"]
View = Literal["content", "raw"]

SAMPLED: Provenance = "sampled"
SHIFTED: Provenance = "shifted"
INSERTED: Provenance = "inserted"

#: Integer codes used on spans (``tokenfix.response.provenance``) and in triplets.
PROVENANCE_CODES: dict[str, int] = {INSERTED: 0, SAMPLED: 1, SHIFTED: 2}


class TokenFixError(ValueError):
    """The one exception the engine raises for bad input (ids out of vocabulary, an unusable tokenizer,
    an unknown view). Anything else escaping the engine is a bug."""


@dataclass(frozen=True)
class Correction:
    """Corrected token ids and where each came from.

    ``source_index[i]`` is the index into the *originally sampled* ids of token ``i`` (``None`` for
    inserted tokens), also across chains of edits. ``method`` says how the result was obtained:
    ``unchanged``, ``splice`` (minimal windows), ``widened`` (windows had to grow), ``reencode`` (full
    re-encode with LCS provenance: the fallback), ``tokens`` (token-level edit).
    """

    token_ids: list[int]
    provenance: list[Provenance]
    source_index: list[int | None]
    logprobs: list[float | None] | None
    removed: int
    method: str
    original_ids: list[int] = field(default_factory=list, repr=False)
    original_logprobs: list[float] | None = field(default=None, repr=False)
    edits: int = 1
    text: str | None = None

    @property
    def kept(self) -> int:
        return len(self.source_index) - self.source_index.count(None)  # list.count: a C loop

    @property
    def inserted(self) -> int:
        return self.source_index.count(None)

    @property
    def provenance_codes(self) -> list[int]:
        return list(map(PROVENANCE_CODES.__getitem__, self.provenance))  # C-speed loop (~2x a comprehension)

    def then_text(self, tokenizer: PreTrainedTokenizerBase, edited_text: str, *, view: View = "content") -> Correction:
        """Apply a further text edit; provenance stays relative to the originally sampled ids."""
        from .chain import chain_text

        return chain_text(self, tokenizer, edited_text, view=view)

    def then_tokens(self, edited_token_ids: Sequence[int]) -> Correction:
        """Apply a further token-level edit; provenance stays relative to the originally sampled ids."""
        from .chain import chain_tokens

        return chain_tokens(self, edited_token_ids)
