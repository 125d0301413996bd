"""Token-level edits and chains: LCS with moved runs, provenance relative to the sampled ids."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_tokenfix.engine import TokenFixError, correct_text, correct_tokens
from otel_tokenfix.engine.diff import diff_ids, diff_text

from .engine_helpers import assert_consistent, canonical, decode


def test_delete_insert_keep():
    ids = [10, 11, 12, 13, 14, 15]
    lp = [-0.1, -0.2, -0.3, -0.4, -0.5, -0.6]
    c = correct_tokens(ids, [10, 11, 99, 14, 15], logprobs=lp)
    assert c.token_ids == [10, 11, 99, 14, 15]
    assert c.provenance == ["sampled", "sampled", "inserted", "shifted", "shifted"]
    assert c.source_index == [0, 1, None, 4, 5]
    assert c.logprobs == [-0.1, -0.2, None, -0.5, -0.6]
    assert c.removed == 2 and c.method == "tokens"


def test_moved_run_counts_as_shifted():
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    c = correct_tokens(ids, [5, 6, 7, 8, 1, 2, 3, 4])
    assert c.removed == 0 and c.inserted == 0
    assert sorted(c.source_index) == list(range(8))
    assert c.source_index[:4] == [4, 5, 6, 7] or c.source_index[4:] == [0, 1, 2, 3]
    assert "inserted" not in c.provenance
    assert_consistent(c, ids)


def test_single_token_moved():
    ids = [1, 2, 3, 4]
    c = correct_tokens(ids, [4, 1, 2, 3])
    assert c.removed == 0 and sorted(c.source_index) == [0, 1, 2, 3]


def test_unchanged_tokens():
    c = correct_tokens([1, 2, 3], [1, 2, 3])
    assert c.method == "unchanged" and c.provenance == ["sampled"] * 3


def test_bad_token_input():
    with pytest.raises(TokenFixError):
        correct_tokens([1, 2], ["x"])  # type: ignore[list-item]
    with pytest.raises(TokenFixError):
        correct_tokens([1, 2], [1, -2])
    with pytest.raises(TokenFixError):
        correct_tokens([1, 2], [1], logprobs=[0.0])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    a=st.lists(st.integers(0, 30), max_size=60),
    ops=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 59), st.integers(0, 30)), max_size=8),
)
def test_token_edit_properties(a, ops):
    b = list(a)
    for kind, pos, val in ops:
        pos = pos % (len(b) + 1)
        if kind == 0:
            b.insert(pos, val)
        elif kind == 1 and b:
            del b[pos % len(b)]
        elif b:
            j = pos % len(b)
            b[j] = val
    lp = [-float(i) for i in range(len(a))]
    c = correct_tokens(a, b, logprobs=lp)
    assert c.token_ids == b
    assert_consistent(c, a, lp)
    # At least the LCS of a and b is kept.
    from rapidfuzz.distance import Indel

    lcs = (len(a) + len(b) - Indel.distance(a, b)) // 2
    assert len(a) - c.removed >= lcs


def test_diff_is_near_linear_on_long_inputs():
    """Scattered edits in 100k ids / 200k chars: the coarse-to-fine diff finds exactly the edits."""
    rng = random.Random(3)
    a = [rng.randrange(5000) for _ in range(100_000)]
    b = list(a)
    for k in range(10):
        i = 10_000 * k + 77
        b[i] = 6000 + k
    regions = diff_ids(a, b)
    assert [(r[0], r[1]) for r in regions] == [(10_000 * k + 77, 10_000 * k + 78) for k in range(10)]
    s = "".join(rng.choice("abc de\n") for _ in range(200_000))
    t = s[:5000] + "XYZ" + s[5003:150_000] + "Q" + s[150_000:]
    regions = diff_text(s, t)
    assert sum(r[1] - r[0] for r in regions) <= 4 and sum(r[3] - r[2] for r in regions) == 4


def test_chain_text_then_tokens_then_text(qwen):
    ids = canonical(qwen, "Step one. Step two. Step three.") + [151645]
    lp = [-0.01 * i for i in range(len(ids))]
    c1 = correct_text(qwen, ids, "Step one. Step 2. Step three.", logprobs=lp)
    c2 = c1.then_tokens(c1.token_ids[:-1][::-1][:0] + c1.token_ids)  # a no-op token edit
    assert c2.token_ids == c1.token_ids and c2.source_index == c1.source_index
    c3 = c2.then_text(qwen, "Step one. Step 2. Step three. Step four.")
    assert decode(qwen, c3.token_ids) == "Step one. Step 2. Step three. Step four."
    assert c3.edits == 3
    assert c3.original_ids == ids
    assert_consistent(c3, ids, lp)
    # The unedited first sentence is still exactly on-policy.
    first = canonical(qwen, "Step one.")
    assert c3.provenance[: len(first)] == ["sampled"] * len(first)
    assert c3.logprobs[: len(first)] == lp[: len(first)]


def test_chain_undo_returns_to_original(mistral_spm):
    tok = mistral_spm
    ids = canonical(tok, "The quick brown fox.")
    c = correct_text(tok, ids, "The slow brown fox.").then_text(tok, "The quick brown fox.")
    assert decode(tok, c.token_ids) == "The quick brown fox."
    assert c.edits == 2 and c.token_ids == ids
    assert c.removed == 0 and c.provenance == ["sampled"] * len(ids)  # the undo restores the origin


def test_diff_is_deterministic_across_processes():
    """Chunk boundaries must not depend on Python's per-process string hash salt."""
    import subprocess
    import sys

    code = (
        "import random\n"
        "from otel_tokenfix.engine.diff import diff_text\n"
        "rng = random.Random(4)\n"
        "lines = [' '.join(rng.choice(['alpha', 'beta', 'gamma', 'delta']) for _ in range(6)) for _ in range(4000)]\n"
        "a = '\\n'.join(lines)\n"
        "for k in range(0, 4000, 400):\n"
        "    lines[k + 7] = lines[k + 7].replace('beta', 'BETA', 1) + ' gamma'\n"
        "print(diff_text(a, '\\n'.join(lines)))\n"
        "from otel_tokenfix.engine.diff import _cdc\n"
        "print([len(c) for c in _cdc(32, 128)(lines)])\n"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1 and outs.pop().count("(") >= 10  # same regions and same chunk boundaries
