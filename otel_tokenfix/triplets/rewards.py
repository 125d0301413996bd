"""Reward-to-call matching, agent-lightning's FIRST_OCCURRENCE policy over plain times.

Why our own copy: agent-lightning v0.x matches inside its adapter over its own span tree; the service and
the SDK exporter need the same answer from plain (end time, reward time) pairs, so users get the same
rewards whichever tool reads the trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CallTimes:
    """An LLM call's times (ns). ``start`` orders calls the way agent-lightning walks the tree."""

    start: int
    end: int


@dataclass(frozen=True)
class RewardAt:
    """A reward value observed at ``time`` (ns, the start time of the span that carries it)."""

    time: int
    value: float | None


@dataclass(frozen=True)
class RewardMatch:
    """``by_call[i]`` is call i's reward (None if none); ``unmatched`` rewards found no eligible call."""

    by_call: list[float | None]
    matched: list[bool]
    unmatched: list[RewardAt]


def match_first_occurrence(calls: Sequence[CallTimes], rewards: Sequence[RewardAt]) -> RewardMatch:
    """Each reward goes to the latest call that ended at or before the reward's time and has no reward yet.

    Walks calls and rewards in start-time order (calls first on ties), as agent-lightning's
    ``RewardMatchPolicy.FIRST_OCCURRENCE`` does: a call is only a candidate once it has started.
    """
    events: list[tuple[int, int, int]] = []  # (time, kind 0=call 1=reward, index)
    events.extend((c.start, 0, i) for i, c in enumerate(calls))
    events.extend((r.time, 1, j) for j, r in enumerate(rewards))
    events.sort()
    by_call: list[float | None] = [None] * len(calls)
    matched = [False] * len(calls)
    unmatched: list[RewardAt] = []
    seen: list[int] = []
    for _, kind, idx in events:
        if kind == 0:
            seen.append(idx)
            continue
        reward = rewards[idx]
        for ci in reversed(seen):
            if calls[ci].end > reward.time or matched[ci]:
                continue
            by_call[ci] = reward.value
            matched[ci] = True
            break
        else:
            unmatched.append(reward)
    return RewardMatch(by_call=by_call, matched=matched, unmatched=unmatched)


def match_rewards(
    calls: Sequence[CallTimes], rewards: Sequence[RewardAt], *, final_reward: bool = False
) -> RewardMatch:
    """FIRST_OCCURRENCE matching; with ``final_reward`` the trace's latest reward is taken out of the
    matching and given to the last call (like agent-lightning's ``final_reward``, which overrides the last
    transition's reward), the others are matched as usual.

    Why an option: agents that emit one episode reward at the end want it on the last turn even when
    that turn also got a step reward earlier.
    """
    if not final_reward or not calls or not rewards:
        return match_first_occurrence(calls, rewards)
    last_j = max(range(len(rewards)), key=lambda j: (rewards[j].time, j))
    rest = [r for j, r in enumerate(rewards) if j != last_j]
    match = match_first_occurrence(calls, rest)
    by_call, matched = list(match.by_call), list(match.matched)
    if matched[-1]:  # the last call's step reward is displaced: report it, never drop it silently
        displaced = RewardAt(time=calls[-1].end, value=by_call[-1])
        unmatched = [*match.unmatched, displaced]
    else:
        unmatched = list(match.unmatched)
    by_call[-1] = rewards[last_j].value
    matched[-1] = True
    return RewardMatch(by_call=by_call, matched=matched, unmatched=unmatched)
