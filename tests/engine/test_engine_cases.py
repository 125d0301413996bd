"""Hand-written cases for every pitfall of REFERENCE.md section 3 and issue 2, on the real tokenizers."""

from __future__ import annotations

import pytest

from otel_tokenfix.engine import TokenFixError, correct_text
from otel_tokenfix.engine.table import get_table

from .engine_helpers import assert_consistent, canonical, decode

IM_END = 151645
THINK, END_THINK = 151667, 151668
TOOL_CALL, END_TOOL_CALL = 151657, 151658


def ids_of(tok, c) -> list[str]:
    return tok.convert_ids_to_tokens(c.token_ids)


def test_qwen_added_token_ids(qwen):
    assert qwen.convert_tokens_to_ids("<|im_end|>") == IM_END
    assert qwen.convert_tokens_to_ids("<think>") == THINK
    assert qwen.convert_tokens_to_ids("<tool_call>") == TOOL_CALL
    table = get_table(qwen)
    assert table.hidden[IM_END] and not table.hidden[THINK] and table.added[THINK]


def test_think_block_removed(qwen):
    ids = canonical(qwen, "<think>Let me think about it.</think>The answer is 42.") + [IM_END]
    lp = [-0.1 * i for i in range(len(ids))]
    c = correct_text(qwen, ids, "The answer is 42.", logprobs=lp)
    assert decode(qwen, c.token_ids) == "The answer is 42."
    assert THINK not in c.token_ids and END_THINK not in c.token_ids
    assert c.token_ids[-1] == IM_END and c.source_index[-1] == len(ids) - 1
    # The answer's tokens are the sampled ones, moved: shifted with their logprobs.
    answer = canonical(qwen, "The answer is 42.")
    assert c.token_ids[:-1] == answer
    assert all(p == "shifted" for p in c.provenance)
    assert c.logprobs == [lp[s] for s in c.source_index]
    assert_consistent(c, ids, lp)


def test_json_tool_call_reformatted_keeps_tags(qwen):
    before = '<tool_call>\n{"name": "search", "arguments": {"q": "otel"}}\n</tool_call>'
    after = '<tool_call>\n{\n  "name": "search",\n  "arguments": {"q": "otel"}\n}\n</tool_call>'
    ids = canonical(qwen, before) + [IM_END]
    c = correct_text(qwen, ids, after)
    assert decode(qwen, c.token_ids) == after
    assert c.token_ids[0] == TOOL_CALL and c.provenance[0] == "sampled"
    assert c.token_ids[-2:] == [END_TOOL_CALL, IM_END]
    assert c.source_index[-2:] == [len(ids) - 2, len(ids) - 1]
    assert c.inserted < len(canonical(qwen, after)) // 2  # most tokens kept
    assert c.method in ("splice", "widened")
    assert_consistent(c, ids)


def test_sentence_swap_keeps_moved_tokens(any_tokenizer):
    tok = any_tokenizer
    a, b = "The first sentence is here.", " A second one follows now."
    ids = canonical(tok, a + b)
    edited = b.lstrip() + " " + a
    c = correct_text(tok, ids, edited)
    assert decode(tok, c.token_ids) == edited
    assert_consistent(c, ids)
    # Every sampled token of the moved sentence keeps its origin except at the seams.
    assert c.removed <= 3, ids_of(tok, c)


@pytest.mark.parametrize(
    "before,after",
    [
        ("日本語のテキストです。", "日本語のテキストではない。"),
        ("Emoji 😀 here", "Emoji 😀😀 here 🎉"),
        ("Cafe\u0301 au lait", "Cafe\u0301 au lait, cre\u0300me"),  # combining marks stay decomposed
        ("한국어 문장", "한국어 긴 문장"),
    ],
)
def test_cjk_emoji_combining(any_tokenizer, before, after):
    tok = any_tokenizer
    ids = canonical(tok, before)
    if decode(tok, ids) != before:  # Qwen's NFC normalizer: build the sampled ids without it
        ids = get_table(tok).encode(before)
    c = correct_text(tok, ids, after)
    assert decode(tok, c.token_ids) == after
    assert_consistent(c, ids)


def test_qwen_nfc_does_not_change_text(qwen):
    """Qwen's NFC normalizer would turn e+U+0301 into é: the window encoder must not."""
    ids = canonical(qwen, "plain text")
    edited = "plain te\u0301xt"
    c = correct_text(qwen, ids, edited)
    assert decode(qwen, c.token_ids) == edited
    assert decode(qwen, canonical(qwen, edited)) != edited  # the pitfall is real


