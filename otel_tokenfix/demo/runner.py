"""Wire the demo together the way a user would: server, tracing, agent, then check and report.

Why in-process and offline: ``otel-tokenfix demo`` must work on a fresh machine with no network and no
GPU. The server is real HTTP on 127.0.0.1, the client is the official ``openai`` package, the tracing is
the real OpenTelemetry SDK with our processor and exporter installed like in the README's quick start.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .script import MODEL, TURNS, Turn

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from .agent import AgentResult
    from .checks import CallCheck

ROLLOUT_ID = "demo-rollout-0"
ATTEMPT_ID = "demo-attempt-0"


@dataclass
class DemoResult:
    """Everything one demo run produced: files, the agent's own log, the records and their checks."""

    out_dir: Path
    triplets_path: Path
    html_path: Path | None
    server_url: str
    agent: AgentResult
    records: list[dict[str, Any]]
    checks: list[CallCheck]
    seconds: float

    @property
    def ok(self) -> bool:
        return len(self.records) == len(self.agent.calls) and all(c.exact and c.provenance_ok for c in self.checks)


def split_positions(tokenizer: Any, turn: Turn) -> list[int]:
    """Token positions of the turn's ``split_words`` (the server samples them as two sub-tokens)."""
    from .vllm_server import token_table

    table = token_table(tokenizer)
    ids = table.encode(turn.text)
    wanted = set(turn.split_words)
    return [i for i, t in enumerate(ids) if table.token_text(t) in wanted and table.split_token(t) is not None]


def replies(tokenizer: Any) -> list[Any]:
    from .vllm_server import Reply

    return [Reply(turn.text, split=split_positions(tokenizer, turn)) for turn in TURNS]


def run_agent(tokenizer: Any, triplets_path: Path) -> tuple[AgentResult, str]:
    """Serve, trace and run the agent once; returns what the agent did and the server's URL."""
    import openai
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .. import TokenFixSpanProcessor, TripletExporter, instrument_openai, uninstrument_openai
    from .agent import RagAgent
    from .vllm_server import VLLMLikeServer

    with VLLMLikeServer(replies(tokenizer), tokenizer=tokenizer, model=MODEL, seed=7) as server:
        # --- what a user adds to their tracing setup (see the README quick start) ---
        resource = Resource.create(
            {
                "service.name": "otel-tokenfix-demo",
                "agentlightning.rollout_id": ROLLOUT_ID,
                "agentlightning.attempt_id": ATTEMPT_ID,
            }
        )
        provider = TracerProvider(resource=resource)
        exporting = BatchSpanProcessor(TripletExporter(str(triplets_path)))
        provider.add_span_processor(TokenFixSpanProcessor(exporting, tokenizers={MODEL: tokenizer}))
        client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
        instrument_openai(client, tracer_provider=provider)
        # ---------------------------------------------------------------------------
        try:
            result = RagAgent(client, provider, model=MODEL).run()
        finally:
            uninstrument_openai(client)
            provider.force_flush()
            provider.shutdown()
        return result, server.base_url


def run_demo(out_dir: str | Path | None = None, *, console: Console | None = None, html: bool = True) -> DemoResult:
    """Run the whole demo; print the report to ``console`` (if given) and return what happened."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..inspect import build, read_records
    from ..inspect.html import render_html
    from ..tokenizers.builtin import qwen_tokenizer
    from .checks import check_call

    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="otel-tokenfix-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    triplets_path = out / "triplets.jsonl"
    if triplets_path.exists():
        triplets_path.unlink()  # a re-run starts a fresh file
    tokenizer = qwen_tokenizer()
    result, server_url = run_agent(tokenizer, triplets_path)

    records = [r for r in read_records(triplets_path) if r.get("trace_id") == result.trace_id]
    records.sort(key=lambda r: r.get("index", 0))
    checks = [
        check_call(tokenizer, rec, log.final_text, log.original_ids, log.logprobs)
        for rec, log in zip(records, result.calls, strict=False)
    ]
    html_path = None
    if html:
        calls, summary = build(records, tokenizer)
        html_path = out / "triplets.html"
        html_path.write_text(render_html(calls, summary, title="otel-tokenfix demo · triplets"), encoding="utf-8")
    demo = DemoResult(
        out_dir=out,
        triplets_path=triplets_path,
        html_path=html_path,
        server_url=server_url,
        agent=result,
        records=records,
        checks=checks,
        seconds=time.perf_counter() - started,
    )
    if console is not None:
        from .report import render

        render(console, demo, tokenizer=tokenizer, model=MODEL)
    return demo
