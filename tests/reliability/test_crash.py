"""Crash safety of ``otel-tokenfix serve --spool``: SIGKILL mid-stream, restart on the same spool,
every triplet exactly once (no loss, no duplicates), and every one still correct."""

from __future__ import annotations

import pytest

from .harness import format_table
from .service_harness import run_crash_recovery


@pytest.fixture(scope="module")
def qwen_dir(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen.save_pretrained(path)
    return path


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sigkill_mid_stream_then_restart_gives_every_triplet_exactly_once(qwen, qwen_dir, tmp_path, protocol):
    rows, ok = run_crash_recovery(qwen, traces=300, tokenizer_dir=qwen_dir, workdir=tmp_path, protocol=protocol)
    print("\n" + format_table(rows))
    figures = dict(rows)
    assert figures["missing / duplicated / unexpected triplets"] == "0 / 0 / 0", figures
    assert ok, figures
