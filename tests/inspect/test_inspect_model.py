"""The inspect view model: per-token text, provenance, removed runs, totals — on real tokenizers."""

from __future__ import annotations

import pytest

from otel_tokenfix.inspect import build, call_view, token_pieces
from otel_tokenfix.inspect.model import _continuation_text, provenance_names

TEXTS = [
    "Plain ASCII text, with punctuation!",
    "Café, naïve, Ürümqi — «quotes» and 数字 123 🙂🚀 done",
    "  leading spaces\n\ttabs and\nnewlines  ",
    "e\u0301 combining accent and <|im_end|> look-alike",
]


@pytest.mark.parametrize("text", TEXTS)
def test_token_pieces_concatenate_to_decode(any_tokenizer, text):
    ids = any_tokenizer.encode(text, add_special_tokens=False)
    pieces = token_pieces(any_tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == any_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_multibyte_character_split_over_tokens_shows_once(qwen):
    ids = qwen.encode("🫠", add_special_tokens=False)
    assert len(ids) > 1  # byte-level BPE splits this emoji
    pieces = token_pieces(qwen, ids)
    assert "".join(pieces) == "🫠"
    assert pieces[:-1] == [""] * (len(ids) - 1)
    assert "\ufffd" not in "".join(pieces)


def test_without_tokenizer_ids_are_shown():
    assert token_pieces(None, [5, 17]) == ["\u27e85\u27e9", "\u27e817\u27e9"]


def test_provenance_accepts_codes_and_names():
    assert provenance_names([1, 2, 0, "sampled", "shifted", "inserted"], 6) == [
        "sampled",
        "shifted",
        "inserted",
        "sampled",
        "shifted",
        "inserted",
    ]


def _record(qwen, original_text, parts, *, with_source=True):
    """A corrected record by hand: ``parts`` is a list of (text, kind) where kind is 'keep' (tokens taken
    from the original, in order) or 'new' (inserted)."""
    original = qwen.encode(original_text, add_special_tokens=False)
    ids, prov, src = [], [], []
    cursor = 0
    for text, kind in parts:
        piece = qwen.encode(text, add_special_tokens=False)
        if kind == "keep":
            # locate the piece's ids in the original after the cursor
            for start in range(cursor, len(original) - len(piece) + 1):
                if original[start : start + len(piece)] == piece:
                    break
            else:  # pragma: no cover - a broken fixture
                raise AssertionError(f"{text!r} not in original")
            for k, t in enumerate(piece):
                ids.append(t)
                src.append(start + k)
                prov.append(1 if start + k == len(ids) - 1 else 2)
            cursor = start + len(piece)
        else:
            ids.extend(piece)
            src.extend([None] * len(piece))
            prov.extend([0] * len(piece))
    response = {"token_ids": ids, "log_probs": [-0.5 if s is not None else None for s in src], "mask": [1] * len(ids)}
    response["provenance"] = prov
    if with_source:
        response["source_index"] = src
    return {
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "index": 0,
        "prompt": {"token_ids": [1, 2, 3, 4]},
        "response": response,
        "reward": 0.5,
        "metadata": {"model": "m", "status": "corrected", "edits": 2, "original_token_ids": original},
    }, original


@pytest.mark.parametrize("with_source", [True, False])
def test_removed_text_is_placed_where_it_was(qwen, with_source):
    rec, original = _record(
        qwen,
        "<think>plan</think>The answer is, I think, 42.",
        [("The answer is", "keep"), (" 42.", "keep")],
        with_source=with_source,
    )
    view = call_view(rec, qwen)
    kinds_text = [(p.kind, p.text) for p in view.pieces]
    removed = "".join(t for k, t in kinds_text if k == "removed")
    kept = "".join(t for k, t in kinds_text if k != "removed")
    assert kept == "The answer is 42."
    assert removed == "<think>plan</think>, I think,"
    # the think block is struck through before the first kept token, the hedge between "is" and " 42"
    first_kept = next(i for i, (k, _) in enumerate(kinds_text) if k != "removed")
    assert "".join(t for k, t in kinds_text[:first_kept]) == "<think>plan</think>"
    joined = "".join(f"[{t}]" if k == "removed" else t for k, t in kinds_text)
    assert "The answer is[,][ I][ think][,] 42." in joined
    assert view.count("removed") == len(original) - view.response_tokens
    assert view.count("shifted") == view.response_tokens  # the edit was at the very start
    assert view.count("sampled") == 0 and view.count("inserted") == 0
    assert view.reward == 0.5 and view.edits == 2 and view.prompt_tokens == 4


def test_inserted_tokens_and_totals(qwen):
    rec, _ = _record(qwen, "Paris is big.", [("Paris is", "keep"), (" very", "new"), (" big.", "keep")])
    rec2 = dict(rec, index=1, span_id="c" * 16, reward=None, metadata={"status": "unchanged"})
    rec2["response"] = {"token_ids": qwen.encode("ok", add_special_tokens=False), "provenance": [1], "log_probs": None}
    calls, summary = build([rec, rec2], qwen)
    assert [p.text for p in calls[0].pieces if p.kind == "inserted"] == [" very"]
    assert calls[0].count("sampled") == 2  # "Paris", " is" come before the first edit
    assert summary.calls == 2 and summary.traces == 1
    assert summary.totals["inserted"] == 1 and summary.totals["removed"] == 0
    assert summary.totals["sampled"] == 3
    assert summary.statuses == {"corrected": 1, "unchanged": 1}
    assert summary.rewards == [0.5]


def test_record_without_original_ids_says_so(qwen):
    rec, _ = _record(qwen, "A b c.", [("A", "keep"), (" c.", "keep")])
    del rec["metadata"]["original_token_ids"]
    view = call_view(rec, qwen)
    assert view.count("removed") == 0
    assert "no original ids" in view.note


@pytest.mark.parametrize(
    ("cont", "expected"),
    [
        (None, "-"),
        ({"holds": True}, "ok"),
        (
            {"holds": False, "first_mismatch": {"kind": "edit_window", "position": 57}, "confined_to_edits": True},
            "broken at 57 in an edited window (confined to edits)",
        ),
        ({"holds": False, "first_mismatch": {"kind": "response", "position": 3}}, "broken at 3 outside edits"),
    ],
)
def test_continuation_phrase(cont, expected):
    assert _continuation_text({"continuation": cont}) == expected


def test_trajectory_tokens_between_turns_are_context_not_inserted(qwen):
    turn_a = qwen.encode("Searching.", add_special_tokens=False)
    between = qwen.encode("<|im_end|>\n<|im_start|>user\nresult<|im_end|>\n<|im_start|>assistant\n")
    turn_b = qwen.encode("Done.", add_special_tokens=False)
    ids = turn_a + between + turn_b
    a, b = len(turn_a), len(turn_a) + len(between)
    prov = [2] * a + [0] * len(between) + [1] * len(turn_b)
    rec = {
        "trace_id": "e" * 32,
        "span_id": "f" * 16,
        "index": 0,
        "prompt": {"token_ids": [1]},
        "response": {"token_ids": ids, "log_probs": None, "mask": [1] * len(ids), "provenance": prov},
        "reward": None,
        "metadata": {
            "status": "corrected",
            "edits": 1,
            "calls": 2,
            "turns": [{"span_id": "f" * 16, "start": 0, "end": a}, {"span_id": "9" * 16, "start": b, "end": len(ids)}],
        },
    }
    view = call_view(rec, qwen)
    assert view.calls == 2
    assert view.count("context") == len(between)
    assert view.count("inserted") == 0 and view.count("shifted") == a and view.count("sampled") == len(turn_b)
    assert "".join(p.text for p in view.pieces if p.kind == "context") == qwen.decode(between)


def test_removed_words_stay_next_to_their_old_neighbours_when_a_sentence_moved(qwen):
    """The engine may keep a moved sentence's tokens (source indices go back): deleted words are shown
    after the kept token that preceded them in the original."""
    original_text = "B is, I think, big. A is first."
    original = qwen.encode(original_text, add_special_tokens=False)
    a_part = qwen.encode(" A is first.", add_special_tokens=False)
    b_head = qwen.encode("B is", add_special_tokens=False)
    b_tail = qwen.encode(" big.", add_special_tokens=False)
    a_start = len(original) - len(a_part)
    tail_start = next(i for i in range(len(original)) if original[i : i + len(b_tail)] == b_tail)
    ids = a_part + [qwen.encode(" B", add_special_tokens=False)[0]] + original[1 : len(b_head)] + b_tail
    src = list(range(a_start, len(original))) + [None] + list(range(1, len(b_head)))
    src += list(range(tail_start, tail_start + len(b_tail)))
    rec = {
        "response": {"token_ids": ids, "provenance": [0 if s is None else 2 for s in src], "source_index": src},
        "metadata": {"original_token_ids": original, "status": "corrected"},
    }
    view = call_view(rec, qwen)
    shown = "".join(f"[-{p.text}-]" if p.kind == "removed" else p.text for p in view.pieces)
    assert shown.replace("-][-", "") == "[-B-] A is first. B is[-, I think,-] big."
