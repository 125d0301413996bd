"""The log-prob reader's msgspec fast path gives exactly today's answer (orjson, then the stdlib) on every
text: generated JSON spelled every way a sender may spell it (number forms from subnormals to overflow,
integers past 64 bits, -0, escapes, duplicate and escaped keys, extra keys, bytes, nested top_logprobs,
whitespace, both top-level shapes) and broken variants of it; and the reader still works without msgspec."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trace_helpers import span

from otel_tokenfix.trace import conventions as cv

# the general path's ast.literal_eval warns on the invalid escapes of broken variants: expected here
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")

C = cv.DEFAULT_CONVENTIONS
T = 0xABC
EXAMPLES = int(os.environ.get("TOKENFIX_LOGPROBS_EXAMPLES", "300"))  # raise it for a long run


def read(value: str, *, msgspec: bool = True, orjson: bool = True) -> list[float] | None:
    """``_logprobs_from`` with the fast paths switched on or off, always from the same stack depth (the
    stdlib's answer on deep documents depends on the recursion budget left)."""
    saved = cv._LOGPROBS_DECODER, cv._orjson
    if not msgspec:
        cv._LOGPROBS_DECODER = None
    if not orjson:
        cv._orjson = None
    try:
        return cv._logprobs_from(value, C)
    finally:
        cv._LOGPROBS_DECODER, cv._orjson = saved


def assert_same(text: str) -> None:
    """With msgspec the answer is today's (msgspec off), bit for bit (``repr`` tells -0.0 from 0.0 and
    round-trips every float); with orjson and without it (the stdlib-only general path)."""
    for orjson in (True, False):
        assert repr(read(text, orjson=orjson)) == repr(read(text, msgspec=False, orjson=orjson)), text


# --- JSON text, spelled freely ------------------------------------------------------------------------
WS = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.17e}"),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:E}"),
    st.floats(min_value=-50, max_value=0).map(repr),
    st.sampled_from(["-0", "0", "-0.0", "0.0", "1e308", "1.7976931348623157e308", "1.7976931348623159e308",
                     "1e309", "-1e400", "1e-400", "-1e-400", "5e-324", "2.4703282292062327e-324",
                     "2.4703282292062328e-324", "2.2250738585072011e-308", "4.9406564584124654e-324",
                     "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                     "-9223372036854775809", "18446744073709551615", "18446744073709551616",
                     "1" + "0" * 400, "0." + "0" * 300 + "1e300", "1E+2", "1e-0", "1E00005"]),
    st.integers(-(2**70), 2**70).map(str),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?\Z"),
)
VALUE_TEXT = st.one_of(NUMBER_TEXT, st.sampled_from(["true", "false", "null", '"x"', '"-1.5"', "[]", "{}"]))
CHARS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=4)


def _string(text: str, draw) -> str:
    """A JSON string literal for ``text``, escaped ASCII-only or raw, with optional escaped '/'."""
    out = json.dumps(text, ensure_ascii=draw(st.booleans()))
    return out.replace("/", "\\/") if draw(st.booleans()) else out


@st.composite
def key(draw, name: str) -> str:
    """``name`` as a JSON key, sometimes with a \\uXXXX escape for one of its letters."""
    if draw(st.booleans()) and name:
        i = draw(st.integers(0, len(name) - 1))
        return '"' + name[:i] + f"\\u{ord(name[i]):04x}" + name[i + 1:] + '"'
    return json.dumps(name)


@st.composite
def obj(draw, members: list[tuple[str, str]]) -> str:
    """A JSON object from (key text, value text) pairs, spaced at random."""
    parts = [draw(WS) + k + draw(WS) + ":" + draw(WS) + v + draw(WS) for k, v in members]
    return "{" + ",".join(parts) + draw(WS) + "}"


@st.composite
def arr(draw, items: list[str]) -> str:
    return "[" + draw(WS) + ",".join(draw(WS) + i + draw(WS) for i in items) + draw(WS) + "]"


