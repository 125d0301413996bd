"""Continuation check and drift report over real Qwen token ids."""

from __future__ import annotations

from otel_tokenfix.triplets.continuation import EDIT_WINDOW, END, PROMPT, RESPONSE, check_continuation, edit_windows

from .helpers import IM_END, enc, server_prompt, user_turn


def test_edit_windows_from_source_index():
    assert edit_windows([0, 1, 2]) == []
    assert edit_windows([0, None, None, 3]) == [(1, 3)]
    assert edit_windows([0, 1, 4, 5]) == [(2, 2)]  # pure deletion between kept tokens
    assert edit_windows([2, 3]) == [(0, 0)]  # deletion at the start
    assert edit_windows([None, 0, 1]) == [(0, 1)]


def test_canonical_edit_continues(qwen):
    p1 = user_turn(qwen, "What is the capital of France?")
    r1 = [*enc(qwen, "The capital of France is Lyon."), IM_END]
    # the agent edits "Lyon" -> "Paris"; a splice keeps every token but the word
    pos = r1.index(enc(qwen, " Lyon")[0])
    r1c = r1[:pos] + enc(qwen, " Paris") + r1[pos + 1 :]
    src = list(range(pos)) + [None] + list(range(pos + 1, len(r1)))
    p2 = server_prompt(qwen, p1, "The capital of France is Paris.", "Thanks. And Italy?")
    c = check_continuation(p1, r1c, p2, src)
    assert c.holds and c.next_end == len(p1) + len(r1c)
    assert c.to_dict() == {"holds": True}
    # the original sampled ids do not continue: the mismatch is exactly at the edited word
    c0 = check_continuation(p1, r1, p2, None)
    assert not c0.holds and c0.kind == RESPONSE and c0.response_position == pos


def test_non_canonical_edit_window_is_reported_and_confined(qwen):
    p1 = user_turn(qwen, "Say hello.")
    r1 = [*enc(qwen, "Hello there, my friend."), IM_END]
    pos = r1.index(enc(qwen, " there")[0])
    inserted = enc(qwen, " wor") + enc(qwen, "ld")  # our window writes " world" as two pieces
    assert inserted != enc(qwen, " world")
    r1c = r1[:pos] + inserted + r1[pos + 1 :]
    src = list(range(pos)) + [None, None] + list(range(pos + 1, len(r1)))
    p2 = server_prompt(qwen, p1, "Hello world, my friend.", "ok")
    c = check_continuation(p1, r1c, p2, src)
    assert not c.holds
    assert c.kind == EDIT_WINDOW and c.response_position == pos and c.position == len(p1) + pos
    assert c.expected == inserted[0] and c.found == enc(qwen, " world")[0]
    assert c.confined
    # the server's slice is one token shorter (" world" is one token)
    assert c.next_end == len(p1) + len(r1c) - 1
    d = c.to_dict()
    assert d["first_mismatch"]["kind"] == "edit_window" and d["confined_to_edits"] is True


def test_non_canonical_sampling_outside_edits_is_response_drift(qwen):
    p1 = user_turn(qwen, "Name a ghost.")
    sampled = enc(qwen, "A") + enc(qwen, " Pant") + enc(qwen, "om") + enc(qwen, " appears.")
    r1 = [*sampled, IM_END]
    p2 = server_prompt(qwen, p1, "A Pantom appears.", "ok")
    c = check_continuation(p1, r1, p2, list(range(len(r1))))
    assert not c.holds and c.kind == RESPONSE and c.response_position == 1
    assert not c.confined


def test_template_change_is_reported_in_the_prompt(qwen):
    p1 = [*enc(qwen, "<|im_start|>system\nBe brief.<|im_end|>\n"), *user_turn(qwen, "Hi")]
    r1 = [*enc(qwen, "Hello!"), IM_END]
    # the agent framework dropped the system prompt from the history
    p2 = server_prompt(qwen, user_turn(qwen, "Hi"), "Hello!", "bye")
    c = check_continuation(p1, r1, p2)
    assert not c.holds and c.kind == PROMPT and c.position == 1


def test_next_prompt_too_short(qwen):
    p1 = user_turn(qwen, "Hi")
    r1 = [*enc(qwen, "Hello!"), IM_END]
    c = check_continuation(p1, r1, p1 + r1[:1])
    assert not c.holds and c.kind == END and c.position == len(p1) + 1 and c.found is None


def test_long_sequences_find_the_exact_first_mismatch():
    base = list(range(3000))
    for pos in (0, 1, 511, 512, 513, 1024, 2999):
        nxt = base[:pos] + [-1] + base[pos + 1 :] + [7, 7]
        c = check_continuation(base[:1500], base[1500:], nxt)
        if pos < 1500:
            assert c.kind == PROMPT and c.position == pos
        else:
            assert c.kind == RESPONSE and c.position == pos and c.response_position == pos - 1500
    assert check_continuation(base[:1500], base[1500:], [*base, 1, 2]).holds
    assert check_continuation(tuple(base[:10]), tuple(base[10:20]), base[:25]).holds  # tuples and lists mix
