"""The demo agent's edits and retriever (pure functions)."""

from __future__ import annotations

import json

from otel_tokenfix.demo import edits
from otel_tokenfix.demo.script import GOLD_FACTS, HEDGE, TURN_ANSWER, TURN_SEARCH
from otel_tokenfix.demo.tools import search


def test_strip_think_removes_every_block():
    assert edits.strip_think("<think>a</think>\nX <think>b\nc</think> Y") == "X Y"
    assert edits.strip_think("no think") == "no think"


def test_repair_tool_json_fixes_trailing_comma_and_quotes():
    broken = '<tool_call>\n{"name": "search", "arguments": {"query": "q",}}\n</tool_call>'
    fixed = edits.repair_tool_json(broken)
    assert edits.parse_tool_call(broken) is None
    assert edits.parse_tool_call(fixed) == {"name": "search", "arguments": {"query": "q"}}
    assert fixed.startswith("<tool_call>\n") and fixed.endswith("\n</tool_call>")
    quoted = "<tool_call>{'name': 'search', 'arguments': {}}</tool_call>"
    assert json.loads(edits.repair_tool_json(quoted)[11:-12]) == {"name": "search", "arguments": {}}
    valid = '<tool_call>{"name": "x"}</tool_call>'
    assert edits.repair_tool_json(valid) == valid
    assert edits.repair_tool_json("<tool_call>{nope</tool_call>") == "<tool_call>{nope</tool_call>"


def test_reorder_and_hedge():
    text = "B is second. A is first! C."
    assert edits.reorder_sentences(text, "A is") == "A is first! B is second. C."
    assert edits.reorder_sentences(text, "B is") == text
    assert edits.delete_phrase("x, maybe, y", ", maybe,") == "x y"
    assert edits.delete_phrase("x", "zzz") == "x"


def test_scripted_turns_need_every_edit():
    """Each scripted turn is changed by each edit the agent applies to it (so each edit is recorded)."""
    t = TURN_SEARCH.text
    assert edits.parse_tool_call(t) is None and edits.repair_tool_json(t) != t
    a = TURN_ANSWER.text
    a1 = edits.strip_think(a)
    a2 = edits.delete_phrase(a1, HEDGE)
    a3 = edits.reorder_sentences(a2, GOLD_FACTS[0])
    assert a != a1 != a2 != a3
    assert all(fact in a3 for fact in GOLD_FACTS)


def test_search_ranks_by_overlap():
    hits = search("Eiffel Tower completed height")
    assert [doc_id for doc_id, _ in hits] == ["eiffel-history", "eiffel-height"]
    assert search("zzz qqq") == []


def test_every_split_word_is_one_splittable_token(qwen):
    """The script's non-canonical words each become exactly one split the server samples."""
    from otel_tokenfix.demo.runner import split_positions
    from otel_tokenfix.demo.script import TURNS

    for turn in TURNS:
        assert len(split_positions(qwen, turn)) == len(turn.split_words)
