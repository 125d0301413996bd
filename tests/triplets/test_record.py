"""The record shape, mask policies and the log-prob length rule; records validate against the schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_tokenfix.triplets.build import CallData, TripletOptions, build_records
from otel_tokenfix.triplets.record import TripletRecord, build_mask, normalize_log_probs, provenance_codes

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "triplet.schema.json").read_text())


def validate(d: dict) -> None:
    jsonschema.validate(d, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_mask_policies():
    prov = [1, 1, 0, 0, 2, 2, 0, 2]
    assert build_mask(prov, "kept") == [1, 1, 0, 0, 1, 1, 0, 1]
    assert build_mask(prov, "sampled") == [1, 1, 0, 0, 0, 0, 0, 0]
    assert build_mask(prov, "all") == [1] * 8
    with pytest.raises(ValueError):
        build_mask(prov, "everything")
    with pytest.raises(ValueError):
        TripletOptions(mask="nope")


def test_provenance_names_and_codes():
    assert provenance_codes(["sampled", "shifted", "inserted", 1, 2, 0]) == [1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        provenance_codes([7])


def test_log_probs_length_rule():
    assert normalize_log_probs(None, 3) is None
    assert normalize_log_probs([-0.1, -0.2], 3) is None  # wrong length: never emitted
    assert normalize_log_probs([-0.1, float("nan"), None], 3) == [-0.1, None, None]
    with pytest.raises(ValueError):
        TripletRecord("0" * 32, "0" * 16, 0, [1], [1, 2], [1, 1], [1, 1], log_probs=[0.0])
    with pytest.raises(ValueError):
        TripletRecord("0" * 32, "0" * 16, 0, [1], [1, 2], [1], [1, 1])


def _call(**kw) -> CallData:
    base = dict(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        start=10,
        end=20,
        prompt_ids=[1, 2, 3],
        response_ids=[4, 5, 6, 7],
        provenance=["sampled", "inserted", "shifted", "shifted"],
        source_index=[0, None, 2, 3],
        log_probs=[-0.5, float("nan"), -0.25, -1.0],
        original_ids=[4, 9, 6, 7],
        text="x",
        model="m",
        response_id="resp-1",
        edits=1,
        status="corrected",
        method="splice",
        removed=1,
        rollout_id="ro-1",
        attempt_id="at-1",
    )
    base.update(kw)
    return CallData(**base)


def test_record_json_roundtrip_and_schema():
    (rec,) = build_records([_call()])
    d = rec.to_dict()
    validate(d)
    line = rec.to_json()
    assert "\n" not in line and "NaN" not in line
    assert d["response"]["log_probs"] == [-0.5, None, -0.25, -1.0]
    assert d["response"]["mask"] == [1, 0, 1, 1]
    assert d["response"]["provenance"] == [1, 0, 2, 2]
    assert d["response"]["source_index"] == [0, None, 2, 3]
    assert d["metadata"]["original_token_ids"] == [4, 9, 6, 7]
    assert d["metadata"]["tokens"] == {"kept": 3, "inserted": 1, "removed": 1}
    assert d["rollout_id"] == "ro-1" and d["attempt_id"] == "at-1"
    back = TripletRecord.from_json(line)
    assert back == rec


def test_unchanged_call_has_no_original_and_schema_holds_without_optionals():
    (rec,) = build_records(
        [_call(status="unchanged", edits=0, provenance=[1] * 4, source_index=None, log_probs=None,
               original_ids=[4, 5, 6, 7], rollout_id=None, attempt_id=None, text=None)],
        options=TripletOptions(mask="sampled"),
    )
    d = rec.to_dict()
    validate(d)
    assert "original_token_ids" not in d["metadata"] and "source_index" not in d["response"]
    assert "rollout_id" not in d and "text" not in d["response"]
    assert d["response"]["log_probs"] is None
    assert d["metadata"]["mask_policy"] == "sampled"


def test_schema_rejects_a_bad_record():
    (rec,) = build_records([_call()])
    d = rec.to_dict()
    d["response"]["provenance"] = [1, 3, 2, 2]
    with pytest.raises(jsonschema.ValidationError):
        validate(d)
    d = rec.to_dict()
    d["trace_id"] = "xyz"
    with pytest.raises(jsonschema.ValidationError):
        validate(d)


def test_non_finite_log_probs_become_null():
    # NaN marks inserted positions on spans; -inf is not valid JSON: both become null, so a record built
    # by the builder always serialises
    assert normalize_log_probs([-math.inf, math.nan, -1.0], 3) == [None, None, -1.0]
    (rec,) = build_records([_call(log_probs=[-math.inf, -1.0, -2.0, math.inf])])
    assert json.loads(rec.to_json())["response"]["log_probs"] == [None, -1.0, -2.0, None]


def _slow_log_probs(values, n):
    """The per-token definition the fast path must agree with."""
    if values is None or len(values) != n:
        return None
    return [None if v is None or not math.isfinite(v) else float(v) for v in values]


@pytest.mark.parametrize("values", [
    [-0.5, -1.25, 0.0], [-0.5, None, -1.0], [-0.5, float("nan")], [float("-inf"), -1.0], [-1e308, -1e308],
    [-1, -2.5], (-0.25, -0.75), [],
])
def test_log_prob_fast_path_agrees_with_the_per_token_rule(values):
    out = normalize_log_probs(values, len(values))
    assert out == _slow_log_probs(values, len(values))
    assert out is not values and all(v is None or type(v) is float for v in out)


def test_provenance_codes_copies_and_converts_odd_inputs():
    codes = [1, 1, 0, 2]
    out = provenance_codes(codes)
    assert out == codes and out is not codes
    assert provenance_codes((True, 0, 2.0)) == [1, 0, 2] and all(type(v) is int for v in provenance_codes((True, 2.0)))
    assert provenance_codes(["sampled", "inserted", "shifted", "sampled"]) == [1, 0, 2, 1]
    assert provenance_codes(["sampled", 0]) == [1, 0]
    with pytest.raises(ValueError):
        provenance_codes([1, 7])
    with pytest.raises(ValueError):
        provenance_codes([1, "sampled"])
    with pytest.raises(KeyError):
        provenance_codes(["sampled", "guessed"])


def test_to_json_matches_json_dumps_of_to_dict():
    rec = TripletRecord(trace_id="ab" * 16, span_id="cd" * 8, index=0, prompt_ids=[1, 2], response_ids=(5, 6),
                        mask=[1, 0], provenance=[1, 0], log_probs=[-0.5, None], text="é <|im_end|>",
                        metadata={"x": [1, 2]})
    expected = json.dumps(rec.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert rec.to_json() == expected
    d = rec.to_dict()
    d["response"]["token_ids"].append(7)
    d["metadata"]["x"] = None
    assert rec.response_ids == (5, 6) and rec.metadata == {"x": [1, 2]}  # to_dict copies


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([0, 1, 2]), st.integers(-3, 300), st.booleans(), st.floats(0, 2)),
                max_size=60), st.sampled_from(["kept", "sampled", "all"]))
def test_build_mask_fast_path_equals_the_per_token_rule(provenance, policy):
    from otel_tokenfix.triplets.record import INSERTED, SAMPLED

    want = {"kept": [0 if p == INSERTED else 1 for p in provenance],
            "sampled": [1 if p == SAMPLED else 0 for p in provenance],
            "all": [1] * len(provenance)}[policy]
    got = build_mask(provenance, policy)
    assert got == want and all(type(x) is int for x in got)


def test_json_line_is_the_json_text_plus_newline():
    big = TripletRecord("t", "s", 0, [2**70], [1, 2], [1, 0], [1, 0], log_probs=[-0.5, None], text="é\n",
                        metadata={"k": [1.5, None]})  # an int past 64 bits: the stdlib encoder writes it
    for rec in (big, TripletRecord("t", "s", 1, [1], [3], [1], [2], log_probs=[-1e-5], reward=0.5)):
        assert rec.to_json_line() == (rec.to_json() + "\n").encode("utf-8")
        assert TripletRecord.from_json(rec.to_json_line().decode()) == rec


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2]), max_size=40),
       st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none()), max_size=40))
def test_checked_lists_give_what_plain_lists_give(codes, log_probs):
    """The corrector's CheckedLists skip per-token type passes; the result is the checked one's."""
    from otel_tokenfix.trace.view import CheckedList

    assert provenance_codes(CheckedList(codes)) == provenance_codes(codes)
    assert type(provenance_codes(CheckedList(codes))) is list
    fast, slow = normalize_log_probs(CheckedList(log_probs), len(log_probs)), normalize_log_probs(log_probs,
                                                                                                   len(log_probs))
    assert repr(fast) == repr(slow) and type(fast) is list
