"""Exactly once and never wrong, through the real SDK processor, under load and a flaky downstream.

The fast test runs a small workload in the default suite; the soak (``-m soak``) runs
``OTEL_TOKENFIX_SOAK_SPANS`` spans (default sized for CI, well under 3 minutes on 2 cores);
``python -m bench.soak`` runs the full size (>= 200k spans, 16 threads).
"""

from __future__ import annotations

import os

import pytest

from .harness import Workload, format_table, run_processor_soak


def assert_clean(report) -> None:
    print("\n" + format_table(report.rows()))
    acc = report.accounting
    assert report.host_exceptions == 0
    assert acc.sent > 0 and acc.exact, (acc.missing[:5], acc.duplicated[:5], acc.unexpected[:5])
    assert report.check.checked > 0
    assert report.check.text_mismatch == []
    assert report.check.lost_tokens == []
    assert report.check.eos_moved == []
    assert report.check.not_corrected == []


def test_small_workload_exactly_once_and_never_wrong(qwen):
    report = run_processor_soak(qwen, Workload(threads=8, spans=1500, seed=11))
    assert report.edited > 50 and report.downstream_raised > 0  # the faults really happened
    assert_clean(report)


@pytest.mark.soak
def test_soak(qwen):
    spans = int(os.environ.get("OTEL_TOKENFIX_SOAK_SPANS", "40000"))
    report = run_processor_soak(qwen, Workload(threads=16, spans=spans, seed=3))
    assert report.spans_in >= spans
    assert_clean(report)
