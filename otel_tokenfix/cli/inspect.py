"""``otel-tokenfix inspect TRIPLETS.jsonl [--html OUT.html]``: the token-level view of any triplets file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def inspect_command(
    triplets: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a triplets JSONL file")],
    html: Annotated[Optional[Path], typer.Option("--html", help="also write one self-contained HTML page here")] = None,
    tokenizer: Annotated[
        Optional[str],
        typer.Option(
            "--tokenizer",
            "-t",
            help="tokenizer directory or file, or builtin:qwen|mistral_spm|tekken; without it ids are shown",
        ),
    ] = None,
    trace: Annotated[Optional[str], typer.Option("--trace", help="only calls of this trace id")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="with --html: print only the summary table")] = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="calls shown in the terminal (0: all); totals count all")
    ] = 50,
) -> None:
    """Show each call's response coloured by provenance (sampled / shifted / inserted), removed text struck
    through, and the totals."""
    from rich.console import Console

    from ..engine.correction import TokenFixError
    from ..inspect import build, read_records, resolve_tokenizer
    from ..inspect.terminal import legend, render, summary_table

    console = Console()
    try:
        tok = resolve_tokenizer(tokenizer)
    except TokenFixError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    records = [r for r in read_records(triplets) if trace is None or str(r.get("trace_id")) == trace]
    calls, summary = build(records, tok)
    if not calls:
        console.print(f"[yellow]no triplet records in {triplets}[/yellow]")
        raise typer.Exit(1)
    if html is not None and quiet:
        console.print(summary_table(summary, calls, limit))
        console.print(legend(markers=console.no_color or console.color_system is None))
    else:
        render(calls, summary, console, limit=limit)
    if tok is None:
        console.print("[dim]no --tokenizer given: tokens are shown as ids[/dim]")
    if html is not None:
        from ..inspect.html import render_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(render_html(calls, summary, title=f"otel-tokenfix inspect · {triplets.name}"), encoding="utf-8")
        console.print(f"HTML view: [bold]{html}[/bold]")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
