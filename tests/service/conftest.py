"""Fixtures for the service tests: the Qwen tokenizer saved to a directory (what `--tokenizer` loads)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def qwen_dir(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen.save_pretrained(path)
    return path
