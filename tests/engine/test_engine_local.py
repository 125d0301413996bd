"""The local fast path (correct only a slice of ids around the changed bytes) gives exactly the result of
the whole-response path: same ids, source indices, provenance, logprobs, removed count and method."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_tokenfix.engine import text as engine_text
from otel_tokenfix.engine.table import get_table

from .engine_helpers import assert_consistent, decode
from .test_engine_properties import ALPHABET, WORDS, mutate, split_some

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
FILLER = (
    "The agent called the search tool, read the result and wrote an answer. "
    'Then {"name": "lookup", "arguments": {"q": "café", "k": 3}} came back. 日本語の文章です。\n'
)

middles = st.lists(st.one_of(st.sampled_from(ALPHABET), st.sampled_from(WORDS)), min_size=0, max_size=40).map(
    "".join
)


@contextmanager
def local_path(enabled: bool) -> Iterator[list[object]]:
    """Force the local path on (from any length) or off; yields the list of its results (None = declined)."""
    seen: list[object] = []
    orig_min, orig_share, orig_local = engine_text.LOCAL_MIN_IDS, engine_text.LOCAL_MAX_SHARE, engine_text._local

    def spy(*args: object, **kwargs: object) -> object:
        res = orig_local(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(res)
        return res

    engine_text.LOCAL_MIN_IDS = 0 if enabled else 10**12
    engine_text.LOCAL_MAX_SHARE = 1.0  # never declined for its size: the slice may be the whole response
    engine_text._local = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        engine_text.LOCAL_MIN_IDS, engine_text.LOCAL_MAX_SHARE = orig_min, orig_share
        engine_text._local = orig_local


def both(tok, ids, edited, **kw):
    with local_path(True) as seen:
        fast = engine_text.correct_text(tok, ids, edited, **kw)
    with local_path(False):
        full = engine_text.correct_text(tok, ids, edited, **kw)
    return fast, full, seen


def assert_same(fast, full) -> None:
    assert fast.token_ids == full.token_ids
    assert fast.source_index == full.source_index
    assert fast.provenance == full.provenance
    assert fast.logprobs == full.logprobs
    assert fast.removed == full.removed
    assert fast.method == full.method
    assert fast.original_ids == full.original_ids


TAKEN: list[bool] = []


@pytest.fixture(scope="module", params=["qwen", "tekken"])
def bytelevel(request):
    return request.getfixturevalue(request.param)


@SETTINGS
@given(
    middle=middles,
    seed=st.integers(0, 2**32 - 1),
    n_edits=st.integers(1, 3),
    view=st.sampled_from(["content", "raw"]),
    non_canonical=st.booleans(),
    hidden_inside=st.booleans(),
)
def test_local_equals_whole_response_path(bytelevel, middle, seed, n_edits, view, non_canonical, hidden_inside):
    tok = bytelevel
    table = get_table(tok)
    rng = random.Random(seed)
    text = FILLER * rng.randrange(0, 4) + middle + FILLER * rng.randrange(0, 4)
    ids = tok.encode(text, add_special_tokens=False)
    if non_canonical:
        ids = split_some(tok, ids, rng, rate=0.2)
    special = next(i for i in range(table.size - 1, 0, -1) if table.hidden[i])
    if hidden_inside and ids:
        ids.insert(rng.randrange(len(ids) + 1), special)
    ids = ids + [special]
    edited = decode(tok, ids, view)
    for _ in range(n_edits):
        edited = mutate(rng, edited)
    logprobs = [-rng.random() for _ in ids] if rng.random() < 0.5 else None
    fast, full, seen = both(tok, ids, edited, logprobs=logprobs, view=view)
    TAKEN.append(bool(seen) and seen[0] is not None)
    assert decode(tok, fast.token_ids, view) == edited
    assert_consistent(fast, ids, logprobs)
    assert_same(fast, full)


def test_local_path_was_exercised():
    """The equivalence property above really ran the local path (it declines only on invalid UTF-8, or
    when no splice is proven)."""
    if not TAKEN:
        pytest.skip("run together with test_local_equals_whole_response_path")
    assert sum(TAKEN) >= 0.8 * len(TAKEN)


def test_local_path_taken_on_a_long_response(qwen):
    """A one-word edit in a ~4k-token response goes through the local path and keeps every other token."""
    rng = random.Random(7)
    ids = qwen.encode(FILLER * 120, add_special_tokens=False)[:4000] + [151645]
    text = decode(qwen, ids)
    for _ in range(5):
        i = text.index(" ", rng.randrange(len(text) - 50))
        edited = text[:i] + " EDITED" + text[i:]
        lp = [-0.5] * len(ids)
        fast, full, seen = both(qwen, ids, edited, logprobs=lp)
        assert seen and seen[0] is not None, "the local path declined"
        assert_same(fast, full)
        assert decode(qwen, fast.token_ids) == edited
        assert fast.token_ids[-1] == 151645 and fast.source_index[-1] == len(ids) - 1
        assert fast.removed <= 2 and fast.method == "splice"
        first = fast.provenance.index("inserted")
        assert fast.provenance[:first] == ["sampled"] * first
        assert set(fast.provenance[first:]) <= {"inserted", "shifted"}


def test_local_unchanged_text(qwen):
    ids = qwen.encode(FILLER * 20, add_special_tokens=False) + [151645]
    lp = [-0.25] * len(ids)
    fast, full, seen = both(qwen, ids, decode(qwen, ids), logprobs=lp)
    assert seen[0] is not None
    assert_same(fast, full)
    assert fast.method == "unchanged" and fast.token_ids == ids and fast.provenance == ["sampled"] * len(ids)


def test_local_declines_for_sentencepiece(mistral_spm):
    """SentencePiece (dummy-prefix strip, byte-fallback runs) always takes the whole-response path."""
    ids = mistral_spm.encode(FILLER * 10, add_special_tokens=False)
    edited = decode(mistral_spm, ids).replace("search", "find", 1)
    fast, full, seen = both(mistral_spm, ids, edited)
    assert seen == []
    assert_same(fast, full)
