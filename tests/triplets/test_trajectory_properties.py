"""Property tests of trajectory merging over random id sequences (pure, fast)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_tokenfix.triplets.build import CallData, TripletOptions, build_records

ids = st.lists(st.integers(0, 40), min_size=1, max_size=12)


@st.composite
def episodes(draw):
    """Calls whose next prompt is prompt + (the server's version of the response) + observation; the
    server's version differs from ours inside an edited window, outside one, or not at all."""
    n = draw(st.integers(2, 4))
    prompt = draw(ids)
    calls, drift = [], []
    for k in range(n):
        kept_a, window, kept_b = draw(ids), draw(ids), draw(ids)
        edited = draw(st.booleans())
        response = kept_a + (window if edited else []) + kept_b
        prov = [1] * len(kept_a) + ([0] * len(window) if edited else []) + [2 if edited else 1] * len(kept_b)
        src = list(range(len(kept_a))) + ([None] * len(window) if edited else [])
        src += list(range(len(kept_a) + 1, len(kept_a) + 1 + len(kept_b)))
        if not edited:
            src = list(range(len(response)))
        calls.append(
            CallData(
                trace_id="a" * 32, span_id=format(k + 1, "016x"), start=10 * k, end=10 * k + 5,
                prompt_ids=prompt, response_ids=response, provenance=prov, source_index=src,
                log_probs=[-1.0 if p else None for p in prov], status="corrected" if edited else "unchanged",
                edits=int(edited),
            )
        )
        how = draw(st.sampled_from(["same", "window", "outside"]))
        server = list(response)
        if how == "window" and edited:
            server = kept_a + [t + 100 for t in window] + kept_b  # the server re-tokenized the edit
        elif how == "outside" and len(kept_a) >= 2:  # two tokens away from any window edge
            server = [kept_a[0] + 100, *kept_a[1:]] + server[len(kept_a):]
        drift.append(how if server != response else "same")
        prompt = prompt + server + draw(ids)
    return calls, drift


@settings(max_examples=120, deadline=None)
@given(episodes(), st.booleans())
def test_merge_invariants(ep, edit_aware):
    calls, drift = ep
    per_call = build_records(calls)
    merged = build_records(calls, options=TripletOptions(trajectory=True, edit_aware=edit_aware))
    # every call lands in exactly one merged record, in order
    spans = [t["span_id"] for r in merged for t in r.metadata["turns"]]
    assert spans == [c.span_id for c in calls]
    assert [r.index for r in merged] == list(range(len(merged)))
    for r in merged:
        turns = r.metadata["turns"]
        first = next(c for c in calls if c.span_id == turns[0]["span_id"])
        last = next(c for c in calls if c.span_id == turns[-1]["span_id"])
        assert r.prompt_ids == first.prompt_ids
        assert r.prompt_ids + r.response_ids == last.prompt_ids + last.response_ids
        n = len(r.response_ids)
        assert len(r.mask) == len(r.provenance) == len(r.log_probs) == n
        for i in range(n):  # a trained position is never a written one, and always has its log-prob
            if r.mask[i]:
                assert r.provenance[i] != 0 and r.log_probs[i] is not None
        # the last turn is copied as is
        t = turns[-1]
        assert r.response_ids[t["start"] : t["end"]] == last.response_ids
    # strict continuations merge everything; a drift outside the edits always splits there
    if all(d == "same" for d in drift[:-1]):
        assert len(merged) == 1
    for k, d in enumerate(drift[:-1]):
        cont = per_call[k].metadata["continuation"]
        assert cont["holds"] == (d == "same")
        if d == "outside":
            assert cont["first_mismatch"]["kind"] in ("response", "edit_window")
            assert cont["confined_to_edits"] is False
