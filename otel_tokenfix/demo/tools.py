"""The demo agent's one tool: a tiny word-overlap retriever over the scripted corpus."""

from __future__ import annotations

import re

from .script import CORPUS

_WORD = re.compile(r"[a-z0-9]+")


def search(query: str, k: int = 2) -> list[tuple[str, str]]:
    """Rank the corpus by word overlap with the query (a real, if tiny, retriever)."""
    q = set(_WORD.findall(query.lower()))
    scored = [(len(q & set(_WORD.findall(text.lower()))), doc_id, text) for doc_id, text in CORPUS]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [(doc_id, text) for score, doc_id, text in scored[:k] if score > 0]
