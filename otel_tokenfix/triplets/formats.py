"""Converters from our records to what trainers load: agent-lightning v0.x/v1.0 and verl.

Why here and not in the trainers: the record keeps more than any one trainer reads (provenance, mask,
drift report); each converter drops what its trainer cannot take, following that trainer's rules.
"""

from __future__ import annotations

from typing import Any

from .record import TripletRecord


def to_agl_dict(rec: TripletRecord) -> dict[str, Any]:
    """agent-lightning v0.x ``Triplet`` fields as plain data (``prompt``, ``response``, ``reward``,
    ``metadata``); ``response.logprobs`` only when every position has one."""
    response: dict[str, Any] = {"token_ids": list(rec.response_ids)}
    if rec.log_probs is not None and all(v is not None for v in rec.log_probs):
        response["logprobs"] = list(rec.log_probs)
    meta = dict(rec.metadata)
    meta.update(
        {
            "trace_id": rec.trace_id,
            "span_id": rec.span_id,
            "response_mask": list(rec.mask),
            "provenance": list(rec.provenance),
        }
    )
    if rec.rollout_id is not None:
        meta["rollout_id"] = rec.rollout_id
    if rec.attempt_id is not None:
        meta["attempt_id"] = rec.attempt_id
    return {"prompt": {"token_ids": list(rec.prompt_ids)}, "response": response, "reward": rec.reward, "metadata": meta}


def to_agl_triplet(rec: TripletRecord) -> Any:
    """An ``agentlightning.Triplet`` (v0.x); needs ``agentlightning`` installed."""
    try:
        from agentlightning import Triplet  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("to_agl_triplet needs agentlightning (v0.x) installed; use to_agl_dict otherwise") from exc
    return Triplet(**to_agl_dict(rec))


def to_agl_v1_model_request(rec: TripletRecord, *, fill_logprob: float | None = None) -> dict[str, Any]:
    """The corrected agent-lightning v1.0 ``model_request`` event (post it to
    ``/api/rollouts/{rid}/attempt/{aid}/events`` before the next call: v1.0 keeps the *last* event per
    prompt ids, so it replaces the original).

    v1.0 drops log-probs whose length differs from the response, and has no "missing" value: positions
    without one (inserted tokens) make us omit log-probs, unless ``fill_logprob`` is given.
    """
    choice: dict[str, Any] = {"index": 0, "token_ids": list(rec.response_ids)}
    lps = rec.log_probs
    if lps is not None and (fill_logprob is not None or all(v is not None for v in lps)):
        choice["logprobs"] = {"content": [{"logprob": fill_logprob if v is None else v} for v in lps]}
    if rec.text is not None:
        choice["message"] = {"role": "assistant", "content": rec.text}
    response: dict[str, Any] = {"prompt_token_ids": list(rec.prompt_ids), "choices": [choice]}
    if rec.metadata.get("response_id"):
        response["id"] = rec.metadata["response_id"]
    if rec.metadata.get("model"):
        response["model"] = rec.metadata["model"]
    return {"event_type": "model_request", "data": {"response": response, "status": "ok", "http_status": 200}}


def to_agl_v1_reward(rec: TripletRecord) -> dict[str, Any] | None:
    """The v1.0 ``reward`` event for this record, or None without a reward."""
    if rec.reward is None:
        return None
    return {"event_type": "reward", "data": {"value": rec.reward}}


def to_verl(rec: TripletRecord, *, fill_logprob: float = 0.0) -> dict[str, Any]:
    """A verl ``AgentLoopOutput``-style dict. verl wants a float per position: positions without a
    log-prob get ``fill_logprob`` (they have mask 0 under the ``kept``/``sampled`` policies)."""
    out: dict[str, Any] = {
        "prompt_ids": list(rec.prompt_ids),
        "response_ids": list(rec.response_ids),
        "response_mask": list(rec.mask),
        "response_logprobs": None
        if rec.log_probs is None
        else [fill_logprob if v is None else v for v in rec.log_probs],
        "reward_score": rec.reward,
        "extra_fields": {"trace_id": rec.trace_id, "span_id": rec.span_id, "provenance": list(rec.provenance)},
    }
    return out
