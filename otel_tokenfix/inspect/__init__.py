"""``otel-tokenfix inspect``: look at a triplets file token by token (terminal or one HTML page)."""

from __future__ import annotations

from .model import CallView, Piece, Summary, build, call_view, read_records, token_pieces

__all__ = ["CallView", "Piece", "Summary", "build", "call_view", "read_records", "token_pieces", "resolve_tokenizer"]

#: short names accepted by ``--tokenizer`` besides a path or ``builtin:<name>`` (the offline vocabularies).
BUILTIN_ALIASES = {"qwen2.5": "builtin:qwen", "qwen": "builtin:qwen", "mistral-spm": "builtin:mistral_spm"}
BUILTIN_ALIASES["tekken"] = "builtin:tekken"


def resolve_tokenizer(spec: str | None):  # noqa: ANN201 - a transformers tokenizer or None
    """A path (directory, tokenizer.json, ``*.model``), ``builtin:qwen|mistral_spm|tekken`` (the same specs
    as ``OTEL_TOKENFIX_TOKENIZERS``) or a short alias; ``None`` shows token ids instead of text."""
    if not spec:
        return None
    from pathlib import Path

    from ..engine.correction import TokenFixError
    from ..sdk.tokenizers import load_spec

    if not Path(spec).expanduser().exists() and not spec.startswith("builtin:"):
        if spec not in BUILTIN_ALIASES:
            names = ", ".join(sorted(BUILTIN_ALIASES))
            raise TokenFixError(f"no tokenizer at {spec!r} (give a directory/file, builtin:<name> or one of {names})")
        spec = BUILTIN_ALIASES[spec]
    return load_spec(spec)
