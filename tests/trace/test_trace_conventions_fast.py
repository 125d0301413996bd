"""The readers' fast paths (orjson, msgspec, memo per span) give exactly what the general path gives: the same
ids and logprobs as the stdlib-only reading, on every shape, including what orjson reads differently
(integers beyond 64 bits, NaN, lone surrogates) and what it refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trace_helpers import span

from otel_tokenfix.trace import conventions as cv

T = 0xABC

NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-50, max_value=0),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=151_935),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
)
ENTRY = st.one_of(
    st.fixed_dictionaries({"token": st.text(max_size=3), "logprob": NUMBER}),
    st.fixed_dictionaries({"token": st.text(max_size=3), "logprob": NUMBER,
                           "bytes": st.lists(st.integers(0, 255), max_size=3),
                           "top_logprobs": st.lists(st.fixed_dictionaries({"token": st.text(max_size=2),
                                                                           "logprob": NUMBER}), max_size=2)}),
    st.fixed_dictionaries({"token": st.text(max_size=3)}),  # no logprob
)
LOGPROBS = st.one_of(
    st.lists(ENTRY, max_size=20),
    st.lists(NUMBER, max_size=20),
    st.fixed_dictionaries({"content": st.lists(ENTRY, max_size=10)}),
    st.fixed_dictionaries({"token_logprobs": st.lists(NUMBER, max_size=10)}),
    st.lists(st.fixed_dictionaries({"token_ids": st.lists(st.integers(0, 99), max_size=5),
                                    "logprobs": st.fixed_dictionaries({"content": st.lists(ENTRY, max_size=5)})}),
             min_size=1, max_size=2),
)


def texts(value) -> list[str]:
    """The JSON spellings a sender may use (spacing, escaping) and a Python repr."""
    out = [json.dumps(value), json.dumps(value, separators=(",", ":"), ensure_ascii=False)]
    out.append(" " + out[0] + "\n")
    out.append(repr(value))
    return out


def general(monkeypatch: pytest.MonkeyPatch, read, value):
    """``read`` on a fresh span with orjson and msgspec switched off: the stdlib-only general path."""
    with monkeypatch.context() as m:
        m.setattr(cv, "_orjson", None)
        m.setattr(cv, "_LOGPROBS_DECODER", None)
        return read(value)


def read_lp(value, n=None):
    return cv.read_logprobs_with_key(span(T, attrs={"logprobs.content": value}), n)


def read_ids(value):
    s = span(T, attrs={"response_token_ids": value, "prompt_token_ids": value})
    got = cv.read_response_ids(s)
    return None if got is None else (got.ids, got.key, got.keys), cv.read_prompt_ids(s)


@settings(max_examples=400, deadline=None)
@given(LOGPROBS)
def test_logprobs_fast_path_equals_the_general_path(value):
    with pytest.MonkeyPatch.context() as mp:
        for text in texts(value):
            fast = read_lp(text)
            assert repr(fast) == repr(general(mp, read_lp, text))  # repr: NaN == NaN, -0.0 != 0.0


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=20),
    st.lists(st.integers(min_value=0, max_value=151_935), max_size=20),
    st.lists(st.one_of(st.integers(0, 99), st.floats(allow_nan=False), st.booleans(), st.none()), max_size=6),
    st.lists(st.lists(st.integers(0, 2**65), max_size=5), min_size=1, max_size=2),
    st.lists(st.fixed_dictionaries({"token_ids": st.lists(st.integers(0, 2**65), max_size=5)}), min_size=1,
             max_size=2),
))
def test_ids_fast_path_equals_the_general_path(value):
    with pytest.MonkeyPatch.context() as mp:
        for text in texts(value):
            assert read_ids(text) == general(mp, read_ids, text)


def test_what_orjson_reads_differently_is_read_exactly():
    big = 2**64 + 5  # orjson reads it as a float
    s = span(T, attrs={"response_token_ids": json.dumps([1, big]), "logprobs.content": json.dumps(
        [{"token": "a", "logprob": -(2**70)}, {"token": "b", "logprob": float("nan")}])})
    assert cv.read_response_ids(s).ids == [1, big]
    lp = cv.read_logprobs(s, 2)
    assert lp is not None and lp[0] == float(-(2**70)) and lp[1] != lp[1]
    assert cv.read_response_ids(span(T, attrs={"response_token_ids": '["\\ud800"]'})) is None


def test_memo_parses_once_and_hands_out_copies(monkeypatch):
    text = json.dumps([{"token": "", "logprob": -0.5}, {"token": "", "logprob": -1.0}])
    s = span(T, attrs={"logprobs.content": text, "response_token_ids": "[7, 8]", "prompt_token_ids": "[1]"})
    calls = []
    real = cv._parse_fast
    monkeypatch.setattr(cv, "_parse_fast", lambda v, m: calls.append(v) or real(v, m))
    real_lp = cv._logprobs_msgspec  # the log-probs are read by msgspec (their fast path) or parsed
    monkeypatch.setattr(cv, "_logprobs_msgspec", lambda v: calls.append(v) or real_lp(v))
    first = cv.read_logprobs(s, 2)
    first.append(99.0)  # a caller changing its list does not change the next reader's
    assert cv.read_logprobs(s, 2) == [-0.5, -1.0] and cv.read_logprobs(s, 3) is None
    ids = cv.read_response_ids(s)
    ids.ids.append(9)
    assert cv.read_response_ids(s).ids == [7, 8] and cv.read_prompt_ids(s) == [1] == cv.read_prompt_ids(s)
    assert sorted(calls) == sorted([text, "[7, 8]", "[1]"])  # each attribute parsed once
    # other conventions (other keys or limits) are read on their own
    narrow = cv.Conventions(max_ids=1)
    assert cv.read_response_ids(s, narrow) is None and cv.read_prompt_ids(s, narrow) == [1]
