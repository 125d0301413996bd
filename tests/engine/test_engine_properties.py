"""Property tests on the three real tokenizers: exactness, kept tokens, canonical in => canonical out."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otel_tokenfix.engine import correct_text
from otel_tokenfix.engine.table import get_table

from .engine_helpers import assert_consistent, canonical, decode, prefix_suffix_loss, roundtrips

ALPHABET = list("abcdefghij  ABC.,;:!?-'\"()[]{}0123\n\t") + ["é", "ü", "日", "本", "語", "😀", "e\u0301", "  ", "\n\n"]
WORDS = ["the", " the", " world", " Hello", "ing", " tokens", " 42", ' {"a": 1}', "日本", " 😀", "\n", "..."]
WORDS += [" <tool_call>"]

texts = st.lists(st.one_of(st.sampled_from(ALPHABET), st.sampled_from(WORDS)), min_size=0, max_size=40).map("".join)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def mutate(rng: random.Random, text: str) -> str:
    """One random edit: insert, delete or replace a span."""
    i = rng.randrange(len(text) + 1)
    j = min(len(text), i + rng.randrange(0, 8))
    piece = "".join(rng.choice(ALPHABET + WORDS) for _ in range(rng.randrange(0, 4)))
    return text[:i] + piece + text[j:]


def split_some(tok, ids: list[int], rng: random.Random, rate: float = 0.3) -> list[int]:
    """A non-canonical R: split some tokens into two valid sub-tokens with the same bytes."""
    table = get_table(tok)
    out: list[int] = []
    for t in ids:
        b = table.token_bytes[t]
        if b and len(b) > 1 and not table.added[t] and rng.random() < rate:
            k = rng.randrange(1, len(b))
            left, right = _piece(tok, b[:k]), _piece(tok, b[k:])
            if left is not None and right is not None:
                out.extend([left, right])
                continue
        out.append(t)
    return out


def _piece(tok, data: bytes) -> int | None:
    table = get_table(tok)
    for cand in _cands(tok, data):
        if table.token_bytes[cand] == data:
            return cand
    return None


def _cands(tok, data: bytes) -> list[int]:
    table = get_table(tok)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return []
    ids = table.encode(text)
    return ids if len(ids) == 1 else []


@SETTINGS
@given(text=texts, seed=st.integers(0, 2**32 - 1), non_canonical=st.booleans())
def test_exact_and_minimal_single_edit(any_tokenizer, text, seed, non_canonical):
    tok = any_tokenizer
    rng = random.Random(seed)
    ids = canonical(tok, text)
    if non_canonical:
        ids = split_some(tok, ids, rng)
    eos = tok.eos_token_id
    if eos is not None:
        ids = ids + [eos]
    original_text = decode(tok, ids)
    edited = mutate(rng, original_text)
    logprobs = [-rng.random() for _ in ids]
    c = correct_text(tok, ids, edited, logprobs=logprobs)
    assert decode(tok, c.token_ids) == edited
    assert_consistent(c, ids, logprobs)
    if eos is not None:
        assert c.token_ids[-1] == eos and c.source_index[-1] == len(ids) - 1
    if c.method == "splice":
        pre, suf = prefix_suffix_loss(tok, ids, c, edited)
        assert pre <= 2 and suf <= 2, (pre, suf, c.method)
    assert c.method != "reencode"


@SETTINGS
@given(text=texts, seed=st.integers(0, 2**32 - 1), n_edits=st.integers(1, 3))
def test_canonical_in_canonical_out(any_tokenizer, text, seed, n_edits):
    tok = any_tokenizer
    rng = random.Random(seed)
    ids = canonical(tok, text)
    assume(decode(tok, ids) == text)
    edited = text
    for _ in range(n_edits):
        edited = mutate(rng, edited)
    assume(roundtrips(tok, edited))
    c = correct_text(tok, ids, edited)
    assert decode(tok, c.token_ids) == edited
    assert c.token_ids == canonical(tok, edited), c.method


@SETTINGS
@given(text=texts, seed=st.integers(0, 2**32 - 1), n=st.integers(1, 8), view=st.sampled_from(["content", "raw"]))
def test_chains_stay_exact(any_tokenizer, text, seed, n, view):
    tok = any_tokenizer
    rng = random.Random(seed)
    ids = split_some(tok, canonical(tok, text), rng, 0.2)
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    logprobs = [-rng.random() for _ in ids]
    cur_text = decode(tok, ids, view)
    c = None
    for _ in range(n):
        cur_text = mutate(rng, cur_text)
        current = ids if c is None else c.token_ids
        step = correct_text(tok, current, cur_text, view=view)  # this edit alone, on the current ids
        if step.method == "splice":
            assert max(prefix_suffix_loss(tok, current, step, cur_text, view)) <= 2
        c = (
            correct_text(tok, ids, cur_text, logprobs=logprobs, view=view)
            if c is None
            else c.then_text(tok, cur_text, view=view)
        )
        assert c.token_ids == step.token_ids  # composing only re-labels provenance
        assert decode(tok, c.token_ids, view) == cur_text
        assert_consistent(c, ids, logprobs)
    assert c is not None and c.edits == n


@pytest.mark.parametrize("view", ["content", "raw"])
def test_many_random_edits_rarely_widen(any_tokenizer, view):
    """Over many deterministic random edits of a longer text: exact always, no full re-encode."""
    tok = any_tokenizer
    rng = random.Random(7)
    base = "".join(rng.choice(WORDS + ALPHABET) for _ in range(400))
    ids = canonical(tok, base)
    text = decode(tok, ids, view)
    methods: dict[str, int] = {}
    for _ in range(60):
        edited = mutate(rng, text)
        c = correct_text(tok, ids, edited, view=view)
        assert decode(tok, c.token_ids, view) == edited
        methods[c.method] = methods.get(c.method, 0) + 1
    assert methods.get("reencode", 0) == 0, methods
    assert methods.get("widened", 0) <= 6, methods


@SETTINGS
@given(text=texts, seed=st.integers(0, 2**32 - 1), view=st.sampled_from(["content", "raw"]))
def test_hidden_tokens_anywhere_stay_in_order(any_tokenizer, text, seed, view):
    """Special tokens sprinkled through the sampled ids: exact in both views; in the content view every
    one of them survives, in its original order."""
    tok = any_tokenizer
    rng = random.Random(seed)
    table = get_table(tok)
    specials = [i for i in range(min(table.size, 2000)) if table.hidden[i]][:3] or [0]
    ids = canonical(tok, text)
    for _ in range(rng.randrange(1, 4)):
        ids.insert(rng.randrange(len(ids) + 1), rng.choice(specials))
    edited = mutate(rng, mutate(rng, decode(tok, ids, view)))
    c = correct_text(tok, ids, edited, view=view)
    assert decode(tok, c.token_ids, view) == edited
    assert_consistent(c, ids)
    if view == "content":
        kept_hidden = [s for s, t in zip(c.source_index, c.token_ids, strict=True) if table.hidden[t]]
        assert kept_hidden == [i for i, t in enumerate(ids) if table.hidden[t]]