@st.composite
def any_json(draw, depth: int = 0) -> str:
    """Any small JSON value (what a skipped extra key may hold)."""
    if depth >= 3 or draw(st.booleans()):
        return draw(st.one_of(VALUE_TEXT, CHARS.map(json.dumps)))
    if draw(st.booleans()):
        return draw(arr([draw(any_json(depth + 1)) for _ in range(draw(st.integers(0, 3)))]))
    n = draw(st.integers(0, 3))
    return draw(obj([(draw(key(draw(CHARS))), draw(any_json(depth + 1))) for _ in range(n)]))


@st.composite
def entry(draw, top: bool = True) -> str:
    """An OpenAI/vLLM per-token entry: token, logprob (a number, mostly), bytes, top_logprobs, extra keys,
    in any order, sometimes a key twice or missing."""
    token = draw(CHARS)
    logprob = draw(NUMBER_TEXT) if draw(st.integers(0, 9)) else draw(VALUE_TEXT)
    members = [(draw(key("token")), _string(token, draw)), (draw(key("logprob")), logprob)]
    if draw(st.booleans()):
        members.append((draw(key("bytes")), draw(st.sampled_from(["null", draw(arr(
            [str(b) for b in token.encode()]))]))))
    if top and draw(st.booleans()):
        members.append((draw(key("top_logprobs")), draw(arr([draw(entry(top=False))
                                                                for _ in range(draw(st.integers(0, 5)))]))))
    if draw(st.integers(0, 4)) == 0:
        members.append((draw(key(draw(CHARS))), draw(any_json())))
    if draw(st.integers(0, 9)) == 0:  # a key twice: the last one counts
        members.append((draw(key("logprob")), draw(st.one_of(NUMBER_TEXT, VALUE_TEXT))))
    if draw(st.integers(0, 19)) == 0:
        members.pop(1)  # no logprob
    return draw(obj(draw(st.permutations(members))))


@st.composite
def document(draw) -> str:
    entries = draw(arr([draw(entry()) for _ in range(draw(st.integers(0, 12)))]))
    shape = draw(st.integers(0, 3))
    if shape == 0:
        doc = draw(obj([(draw(key("content")), entries)]
                       + ([(draw(key("refusal")), "null")] if draw(st.booleans()) else [])))
    elif shape == 1 and draw(st.booleans()):  # choices: [{"logprobs": {"content": [...]}}]
        doc = draw(arr([draw(obj([('"index"', "0"), ('"logprobs"', draw(obj([('"content"', entries)])))]))]))
    else:
        doc = entries
    return draw(WS) + doc + draw(WS)


MUTATION_CHARS = list('[]{},:"\\e-+.0 \x01\x00N\ud800\u00a0') + ["NaN", "Infinity", "tru", "\\u", "\\ud800"]


@st.composite
def broken(draw) -> str:
    """A document with a character deleted, inserted or replaced, or cut short."""
    text = draw(document())
    if not text:
        return text
    i = draw(st.integers(0, len(text) - 1))
    op = draw(st.integers(0, 3))
    piece = draw(st.sampled_from(MUTATION_CHARS))
    return [text[:i] + text[i + 1:], text[:i] + piece + text[i:], text[:i] + piece + text[i + 1:], text[:i]][op]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document())
def test_generated_documents_read_as_today(text):
    assert_same(text)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken())
def test_broken_documents_read_as_today(text):
    assert_same(text)


def test_the_fast_path_reads_the_usual_shapes():
    """Not a vacuous pass: the usual OpenAI/vLLM shapes are answered by msgspec, exactly."""
    entries = [{"token": "Ġthe", "logprob": -0.25, "bytes": [32, 116], "top_logprobs": [
        {"token": "Ġa", "logprob": -1.5, "bytes": [32, 97]}]}, {"token": "é", "logprob": -3, "bytes": None}]
    for text in (json.dumps(entries), json.dumps({"content": entries, "refusal": None}),
                 json.dumps(entries, ensure_ascii=False, indent=2)):
        assert cv._logprobs_msgspec(text) == [-0.25, -3.0] == read(text, msgspec=False)
    assert cv._logprobs_msgspec("[]") == [] == read("[]", msgspec=False)


