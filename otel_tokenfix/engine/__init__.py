"""The token engine: pure functions over a tokenizer and ids (no OpenTelemetry here).

- ``correct_text(tokenizer, token_ids, edited_text, *, logprobs=None, view="content") -> Correction``
- ``correct_tokens(token_ids, edited_token_ids, *, logprobs=None) -> Correction``
- ``Correction.then_text(...)`` / ``Correction.then_tokens(...)`` chain further edits.
"""

from __future__ import annotations

from typing import Any

from .correction import INSERTED, PROVENANCE_CODES, SAMPLED, SHIFTED, Correction, TokenFixError
from .text import correct_text
from .tokens import correct_tokens

__all__ = [
    "INSERTED",
    "PROVENANCE_CODES",
    "SAMPLED",
    "SHIFTED",
    "Correction",
    "TokenFixError",
    "correct_text",
    "correct_tokens",
    "load_tokenizer",
]


def __getattr__(name: str) -> Any:
    # Lazy: tokenizers.load imports engine.correction, so an eager import here would be circular.
    if name == "load_tokenizer":
        from ..tokenizers.load import load_tokenizer

        return load_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
