"""Runs INSIDE the agentlightning==0.3.0 venv (never imports otel_tokenfix): replays OTLP-protobuf
spans through agent-lightning's own OtelTracer into an InMemoryLightningStore, then converts the stored
spans with its TracerTraceToTriplet and prints the triplets as JSON.

Usage: python agl_replay.py A.pb [B.pb ...] [C.json]  ->  stdout: one JSON list, per argument:
- ``*.pb``: ``{"triplets": [...], "spans": N}`` (one rollout per file, in one store);
- ``*.json``: a list of our ``to_agl_dict`` payloads, each validated as ``agentlightning.Triplet(**d)``
  (what ``otel_tokenfix.triplets.formats.to_agl_triplet`` does): ``{"validated": [model_dump, ...]}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from opentelemetry import trace as trace_api  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


async def replay(store, tracer, path: str) -> dict:
    from agentlightning import TracerTraceToTriplet

    req = ExportTraceServiceRequest()
    with open(path, "rb") as fh:
        req.ParseFromString(fh.read())
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]

    rollout = await store.start_rollout(input={"task": path})
    by_id = {s.span_id: s for s in spans}
    children = {}
    roots = []
    for s in spans:
        if s.parent_span_id and s.parent_span_id in by_id:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            roots.append(s)
    async with tracer.trace_context(
        "interop", rollout_id=rollout.rollout_id, attempt_id=rollout.attempt.attempt_id
    ) as otel_tracer:
        opened = []

        def start(s, parent_ctx):
            span = otel_tracer.start_span(
                s.name, context=parent_ctx, attributes=attrs(s.attributes), start_time=s.start_time_unix_nano
            )
            for ev in s.events:
                span.add_event(ev.name, attrs(ev.attributes), timestamp=ev.time_unix_nano)
            opened.append((s.end_time_unix_nano, span))
            ctx = trace_api.set_span_in_context(span)
            for child in children.get(s.span_id, []):
                start(child, ctx)

        for root in roots:
            start(root, None)
        for end, span in sorted(opened, key=lambda x: x[0]):  # end in time order, as the agent did
            span.end(end_time=end)
    stored = list(await store.query_spans(rollout.rollout_id))
    triplets = TracerTraceToTriplet().adapt(stored)
    out = [
        {
            "prompt_token_ids": t.prompt.get("token_ids"),
            "response_token_ids": t.response.get("token_ids"),
            "reward": t.reward,
            "response_id": (t.metadata or {}).get("response_id"),
        }
        for t in triplets
    ]
    return {"triplets": out, "spans": len(stored)}


async def main(paths: list[str]) -> None:
    from agentlightning import InMemoryLightningStore, OtelTracer

    store = InMemoryLightningStore()
    tracer = OtelTracer()
    tracer.init_worker(0, store)
    out = []
    for p in paths:
        if p.endswith(".json"):
            from agentlightning import Triplet

            with open(p) as fh:
                out.append({"validated": [Triplet(**d).model_dump(mode="json") for d in json.load(fh)]})
        else:
            out.append(await replay(store, tracer, p))
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