def test_non_canonical_sampling_survives(qwen):
    """' wor','ld' sampled for ' world': an edit elsewhere keeps both pieces."""
    wor, ld = qwen.convert_tokens_to_ids(["Ġwor", "ld"])
    hello, bang = canonical(qwen, "Hello"), canonical(qwen, "!")
    ids = hello + [wor, ld] + bang + canonical(qwen, " Bye now.") + [IM_END]
    assert decode(qwen, ids) == "Hello world! Bye now."
    c = correct_text(qwen, ids, "Hello world! Bye later.")
    assert decode(qwen, c.token_ids) == "Hello world! Bye later."
    assert c.token_ids[: len(hello) + 3] == hello + [wor, ld] + bang
    assert c.provenance[: len(hello) + 3] == ["sampled"] * (len(hello) + 3)
    # An edit right after the split pieces keeps ' wor' at least.
    c2 = correct_text(qwen, ids, "Hello worlds! Bye now.")
    assert decode(qwen, c2.token_ids) == "Hello worlds! Bye now."
    assert wor in c2.token_ids and c2.source_index[c2.token_ids.index(wor)] == len(hello)


@pytest.mark.parametrize("typed", ["<|im_end|>", "<|im_start|>assistant", "<|endoftext|>"])
def test_typed_control_text_stays_text(qwen, typed):
    ids = canonical(qwen, "Answer: yes.") + [IM_END]
    edited = f"Answer: {typed} yes."
    c = correct_text(qwen, ids, edited)
    assert decode(qwen, c.token_ids) == edited  # content view shows it, so it is text
    assert c.token_ids.count(IM_END) == 1 and c.token_ids[-1] == IM_END
    assert decode(qwen, c.token_ids, "raw") == edited + "<|im_end|>"


def test_typed_inst_stays_text_tekken(tekken):
    ids = canonical(tekken, "Fine.")
    c = correct_text(tekken, ids, "Fine. [INST] <s>")
    assert decode(tekken, c.token_ids) == "Fine. [INST] <s>"
    assert not any(get_table(tekken).hidden[t] for t in c.token_ids)


def test_truncated_multibyte_char_qwen(qwen):
    ids = canonical(qwen, "Hello 䨻")
    cut = ids[:-1]  # the last token completes the character: the response was cut mid-character
    shown = decode(qwen, cut)
    assert shown.endswith("\ufffd")
    c = correct_text(qwen, cut, "Hi" + shown[len("Hello") :])
    assert decode(qwen, c.token_ids) == "Hi" + shown[len("Hello") :]
    assert c.token_ids[-2:] == cut[-2:] and c.source_index[-2:] == [len(cut) - 2, len(cut) - 1]
    c2 = correct_text(qwen, cut, "Hello!")  # deleting the broken char
    assert decode(qwen, c2.token_ids) == "Hello!"
    assert_consistent(c2, cut)


def test_spm_byte_run_invalid_utf8(mistral_spm):
    tok = mistral_spm
    e4 = tok.convert_tokens_to_ids("<0xE4>")
    ids = canonical(tok, "Hello there") + [e4]
    assert decode(tok, ids) == "Hello there\ufffd"
    c = correct_text(tok, ids, "Hello here\ufffd")
    assert decode(tok, c.token_ids) == "Hello here\ufffd"
    assert c.token_ids[-1] == e4 and c.source_index[-1] == len(ids) - 1


@pytest.mark.parametrize("edited", [" Hello world", "  Hello world", "Hello world ", "world", " x", "x"])
def test_spm_leading_space(mistral_spm, edited):
    tok = mistral_spm
    ids = [1] + canonical(tok, "Hello world") + [2]
    c = correct_text(tok, ids, edited)
    assert decode(tok, c.token_ids) == edited
    assert c.token_ids[0] == 1 and c.token_ids[-1] == 2


def test_spm_mid_text_fragment_gets_no_dummy_prefix(mistral_spm):
    tok = mistral_spm
    ids = canonical(tok, "Hello world")
    c = correct_text(tok, ids, "Hello worldwide")
    assert decode(tok, c.token_ids) == "Hello worldwide"
    assert c.token_ids == canonical(tok, "Hello worldwide")


