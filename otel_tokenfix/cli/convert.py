"""``otel-tokenfix convert IN [-o OUT]``: Collector file-exporter output -> triplets JSONL (offline)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..triplets.build import TripletOptions
from .serve import FinalRewardOpt, MaskOpt, TokenizerOpt, TrajectoryOpt, setup_logging, tokenizer_map


def _default_output(src: Path) -> Path:
    name = src.name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return src.with_name(name + ".triplets.jsonl")


def convert_command(
    src: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                        help="OTLP/JSON lines from the Collector's file exporter (.gz ok)")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="triplets JSONL ('-' for stdout); "
                                                    "default IN.triplets.jsonl")] = None,
    tokenizer: TokenizerOpt = [],  # noqa: B006
    mask: MaskOpt = "kept",
    trajectory: TrajectoryOpt = False,
    final_reward: FinalRewardOpt = False,
    root_grace: Annotated[float, typer.Option(help="seconds (of span time) a trace stays open after its root")] = 1.0,
    hold_timeout: Annotated[float, typer.Option(help="seconds (of span time) before a rootless trace is released")
                            ] = 300.0,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="progress bar (default: on a "
                                                     "terminal)")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "warning",
) -> None:
    """Correct the traces of a recorded file and write their triplets (same pipeline as ``serve``).

    Streams: memory is bounded by the traces open at one point of the recording, not the file size.
    """
    from rich.console import Console

    from ..service.convert import convert_file
    from ..service.pipeline import PipelineOptions

    setup_logging(log_level)
    try:
        options = TripletOptions(mask=mask, trajectory=trajectory, final_reward=final_reward)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    tokenizers, _ = tokenizer_map(tokenizer)
    out = output or _default_output(src)
    if str(out) == "-":
        from ..triplets.sinks import CallableSink

        def write(records) -> None:  # one trace at a time, whole lines
            sys.stdout.write("".join(r.to_json() + "\n" for r in records))
            sys.stdout.flush()

        sink = CallableSink(write, batch=True)
        console = Console(stderr=True)
    else:
        sink = str(out)  # type: ignore[assignment]
        if out.exists():
            out.unlink()  # a conversion writes a fresh file
        console = Console(stderr=True)
    pipeline_options = PipelineOptions(triplets=options, root_grace=root_grace, hold_timeout=hold_timeout)
    show = console.is_terminal if progress is None else progress
    total = os.path.getsize(src)
    if show:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]convert"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[info]}"), console=console) as bar:
            task = bar.add_task("convert", total=total, info="")

            def on_progress(done: int, r) -> None:
                bar.update(task, completed=done, info=f"{r.spans} spans · {r.triplets} triplets")

            result = convert_file(src, sink, tokenizers=tokenizers, options=pipeline_options, progress=on_progress)
            bar.update(task, completed=total, info=f"{result.spans} spans · {result.triplets} triplets")
    else:
        result = convert_file(src, sink, tokenizers=tokenizers, options=pipeline_options)
    summary = {k: getattr(result, k) for k in ("lines", "bad_lines", "spans", "traces", "triplets", "corrected",
                                                "errors", "incomplete_traces")}
    console.print(f"converted {src} -> {out}: " + json.dumps(summary))
    if result.lines and result.bad_lines == result.lines:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
