"""Tokenizer shapes the three real vocabularies do not cover, trained in a moment with ``tokenizers``:
a Unigram model with a Metaspace decoder (dummy prefix stripped by the decoder itself) and a byte-level BPE
whose pre-tokenizer adds a prefix space (its own encode does not round-trip). Exactness must hold."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from otel_tokenfix.engine import TokenFixError, correct_text

from .engine_helpers import assert_consistent, decode

CORPUS = ["the quick brown fox jumps over the lazy dog.", "hello world, tokens and spans!", "a b c  d\n"] * 40
ALPHABET = "the quick brown fox jumps over lazy dog hello world, tokens and spans!.\n  abcd"


@pytest.fixture(scope="module")
def tiny_unigram():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<unk>", "</s>"], unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tiny_bytelevel():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("name", ["tiny_unigram", "tiny_bytelevel"])
def test_random_edits_exact(request, name):
    tok = request.getfixturevalue(name)
    rng = random.Random(5)
    for _ in range(150):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 60)))
        ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        # (raw view of the Unigram model: the trained alphabet has no '<' to write a cut '</s>' as text)
        view = rng.choice(["content", "raw"]) if name == "tiny_bytelevel" else "content"
        shown = decode(tok, ids, view)
        i = rng.randrange(len(shown) + 1)
        j = min(len(shown), i + rng.randrange(0, 6))
        edited = shown[:i] + "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 5))) + shown[j:]
        c = correct_text(tok, ids, edited, view=view)
        assert decode(tok, c.token_ids, view) == edited
        assert_consistent(c, ids)


def test_unigram_unknown_char_is_a_clear_error(tiny_unigram):
    """No byte fallback and no piece for the character: the text cannot be written exactly."""
    ids = tiny_unigram.encode("hello world", add_special_tokens=False)
    with pytest.raises(TokenFixError, match="exactly"):
        correct_text(tiny_unigram, ids, "hello 日本")


def test_unigram_raw_view_unwritable_text_is_a_clear_error(tiny_unigram):
    ids = tiny_unigram.encode("hello world", add_special_tokens=False) + [tiny_unigram.eos_token_id]
    raw = decode(tiny_unigram, ids, "raw")
    assert raw.endswith("</s>")
    with pytest.raises(TokenFixError):
        correct_text(tiny_unigram, ids, raw[:-1], view="raw")  # '</s' as text: '<' is not in the vocabulary


def test_legacy_spm_normalizer_variant(mistral_spm):
    """Older Llama/Mistral tokenizer.json files prepend '▁' and replace spaces in the normalizer (no
    pre-tokenizer): the exact encoder drops the Prepend and keeps the Replace; canonical in, canonical out."""
    import json

    spec = json.loads(mistral_spm.backend_tokenizer.to_str())
    spec["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    spec["pre_tokenizer"] = None
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<s>", eos_token="</s>"
    )
    rng = random.Random(2)
    for _ in range(80):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 40)))
        ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        shown = decode(tok, ids)
        i = rng.randrange(len(shown) + 1)
        edited = shown[:i] + rng.choice(["", " ", "x", " new words", "\n"]) + shown[min(len(shown), i + 3) :]
        c = correct_text(tok, ids, edited)
        assert decode(tok, c.token_ids) == edited
        if decode(tok, ids) == text and decode(tok, tok.encode(edited, add_special_tokens=False)) == edited:
            assert c.token_ids[:-1] == tok.encode(edited, add_special_tokens=False)


def fresh_bytelevel(normalizer=None) -> PreTrainedTokenizerFast:
    """A newly trained byte-level BPE (no engine table yet), optionally behind ``normalizer``."""
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_concurrent_first_use_builds_one_table():
    """Threads correcting with a fresh tokenizer at once: one table, every result exact."""
    from concurrent.futures import ThreadPoolExecutor

    from otel_tokenfix.engine.table import get_table

    fast = fresh_bytelevel()
    ids = fast.encode("the quick brown fox jumps over the lazy dog.", add_special_tokens=False)

    def work(k: int) -> tuple[bool, int]:
        edited = f"the quick brown fox number {k} jumps over the lazy dog."
        c = correct_text(fast, ids, edited)
        return decode(fast, c.token_ids) == edited, id(get_table(fast))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(24)))
    assert all(ok for ok, _ in results)
    assert len({t for _, t in results}) == 1


def test_lossy_normalizer_is_a_clear_error():
    """A lower-casing normalizer cannot write upper-case text: TokenFixError, never wrong ids."""
    fast = fresh_bytelevel(normalizers.Lowercase())
    ids = fast.encode("hello world", add_special_tokens=False)
    ok = correct_text(fast, ids, "hello big world")  # lower-case edits are fine
    assert decode(fast, ok.token_ids) == "hello big world"
    with pytest.raises(TokenFixError, match="normalizer"):
        correct_text(fast, ids, "Hello World")


def test_id_in_a_vocabulary_hole_is_rejected():
    """A vocabulary with a gap in its ids: an id in the gap is an error, the ids around it correct."""
    tok = Tokenizer(models.BPE(vocab={"\u2581": 0, "a": 1, "b": 2, "\u2581a": 4}, merges=[("\u2581", "a")]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    with pytest.raises(TokenFixError, match="not in the vocabulary"):
        correct_text(tok, [4, 3, 2], "ab")
    c = correct_text(tok, [4, 2], "abb")
    assert tok.decode(c.token_ids) == "abb" and c.token_ids[:2] == [4, 2]