def test_spm_literal_metaspace_uses_byte_fallback(mistral_spm):
    tok = mistral_spm
    ids = canonical(tok, "a b")
    c = correct_text(tok, ids, "a\u2581b")
    assert decode(tok, c.token_ids) == "a\u2581b"
    bytes_ids = tok.convert_tokens_to_ids(["<0xE2>", "<0x96>", "<0x81>"])
    assert any(c.token_ids[i : i + 3] == bytes_ids for i in range(len(c.token_ids)))


@pytest.mark.parametrize("view", ["content", "raw"])
def test_delete_everything(any_tokenizer, view):
    tok = any_tokenizer
    eos = tok.eos_token_id
    ids = canonical(tok, "Some text to delete.") + ([eos] if eos is not None else [])
    c = correct_text(tok, ids, "", view=view)
    assert decode(tok, c.token_ids, view) == ""
    if view == "content" and eos is not None:
        assert c.token_ids == [eos] and c.source_index == [len(ids) - 1]


def test_empty_texts(any_tokenizer):
    tok = any_tokenizer
    c = correct_text(tok, [], "")
    assert c.token_ids == [] and c.method == "unchanged" and c.removed == 0
    c = correct_text(tok, [], "New text")
    assert decode(tok, c.token_ids) == "New text" and c.provenance == ["inserted"] * len(c.token_ids)
    assert c.token_ids == canonical(tok, "New text")


@pytest.mark.parametrize("name", ["qwen", "mistral_spm"])  # the tekken build declares no EOS
def test_only_eos_gets_text_before_it(request, name):
    tok = request.getfixturevalue(name)
    eos = tok.eos_token_id
    c = correct_text(tok, [eos], "Hi")
    assert decode(tok, c.token_ids) == "Hi" and c.token_ids[-1] == eos


def test_trailing_eos_stays_last_when_appending(qwen):
    ids = canonical(qwen, "Partial answer") + [IM_END]
    c = correct_text(qwen, ids, "Partial answer, now complete.")
    assert c.token_ids[-1] == IM_END and c.provenance[-1] == "shifted"
    assert decode(qwen, c.token_ids) == "Partial answer, now complete."


def test_hidden_token_in_the_middle_stays(qwen):
    ids = canonical(qwen, "abc") + [IM_END] + canonical(qwen, "def")
    for edited in ("abXdef", "abcdXf", "aXf", "abcdef!"):
        c = correct_text(qwen, ids, edited)
        assert decode(qwen, c.token_ids) == edited
        assert c.token_ids.count(IM_END) == 1
        assert_consistent(c, ids)


def test_raw_view_edits_control_tokens(qwen):
    ids = canonical(qwen, "Done.") + [IM_END]
    raw = decode(qwen, ids, "raw")
    assert raw == "Done.<|im_end|>"
    c = correct_text(qwen, ids, "Done!<|im_end|>", view="raw")
    assert c.token_ids[-1] == IM_END and c.source_index[-1] == len(ids) - 1
    c = correct_text(qwen, ids, "Done.", view="raw")  # the agent removed the control token
    assert IM_END not in c.token_ids and decode(qwen, c.token_ids, "raw") == "Done."


def test_unchanged(any_tokenizer):
    tok = any_tokenizer
    ids = canonical(tok, "Nothing changes here.")
    lp = [-1.0] * len(ids)
    c = correct_text(tok, ids, decode(tok, ids), logprobs=lp)
    assert c.method == "unchanged" and c.token_ids == ids and c.removed == 0
    assert c.provenance == ["sampled"] * len(ids) and c.logprobs == lp


def test_clean_up_tokenization_spaces_is_off_for_exactness(tekken):
    """A tokenizer with lossy clean-up: exactness is defined on the decode without it (documented)."""
    from transformers import PreTrainedTokenizerFast

    lossy = PreTrainedTokenizerFast(
        tokenizer_object=tekken.backend_tokenizer,
        clean_up_tokenization_spaces=True,
        clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True,
    )
    ids = canonical(lossy, "Hello , world .")
    assert lossy.decode(ids) == "Hello, world."  # the pitfall: clean-up rewrites " ," and " ."
    c = correct_text(lossy, ids, "Hello , big world .")
    assert lossy.decode(c.token_ids, clean_up_tokenization_spaces=False) == "Hello , big world ."
    assert c.token_ids[:2] == ids[:2]
    # The agent saw (and edited) the cleaned-up text: still exact against what it wrote.
    c = correct_text(lossy, ids, "Hello, big world.")
    assert lossy.decode(c.token_ids, clean_up_tokenization_spaces=False) == "Hello, big world."