@pytest.mark.parametrize("text", [
    '[{"logprob": true}]', '[{"logprob": null}]', '[{"logprob": "1"}]', '[{"token": "a"}]',
    '[{"logprob": 1e400}]', '[{"logprob": 18446744073709551616}]', '[{"logprob": -9223372036854775809}]',
    '[{"logprob": 1.0, "logprob": null}]', '[{"logprob": NaN}]', "[-1.5, -2]", '{"token_logprobs": [-1.0]}',
    '[{"logprob": -1.0},]', "[{'logprob': -1.0}]", '[{"token_ids": [1], "logprobs": {"content": []}}]',
    '\u00a0[{"logprob": -1.0}]', '[{"logprob": -1.0, "x": "\\ud800"}]', '[{"logprob": -1.0, "x": "\ud800"}]',
])
def test_what_the_fast_path_leaves_to_the_general_path(text):
    """Refused by the fast path (``None``), read by the general path as before."""
    assert cv._logprobs_msgspec(text) is None
    assert_same(text)


def test_integers_read_exactly_and_left_to_the_general_path_near_orjsons_range():
    """orjson reads an integer literal past -2**63 .. 2**64-1 as a float with its own rounding: any value
    of magnitude 2**63 or more is left to the general path; below, ``float(int)`` on both paths."""
    for n in (0, -1, 2**53 + 1, -(2**62) - 1, 2**62 + 3):
        text = f'[{{"logprob": {n}}}, {{"logprob": -0}}, {{"logprob": 1e18}}]'
        assert cv._logprobs_msgspec(text) == [float(n), 0.0, 1e18]
        assert_same(text)
    for n in (-(2**63) + 1, -(2**63), -(2**63) - 1, 2**63 - 1, 2**64 - 1, 2**64, 2**70 + 1, "1e19", "-1e300"):
        text = f'[{{"logprob": -1.5}}, {{"logprob": {n}}}]'
        assert cv._logprobs_msgspec(text) is None
        assert_same(text)


def test_deep_documents_read_as_today():
    """orjson refuses past 1024 levels and past the double range; ``json.loads`` then reads it unless the
    recursion budget runs out: the guard keeps msgspec's reach within the stdlib's, so a deep document
    with an overflowing number in a skipped key is ``None`` on both paths, never logprobs on one."""
    def doc(n: int, big: bool) -> str:
        return '[{"logprob": -1.5, "x": ' + "[" * n + "]" * n + (', "y": 1e400' if big else "") + "}]"

    reach = max(n for n in range(1, 1500) if cv._logprobs_msgspec(doc(n, False)) is not None)
    assert 900 < reach < sys.getrecursionlimit()  # msgspec reads deep documents, but not past the budget
    for n in range(reach - 5, reach + 80):
        for big in (False, True):
            assert_same(doc(n, big))
    assert read(doc(reach + 60, True), msgspec=False) is None  # the stdlib ran out: today's answer


def test_read_without_msgspec_installed():
    """Without msgspec (import blocked) the module imports and reads log-probs through the general path."""
    code = (
        "import sys, json; sys.modules['msgspec'] = None\n"
        "from otel_tokenfix.trace import conventions as cv\n"
        "assert cv._msgspec is None and cv._LOGPROBS_DECODER is None\n"
        "text = json.dumps([{'token': 'a', 'logprob': -0.5, 'top_logprobs': []}, {'logprob': -2}])\n"
        "print(cv._logprobs_from(text, cv.DEFAULT_CONVENTIONS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[-0.5, -2.0]"


def test_memoized_on_the_view_and_copies_handed_out(monkeypatch):
    text = json.dumps([{"token": "", "logprob": -0.5, "top_logprobs": [{"token": "", "logprob": -9.0}]}])
    s = span(T, attrs={"logprobs.content": text})
    calls = []
    real = cv._logprobs_msgspec
    monkeypatch.setattr(cv, "_logprobs_msgspec", lambda v: calls.append(v) or real(v))
    first = cv.read_logprobs(s, 1)
    first.append(1.0)
    assert cv.read_logprobs(s, 1) == [-0.5] and cv.read_logprobs(s) == [-0.5] and calls == [text]
