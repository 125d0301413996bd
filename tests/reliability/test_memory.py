"""Bounded memory: a flood of traces whose roots never end stays within the processor's bounds, and
the spans pushed out by the bounds are released (marked), never dropped."""

from __future__ import annotations

from .harness import format_table, run_flood


def test_flood_of_never_ending_roots_stays_bounded(qwen):
    rows, ok = run_flood(qwen, traces=6000, response_tokens=400, max_spans=256, max_traces=128)
    print("\n" + format_table(rows))
    figures = dict(rows)
    assert figures["missing / duplicated"] == "0 / 0"
    assert ok, figures


def test_spans_kept_for_their_edit_events_count_against_the_bound(qwen):
    """Spans that carry ``text.edited`` events pass through at once but are remembered for their
    trace's correction; an agent that edits in a loop without ever ending its root must not grow
    memory past the bound either."""
    rows, ok = run_flood(qwen, traces=1, response_tokens=400, max_spans=256, max_traces=128, edit_spans=6000)
    print("\n" + format_table(rows))
    figures = dict(rows)
    assert figures["missing / duplicated"] == "0 / 0"
    assert ok, figures