def test_long_response_100k_tokens(qwen):
    para = "The agent called a tool, read the JSON result and answered the question. " * 10 + "\n"
    text = para * 1400
    ids = canonical(qwen, text)
    assert len(ids) >= 100_000
    mid = len(text) // 2
    edited = text[:mid] + " EDITED " + text[mid:]
    c = correct_text(qwen, ids, edited)
    assert c.removed <= 3 and c.inserted <= 6
    assert qwen.backend_tokenizer.decode(c.token_ids) == edited


class TestBadInput:
    def test_out_of_vocabulary(self, qwen):
        with pytest.raises(TokenFixError, match="out of vocabulary"):
            correct_text(qwen, [1, 2, 10**7], "x")
        with pytest.raises(TokenFixError):
            correct_text(qwen, [-1], "x")

    def test_not_integers(self, qwen):
        with pytest.raises(TokenFixError):
            correct_text(qwen, ["a", "b"], "x")

    def test_unknown_view(self, qwen):
        with pytest.raises(TokenFixError, match="view"):
            correct_text(qwen, [1], "x", view="decoded")  # type: ignore[arg-type]

    def test_logprobs_length(self, qwen):
        with pytest.raises(TokenFixError, match="logprobs"):
            correct_text(qwen, [1, 2], "x", logprobs=[-0.1])

    def test_text_not_str(self, qwen):
        with pytest.raises(TokenFixError):
            correct_text(qwen, [1], b"x")  # type: ignore[arg-type]

    def test_lone_surrogate(self, qwen):
        with pytest.raises(TokenFixError):
            correct_text(qwen, [1], "x\ud800")

    def test_non_fast_tokenizer(self):
        from transformers import PreTrainedTokenizer

        class CharTokenizer(PreTrainedTokenizer):
            """A real (pure-Python, slow) transformers tokenizer: one id per character."""

            def get_vocab(self):
                return {chr(i): i for i in range(128)}

            @property
            def vocab_size(self):
                return 128

            def _tokenize(self, text):
                return list(text)

            def _convert_token_to_id(self, token):
                return ord(token) % 128

            def _convert_id_to_token(self, index):
                return chr(index)

        slow = CharTokenizer()
        assert not slow.is_fast
        with pytest.raises(TokenFixError, match="fast"):
            correct_text(slow, [104, 105], "hi!")

    def test_wordpiece_is_unsupported(self):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        backend = Tokenizer(models.WordPiece({"[UNK]": 0, "hi": 1, "##s": 2}, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        backend.decoder = decoders.WordPiece()
        tok = PreTrainedTokenizerFast(tokenizer_object=backend)
        with pytest.raises(TokenFixError, match="unsupported"):
            correct_text(tok, [1, 2], "his")


def test_long_response_cut_mid_character(qwen):
    """A long response stopped by max_tokens inside a character: only the cut tail is special."""
    ids = canonical(qwen, "Tokens and spans. " * 3000 + "Hello 䨻")[:-1]
    shown = decode(qwen, ids)
    assert shown.endswith("\ufffd")
    edited = shown.replace("Tokens and spans.", "Tokens and SPANS.", 1)
    c = correct_text(qwen, ids, edited)
    assert decode(qwen, c.token_ids) == edited
    assert c.method == "splice" and c.removed <= 3
    assert c.token_ids[-3:] == ids[-3:]


def test_bare_backend_tokenizer_is_supported_and_cached(qwen):
    be = qwen.backend_tokenizer  # a tokenizers.Tokenizer: not weakly referenceable, cached strongly
    ids = be.encode("Hello world").ids
    c = correct_text(be, ids, "Hello there world")
    assert be.decode(c.token_ids) == "Hello there world"
    assert get_table(be) is get_table(be)


def test_typed_visible_added_tokens_become_those_tokens(qwen):
    """`<think>` typed by the agent is visible text the API would show for id 151667: it is written as that
    id (as the server tokenizes it in the next prompt), unlike hidden control tokens, which stay text."""
    ids = canonical(qwen, "Answer.") + [IM_END]
    c = correct_text(qwen, ids, "<think>check</think>Answer.")
    assert c.token_ids[:3] == [THINK, *canonical(qwen, "check"), END_THINK][:3]
    assert c.token_ids[-3:] == ids[-3:] and c.token_ids == canonical(qwen, "<think>check</think>Answer.") + [IM_END]
