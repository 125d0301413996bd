"""FIRST_OCCURRENCE reward matching, checked against agent-lightning's own loop (transcribed below)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_tokenfix.triplets.rewards import CallTimes, RewardAt, match_first_occurrence, match_rewards


def agl_reference(calls, rewards):
    """agent-lightning v0.3.0 ``TraceTree.match_rewards`` (FIRST_OCCURRENCE) over plain items: items are
    walked in start-time order (stable sort, calls listed before reward spans), a reward span goes to the
    latest call ending at or before its start that has no reward yet."""
    items = [("call", i, c.start, c.end) for i, c in enumerate(calls)]
    items += [("reward", j, r.time, r.time) for j, r in enumerate(rewards)]
    items.sort(key=lambda x: x[2])
    assign_to, out = [], {}
    for kind, idx, start, end in items:
        if kind == "call":
            assign_to.append((idx, end))
            continue
        for cid, cend in reversed(assign_to):
            if cend > start:
                continue
            if cid in out:
                continue
            out[cid] = rewards[idx].value
            break
    return [out.get(i) for i in range(len(calls))]


def test_basic_step_rewards():
    calls = [CallTimes(0, 10), CallTimes(20, 30), CallTimes(40, 50)]
    rewards = [RewardAt(15, 1.0), RewardAt(55, 3.0)]
    m = match_first_occurrence(calls, rewards)
    assert m.by_call == [1.0, None, 3.0]
    assert not m.unmatched


def test_reward_goes_back_to_earlier_call_when_latest_has_one():
    calls = [CallTimes(0, 10), CallTimes(20, 30)]
    rewards = [RewardAt(35, 1.0), RewardAt(36, 2.0)]
    assert match_first_occurrence(calls, rewards).by_call == [2.0, 1.0]


def test_reward_during_a_call_skips_it_and_early_reward_is_unmatched():
    calls = [CallTimes(0, 10), CallTimes(20, 30)]
    rewards = [RewardAt(-5, 9.0), RewardAt(25, 1.0)]
    m = match_first_occurrence(calls, rewards)
    assert m.by_call == [1.0, None]
    assert [r.value for r in m.unmatched] == [9.0]


def test_final_reward_goes_to_the_last_call():
    calls = [CallTimes(0, 10), CallTimes(20, 30)]
    rewards = [RewardAt(31, 0.5), RewardAt(100, 1.0)]
    assert match_rewards(calls, rewards).by_call == [1.0, 0.5]  # plain FIRST_OCCURRENCE
    m = match_rewards(calls, rewards, final_reward=True)
    assert m.by_call == [None, 1.0]
    assert [r.value for r in m.unmatched] == [0.5]  # the displaced step reward is reported, not lost


times = st.integers(min_value=0, max_value=60)


@st.composite
def scenarios(draw):
    calls = []
    for _ in range(draw(st.integers(0, 6))):
        s = draw(times)
        calls.append(CallTimes(s, s + draw(st.integers(0, 20))))
    rewards = [RewardAt(draw(times), draw(st.floats(-1, 1))) for _ in range(draw(st.integers(0, 6)))]
    return calls, rewards


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_same_answer_as_agent_lightning(sc):
    calls, rewards = sc
    m = match_first_occurrence(calls, rewards)
    assert m.by_call == agl_reference(calls, rewards)
    assert sum(m.matched) + len(m.unmatched) == len(rewards)
