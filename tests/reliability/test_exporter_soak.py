"""The TripletExporter under the same simulated agents: one triplet per LLM call, exactly once, each
passing the differential check, with a sink that randomly fails (retried, never lost or doubled)."""

from __future__ import annotations

from .harness import CallableFlaky, Workload, format_table, run_exporter_soak


def check(qwen, cfg, **kwargs):
    rows, ok, stats = run_exporter_soak(qwen, cfg, **kwargs)
    print("\n" + format_table(rows))
    assert stats.get("internal_errors", 0) == 0
    assert ok, dict(rows)


def test_exporter_alone_exactly_once_with_a_flaky_sink(qwen):
    check(qwen, Workload(threads=8, spans=3000, seed=17), behind_processor=False)


def test_exporter_behind_processor_exactly_once_with_a_flaky_sink_roots_end_last(qwen):
    check(qwen, Workload(threads=8, spans=3000, seed=17, p_early_root=0.0), behind_processor=True)


def test_exporter_behind_processor_with_early_ending_roots(qwen):
    check(qwen, Workload(threads=8, spans=3000, seed=17, p_early_root=0.3), behind_processor=True)


def test_exporter_with_a_flaky_callable_does_not_duplicate(qwen):
    """A plain callable (``TripletExporter(fn)``) that fails now and then, per record."""
    check(qwen, Workload(threads=4, spans=1500, seed=5), behind_processor=False, sink=CallableFlaky(p_fail=0.05))
