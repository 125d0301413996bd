"""Trajectory mode: merging turns where the continuation holds, edit-aware, over real Qwen ids."""

from __future__ import annotations

from otel_tokenfix.triplets.build import CallData, TripletOptions, build_records
from otel_tokenfix.triplets.rewards import RewardAt

from .helpers import IM_END, enc, server_prompt, user_turn

T = "ab" * 16


def call(i, prompt, response, *, prov=None, src=None, lps=None, status="unchanged", edits=0):
    n = len(response)
    return CallData(
        trace_id=T,
        span_id=format(i + 1, "016x"),
        start=100 * i,
        end=100 * i + 50,
        prompt_ids=prompt,
        response_ids=response,
        provenance=prov or [1] * n,
        source_index=src if src is not None else list(range(n)),
        log_probs=lps if lps is not None else [-0.1 * (k + 1) for k in range(n)],
        status=status,
        edits=edits,
    )


def three_turns(qwen, edited_window):
    """Turn 1 is edited ("Lyon" -> "Paris"); ``edited_window`` is how our correction wrote " Paris"."""
    p1 = user_turn(qwen, "Capital of France?")
    r1 = [*enc(qwen, "It is Lyon."), IM_END]
    pos = r1.index(enc(qwen, " Lyon")[0])
    r1c = r1[:pos] + edited_window + r1[pos + 1 :]
    k = len(edited_window)
    prov1 = [1] * pos + [0] * k + [2] * (len(r1) - pos - 1)
    src1 = list(range(pos)) + [None] * k + list(range(pos + 1, len(r1)))
    lps1 = [-0.5] * pos + [None] * k + [-0.7] * (len(r1) - pos - 1)
    p2 = server_prompt(qwen, p1, "It is Paris.", "And Italy?")
    r2 = [*enc(qwen, "Rome."), IM_END]
    p3 = server_prompt(qwen, p2, "Rome.", "And Spain?")
    r3 = [*enc(qwen, "Madrid."), IM_END]
    calls = [
        call(0, p1, r1c, prov=prov1, src=src1, lps=lps1, status="corrected", edits=1),
        call(1, p2, r2),
        call(2, p3, r3),
    ]
    return calls, pos


def test_canonical_edit_merges_into_one_sequence(qwen):
    calls, pos = three_turns(qwen, enc(qwen, " Paris"))
    rewards = [RewardAt(60, 0.0), RewardAt(260, 1.0)]
    per_call = build_records(calls, rewards)
    assert [r.metadata["continuation"]["holds"] for r in per_call[:2]] == [True, True]
    assert per_call[2].metadata["continuation"] is None
    (traj,) = build_records(calls, rewards, TripletOptions(trajectory=True))
    last = calls[-1]
    # invariant: prompt + merged response == the last call's prompt + response, token for token
    assert traj.prompt_ids + traj.response_ids == last.prompt_ids + last.response_ids
    assert traj.prompt_ids == calls[0].prompt_ids
    turns = traj.metadata["turns"]
    assert [t["span_id"] for t in turns] == [c.span_id for c in calls]
    for t, c, rec in zip(turns, calls, per_call, strict=True):
        assert traj.response_ids[t["start"] : t["end"]] == c.response_ids
        assert traj.mask[t["start"] : t["end"]] == rec.mask
        assert traj.log_probs[t["start"] : t["end"]] == rec.log_probs
    # tokens between turns (end of message, observation, template) are masked out and have no log-prob
    between = range(turns[0]["end"], turns[1]["start"])
    assert len(between) > 0 and all(traj.mask[i] == 0 and traj.log_probs[i] is None for i in between)
    assert traj.mask[pos] == 0  # the inserted word is not trained under the default policy
    assert traj.reward == 1.0 and [t["reward"] for t in turns] == [0.0, None, 1.0]
    assert traj.metadata["status"] == "corrected" and traj.metadata["edits"] == 1
    assert traj.metadata["calls"] == 3 and traj.metadata["resynced_tokens"] == 0


def test_non_canonical_edit_window_still_merges_with_server_tokens(qwen):
    window = enc(qwen, " Par") + enc(qwen, "is")
    assert window != enc(qwen, " Paris")
    calls, pos = three_turns(qwen, window)
    (c1, *_rest) = build_records(calls)
    assert c1.metadata["continuation"]["holds"] is False
    assert c1.metadata["continuation"]["confined_to_edits"] is True
    (traj,) = build_records(calls, options=TripletOptions(trajectory=True))
    last = calls[-1]
    assert traj.prompt_ids + traj.response_ids == last.prompt_ids + last.response_ids
    assert traj.metadata["resynced_tokens"] == 1  # the server's single " Paris" token
    assert traj.response_ids[pos] == enc(qwen, " Paris")[0] and traj.mask[pos] == 0
    assert traj.log_probs[pos] is None
    # sampled tokens before and shifted tokens after the window keep mask and log-prob
    assert traj.mask[:pos] == [1] * pos and traj.log_probs[:pos] == [-0.5] * pos
    assert traj.mask[pos + 1] == 1 and traj.log_probs[pos + 1] == -0.7
    # without edit-aware merging the edited turn stands alone
    split = build_records(calls, options=TripletOptions(trajectory=True, edit_aware=False))
    assert len(split) == 2 and split[0].response_ids == calls[0].response_ids
    assert split[1].metadata["turns"][0]["span_id"] == calls[1].span_id


def test_template_break_starts_a_new_sequence(qwen):
    calls, _ = three_turns(qwen, enc(qwen, " Paris"))
    # the framework rewrote history before turn 3 (e.g. summarised it): no continuation
    calls[2].prompt_ids = user_turn(qwen, "Summary: France->Paris, Italy->Rome. And Spain?")
    recs = build_records(calls, options=TripletOptions(trajectory=True))
    assert len(recs) == 2
    assert [t["span_id"] for t in recs[0].metadata["turns"]] == [calls[0].span_id, calls[1].span_id]
    assert recs[1].prompt_ids == calls[2].prompt_ids and recs[1].response_ids == calls[2].response_ids
    assert [r.index for r in recs] == [0, 1]
    assert recs[0].metadata["continuation"]["first_mismatch"]["kind"] == "prompt"


def test_a_turn_without_log_probs_drops_them_for_the_sequence(qwen):
    calls, _ = three_turns(qwen, enc(qwen, " Paris"))
    calls[1].log_probs = None
    (traj,) = build_records(calls, options=TripletOptions(trajectory=True))
    assert traj.log_probs is None


def test_missing_prompt_ids_mean_unknown_continuation(qwen):
    calls, _ = three_turns(qwen, enc(qwen, " Paris"))
    calls[1].prompt_ids = []  # the span carried no prompt ids
    recs = build_records(calls)
    assert [r.metadata["continuation"] for r in recs] == [None, None, None]
    merged = build_records(calls, options=TripletOptions(trajectory=True))
    assert len(merged) == 3  # nothing is merged on an unknown continuation
