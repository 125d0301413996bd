"""Exactly once through the service: every span sent to ``otel-tokenfix serve`` is forwarded to the next
hop exactly once (corrected LLM spans passing the differential check) and every LLM span gives exactly
one triplet — under concurrent senders, traces split across requests, then a graceful stop."""

from __future__ import annotations

import os

import pytest

from .harness import format_table
from .service_harness import run_service_soak


@pytest.fixture(scope="module")
def qwen_dir(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen.save_pretrained(path)
    return path


@pytest.mark.soak
def test_service_forwards_every_span_once_and_writes_every_triplet_once(qwen, qwen_dir, tmp_path):
    spans = int(os.environ.get("OTEL_TOKENFIX_SOAK_SPANS", "40000")) // 4
    rows, ok = run_service_soak(qwen, spans=spans, tokenizer_dir=qwen_dir, workdir=tmp_path)
    print("\n" + format_table(rows))
    assert ok, dict(rows)
