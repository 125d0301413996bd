"""``otel-tokenfix inspect``: look at a triplets file token by token (terminal or one HTML page)."""

from __future__ import annotations

from .model import CallView, Piece, Summary, build, call_view, read_records, token_pieces

__all__ = ["CallView", "Piece", "Summary", "build", "call_view", "read_records", "token_pieces", "resolve_tokenizer"]

#: names accepted by ``--tokenizer`` besides a path: the offline builtin vocabularies.
BUILTIN_TOKENIZERS = ("qwen2.5", "mistral-spm", "tekken")


def resolve_tokenizer(spec: str | None):  # noqa: ANN201 - a transformers tokenizer or None
    """A path (directory, tokenizer.json, *.model) or a builtin name; ``None`` shows token ids."""
    if not spec:
        return None
    from pathlib import Path

    if Path(spec).expanduser().exists():
        from ..tokenizers import load_tokenizer

        return load_tokenizer(spec)
    from ..engine.correction import TokenFixError
    from ..tokenizers import builtin

    builders = {
        "qwen2.5": builtin.qwen_tokenizer,
        "qwen": builtin.qwen_tokenizer,
        "mistral-spm": builtin.mistral_spm_tokenizer,
        "tekken": builtin.tekken_tokenizer,
    }
    if spec in builders:
        return builders[spec]()
    raise TokenFixError(f"no tokenizer at {spec!r} (give a directory/file or one of {', '.join(BUILTIN_TOKENIZERS)})")
