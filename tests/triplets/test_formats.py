"""Converters to agent-lightning v0.x / v1.0 and verl shapes."""

from __future__ import annotations

from otel_tokenfix.triplets.build import CallData, build_records
from otel_tokenfix.triplets.formats import to_agl_dict, to_agl_v1_model_request, to_agl_v1_reward, to_verl
from otel_tokenfix.triplets.rewards import RewardAt


def record(lps):
    c = CallData(
        trace_id="ab" * 16, span_id="cd" * 8, start=0, end=10, prompt_ids=[1, 2], response_ids=[3, 4, 5],
        provenance=[1, 0, 2], source_index=[0, None, 2], log_probs=lps, original_ids=[3, 9, 5], text="abc",
        model="qwen", response_id="chatcmpl-1", edits=1, status="corrected", rollout_id="r1", attempt_id="a1",
    )
    (rec,) = build_records([c], [RewardAt(20, 0.75)])
    return rec


def test_agl_v0_dict():
    d = to_agl_dict(record([-0.1, None, -0.3]))
    assert d["prompt"] == {"token_ids": [1, 2]}
    assert d["response"] == {"token_ids": [3, 4, 5]}  # log-probs only when every position has one
    assert d["reward"] == 0.75
    assert d["metadata"]["response_mask"] == [1, 0, 1] and d["metadata"]["rollout_id"] == "r1"
    full = to_agl_dict(record([-0.1, -0.2, -0.3]))
    assert full["response"]["logprobs"] == [-0.1, -0.2, -0.3]


def test_agl_v1_model_request_and_reward():
    rec = record([-0.1, None, -0.3])
    ev = to_agl_v1_model_request(rec)
    assert ev["event_type"] == "model_request"
    resp = ev["data"]["response"]
    assert resp["prompt_token_ids"] == [1, 2]
    choice = resp["choices"][0]
    assert choice["token_ids"] == [3, 4, 5]
    assert "logprobs" not in choice  # v1.0 has no missing value; a wrong-length list would be dropped
    assert resp["id"] == "chatcmpl-1" and choice["message"]["content"] == "abc"
    filled = to_agl_v1_model_request(rec, fill_logprob=0.0)["data"]["response"]["choices"][0]
    assert [c["logprob"] for c in filled["logprobs"]["content"]] == [-0.1, 0.0, -0.3]
    assert len(filled["logprobs"]["content"]) == len(choice["token_ids"])
    assert to_agl_v1_reward(rec) == {"event_type": "reward", "data": {"value": 0.75}}


def test_verl_dict():
    v = to_verl(record([-0.1, None, -0.3]))
    assert v["prompt_ids"] == [1, 2] and v["response_ids"] == [3, 4, 5]
    assert v["response_mask"] == [1, 0, 1]
    assert v["response_logprobs"] == [-0.1, 0.0, -0.3]
    assert len(v["response_logprobs"]) == len(v["response_ids"])
    assert to_verl(record(None))["response_logprobs"] is None
