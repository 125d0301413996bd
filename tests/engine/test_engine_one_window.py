"""The one-window path (``_one_window``: all changes in one window, spliced straight on the whole response)
gives exactly the result of the whole-response path: same ids, source indices, provenance, log-probs,
removed count and method; it declines (general path) whenever its assumptions do not hold."""

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
from .test_engine_local import FILLER, assert_same, local_path
from .test_engine_properties import ALPHABET, WORDS, mutate, split_some

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

middles = st.lists(st.one_of(st.sampled_from(ALPHABET), st.sampled_from(WORDS)), min_size=0, max_size=40).map("".join)


@contextmanager
def one_window_spy() -> Iterator[list[object]]:
    """Record what the one-window path returned on each call (None = declined)."""
    seen: list[object] = []
    orig = engine_text._one_window

    def spy(*args: object, **kwargs: object) -> object:
        res = orig(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(res)
        return res

    engine_text._one_window = spy  # type: ignore[assignment]
    try:
        yield seen
    finally:
        engine_text._one_window = orig


def fast_and_whole(tok, ids, edited, **kw):
    with local_path(True), one_window_spy() as seen:
        fast = engine_text.correct_text(tok, ids, edited, **kw)
    with local_path(False):
        whole = engine_text.correct_text(tok, ids, edited, **kw)
    return fast, whole, seen


TAKEN: list[bool] = []


@pytest.fixture(scope="module", params=["qwen", "tekken", "mistral_spm"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


@SETTINGS
@given(
    middle=middles,
    seed=st.integers(0, 2**32 - 1),
    n_edits=st.integers(1, 2),
    view=st.sampled_from(["content", "raw"]),
    non_canonical=st.booleans(),
    hidden_inside=st.sampled_from([False, False, False, True]),
    canonical=st.sampled_from([True, True, True, False]),
    with_logprobs=st.booleans(),
)
def test_one_window_equals_whole_response_path(
    tokenizer, middle, seed, n_edits, view, non_canonical, hidden_inside, canonical, with_logprobs
):
    tok = tokenizer
    table = get_table(tok)
    rng = random.Random(seed)
    text = FILLER * rng.randrange(0, 3) + middle + FILLER * rng.randrange(0, 3)
    ids = tok.encode(text, add_special_tokens=False)
    if non_canonical:
        ids = split_some(tok, ids, rng, rate=0.2)
    special = next(i for i in range(table.size - 1, 0, -1) if table.hidden[i])
    if hidden_inside and ids:
        ids.insert(rng.randrange(len(ids) + 1), special)
    if rng.random() < 0.3:
        ids = [special] + ids  # a leading hidden token (the visible run starts later)
    ids = ids + [special]
    edited = decode(tok, ids, view)
    for _ in range(n_edits):
        edited = mutate(rng, edited)
    logprobs = [-rng.random() for _ in ids] if with_logprobs else None
    fast, whole, seen = fast_and_whole(tok, ids, edited, logprobs=logprobs, view=view, canonical=canonical)
    if table.kind == "bytelevel":
        TAKEN.append(bool(seen) and seen[0] is not None)
    else:
        assert seen == []  # SentencePiece never takes the local paths
    assert decode(tok, fast.token_ids, view) == edited
    assert_consistent(fast, ids, logprobs)
    assert_same(fast, whole)
    assert fast.text == whole.text and fast.edits == whole.edits == 1


def test_one_window_path_was_exercised():
    """The property above really ran the one-window path on the byte-level tokenizers."""
    if not TAKEN:
        pytest.skip("run together with test_one_window_equals_whole_response_path")
    assert sum(TAKEN) >= 0.5 * len(TAKEN), (sum(TAKEN), len(TAKEN))


@pytest.mark.parametrize("name", ["qwen", "tekken"])
def test_one_window_on_word_edits_of_a_long_response(request, name):
    """Word replacements, insertions and deletions in a ~4k-token response (and two close edits): the
    one-window path answers, equal to the whole-response path, keeping every other token."""
    tok = request.getfixturevalue(name)
    rng = random.Random(11)
    ids = tok.encode(FILLER * 100, add_special_tokens=False)[:4000]
    text = decode(tok, ids)
    lp = [-0.5] * len(ids)
    answered = 0
    for k in range(30):
        i = text.index(" ", rng.randrange(len(text) - 80))
        j = text.index(" ", i + 1)
        if k % 4 == 0:
            edited = text[:i] + " EDITED" + text[i:]
        elif k % 4 == 1:
            edited = text[:i] + text[j:]
        elif k % 4 == 2:
            edited = text[:i] + " café" + text[j:]
        else:
            edited = text[:i] + " X" + text[i + 1 : j] + "Y" + text[j:]
        fast, whole, seen = fast_and_whole(tok, ids, edited, logprobs=lp)
        answered += bool(seen) and seen[0] is not None
        assert_same(fast, whole)
        assert decode(tok, fast.token_ids) == edited
        assert fast.removed <= 4
    assert answered >= 25, answered


def test_one_window_declines_for_scattered_edits(qwen):
    """Two edits far apart cannot be one window: the general path handles them (and agrees)."""
    ids = qwen.encode(FILLER * 20, add_special_tokens=False)
    text = decode(qwen, ids)
    edited = "A" + text[1:-1] + "Z"
    fast, whole, seen = fast_and_whole(qwen, ids, edited)
    assert seen and seen[0] is None
    assert_same(fast, whole)


@pytest.mark.parametrize("name", ["qwen", "tekken"])
def test_one_window_merges_close_regions_only(request, name):
    """Two word edits one word apart: their windows overlap, one window (the general path agrees). Four
    words apart: two windows, so the one-window path declines."""
    tok = request.getfixturevalue(name)
    text = "We saw alpha beta gamma delta epsilon zeta eta theta iota kappa lambda today.\n" * 3
    ids = tok.encode(text, add_special_tokens=False)
    close = text.replace("beta gamma delta", "BETA gamma DELTA", 1)
    fast, whole, seen = fast_and_whole(tok, ids, close)
    assert seen and seen[0] is not None
    assert_same(fast, whole)
    apart = text.replace("beta gamma delta epsilon zeta", "BETA gamma delta epsilon ZETA", 1)
    fast, whole, seen = fast_and_whole(tok, ids, apart)
    assert seen and seen[0] is None
    assert_same(fast, whole)
    assert decode(tok, fast.token_ids) == apart
