"""Bounded memory in the service: a flood of traces whose roots never arrive must stay within the
configured bounds (the process's RSS), and every held span is released (one triplet each), never dropped."""

from __future__ import annotations

from collections import Counter

import pytest

from .service_harness import Sender, orphan_requests, read_triplets, rss_of, start_serve

SPANS = 12_000


@pytest.fixture(scope="module")
def flood(qwen, tmp_path_factory):
    """12 000 rootless 300-token LLM spans into ``serve --max-traces 200 --max-spans 500``."""
    tmp = tmp_path_factory.mktemp("service-flood")
    qwen.save_pretrained(tmp / "tok")
    bodies = orphan_requests(SPANS)
    out = tmp / "t.jsonl"
    serve = start_serve(out, tmp / "tok", "--hold-timeout", "3600", "--max-traces", "200", "--max-spans", "500")
    _, peak0 = rss_of(serve.proc.pid)
    sender = Sender(f"{serve.http}/v1/traces", bodies, threads=2)
    sender.start()
    sender.join()
    _, peak = rss_of(serve.proc.pid)
    rc = serve.stop()
    return {
        "rc": rc,
        "growth_mib": peak - peak0,
        "triplets": Counter(r["span_id"] for r in read_triplets(out)),
        "stderr": serve.stderr_text(),
    }


def test_every_span_of_the_flood_is_released_once(flood):
    assert flood["rc"] == 0, flood["stderr"]
    assert len(flood["triplets"]) == SPANS and max(flood["triplets"].values()) == 1


def test_rss_stays_within_the_bounds(flood):
    # 500 held spans of ~300 ids are a few MiB; allow generous room for the interpreter and buffers
    assert flood["growth_mib"] < 100, flood["growth_mib"]
