"""inspect must show whatever a triplets file holds: odd or partial records never crash the view."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_tokenfix.inspect import build, call_view
from otel_tokenfix.inspect.html import render_html

ids = st.lists(st.integers(min_value=0, max_value=151_000), max_size=30)
junk = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(-3, 5), max_size=5))
provenance = st.one_of(st.lists(st.sampled_from([0, 1, 2, "sampled", "shifted", "inserted", "x", None])), junk)


@st.composite
def records(draw):
    response = {
        "token_ids": draw(st.one_of(ids, junk)),
        "provenance": draw(provenance),
        "log_probs": draw(st.one_of(st.lists(st.one_of(st.none(), st.floats(allow_nan=True))), junk)),
        "source_index": draw(st.one_of(st.lists(st.one_of(st.none(), st.integers(-2, 40))), junk)),
    }
    metadata = {
        "original_token_ids": draw(st.one_of(ids, junk)),
        "status": draw(st.one_of(st.sampled_from(["corrected", "unchanged"]), junk)),
        "edits": draw(junk),
        "continuation": draw(st.one_of(junk, st.fixed_dictionaries({"holds": st.booleans()}))),
        "turns": draw(st.one_of(junk, st.lists(st.fixed_dictionaries({"start": st.integers(-2, 40)})))),
    }
    return {
        "trace_id": draw(st.one_of(st.text(max_size=4), junk)),
        "index": draw(junk),
        "response": draw(st.one_of(st.just(response), junk)),
        "metadata": draw(st.one_of(st.just(metadata), junk)),
        "reward": draw(st.one_of(junk, st.floats())),
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_any_record_renders(record):
    calls, summary = build([record], None)
    view = calls[0]
    response = record["response"] if isinstance(record["response"], dict) else {}
    token_ids = response.get("token_ids")
    n = len(token_ids) if isinstance(token_ids, list) else 0
    assert view.response_tokens == n
    assert summary.calls == 1
    assert "<html" in render_html(calls, summary)


@settings(max_examples=60, deadline=None)
@given(records())
def test_any_record_with_a_real_tokenizer(qwen, record):
    view = call_view(record, qwen)
    assert all(isinstance(p.text, str) for p in view.pieces)
