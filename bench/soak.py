"""Full-size reliability soak: ``.venv/bin/python -m bench.soak`` (>= 200k spans, 16 agent threads).

Runs the same harness as ``tests/reliability`` (simulated agents with random edits, rewards, nested
spans and early-ending roots; a downstream that randomly raises or stalls; span-id accounting; the
differential check), then the bounded-memory flood and the service SIGKILL/restart recovery, and prints
the figures table that docs/reliability.md publishes. Options: ``--spans N --threads N --skip-service``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the harness lives with the tests so CI and the bench run the same code
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flood-traces", type=int, default=50_000)
    parser.add_argument("--service-traces", type=int, default=3_000)
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args(argv)

    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer
    from tests.reliability import harness as h

    tok = qwen_tokenizer()
    ok = True
    sections: list[str] = []

    t0 = time.monotonic()
    report = h.run_processor_soak(tok, h.Workload(threads=args.threads, spans=args.spans, seed=args.seed))
    ok &= report.accounting.exact and report.check.wrong == 0 and not report.check.not_corrected
    ok &= report.host_exceptions == 0
    sections.append(h.format_table(report.rows(), f"Processor soak ({args.spans} spans, {args.threads} threads)"))
    print(sections[-1], flush=True)

    rows, good = h.run_flood(tok, traces=args.flood_traces)
    ok &= good
    sections.append(h.format_table(rows, f"Flood of never-ending roots ({args.flood_traces} traces)"))
    print("\n" + sections[-1], flush=True)
    rows, good = h.run_flood(tok, traces=1, edit_spans=args.flood_traces // 5)
    ok &= good
    sections.append(h.format_table(rows, f"One never-ending root, {args.flood_traces // 5} edit-carrying spans"))
    print("\n" + sections[-1], flush=True)

    for behind in (False, True):
        rows, good, _ = h.run_exporter_soak(tok, h.Workload(threads=args.threads, spans=args.spans // 4,
                                                             seed=args.seed), behind_processor=behind)
        ok &= good
        where = "behind the processor" if behind else "alone"
        sections.append(h.format_table(rows, f"TripletExporter {where} ({args.spans // 4} spans, flaky sink)"))
        print("\n" + sections[-1], flush=True)

    if not args.skip_service:
        from tests.reliability.service_harness import run_crash_recovery, run_service_soak

        n = args.spans // 4
        rows, good = run_service_soak(tok, spans=n)
        ok &= good
        sections.append(h.format_table(rows, f"serve --forward: {n} spans from 6 senders, graceful stop"))
        print("\n" + sections[-1], flush=True)

        for spool, protocol in ((True, "http"), (True, "grpc"), (False, "http")):
            rows, good = run_crash_recovery(tok, traces=args.service_traces, spool=spool, protocol=protocol)
            if spool:
                ok &= good
            mode = f"serve --spool, OTLP/{protocol}" if spool else "serve without --spool (what a crash loses)"
            title = f"{mode}: SIGKILL mid-stream, restart ({args.service_traces} traces)"
            sections.append(h.format_table(rows, title))
            print("\n" + sections[-1], flush=True)

    print(f"\ncommand: .venv/bin/python -m bench.soak {' '.join(argv or sys.argv[1:])}".rstrip())
    print(f"total {time.monotonic() - t0:.0f} s; result: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
