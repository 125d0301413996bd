"""``otel-tokenfix serve``: the OTLP service (gRPC + HTTP) that corrects traces and writes triplets."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..triplets.build import TripletOptions


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def tokenizer_map(specs: list[str]) -> tuple[object, list[str]]:
    """Parse ``--tokenizer`` specs (+ env), load and warm them; (lookup, names). Exits with a clear
    message when one cannot be loaded."""
    from ..engine.correction import TokenFixError
    from ..service.server import load_tokenizers, parse_tokenizer_specs

    parsed = parse_tokenizer_specs(specs)
    try:
        return load_tokenizers(parsed), sorted(parsed)
    except (TokenFixError, OSError) as exc:
        typer.echo(f"error: cannot load tokenizer: {exc}", err=True)
        raise typer.Exit(2) from exc


TokenizerOpt = Annotated[
    list[str],
    typer.Option("--tokenizer", "-t",
                 help="MODEL=DIR (repeatable), DIR for any model, or builtin:qwen; env "
                      "OTEL_TOKENFIX_TOKENIZERS / OTEL_TOKENFIX_DEFAULT_TOKENIZER"),
]
MaskOpt = Annotated[str, typer.Option("--mask", help="loss mask policy: kept | sampled | all")]
TrajectoryOpt = Annotated[bool, typer.Option("--trajectory/--no-trajectory", help="merge continuing calls")]
FinalRewardOpt = Annotated[bool, typer.Option("--final-reward/--no-final-reward", help="trace reward to last call")]


def serve_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="triplets JSONL file (appended)")] = Path(
        "tokenfix-triplets.jsonl"),
    tokenizer: TokenizerOpt = [],  # noqa: B006 - typer needs a literal default
    grpc_addr: Annotated[str, typer.Option("--grpc", help="OTLP/gRPC HOST:PORT ('' disables)")] = "127.0.0.1:4327",
    http_addr: Annotated[str, typer.Option("--http", help="OTLP/HTTP HOST:PORT ('' disables)")] = "127.0.0.1:4328",
    token: Annotated[Optional[str], typer.Option("--token", help="require 'authorization: Bearer TOKEN'; env "
                                                 "OTEL_TOKENFIX_TOKEN")] = None,
    forward: Annotated[Optional[str], typer.Option("--forward", help="send corrected spans on: grpc://HOST:PORT or "
                                                   "http://HOST:PORT/v1/traces")] = None,
    forward_header: Annotated[list[str], typer.Option("--forward-header", help="KEY=VALUE header for --forward")] = [],  # noqa: B006
    forward_max_elapsed: Annotated[float, typer.Option(help="seconds to retry one forward batch")] = 60.0,
    max_message_mib: Annotated[float, typer.Option("--max-message-mib",
                                                   help="request size limit (also after gzip)")] = 64.0,
    root_grace: Annotated[float, typer.Option(help="seconds a trace stays open after its root arrived")] = 2.0,
    hold_timeout: Annotated[float, typer.Option(help="seconds before a trace without root is released")] = 300.0,
    max_traces: Annotated[int, typer.Option(help="held traces at most (oldest released early)")] = 50_000,
    max_spans: Annotated[int, typer.Option(help="held spans at most (oldest trace released early)")] = 1_000_000,
    max_ids: Annotated[int, typer.Option(help="token ids on held spans at most (memory bound)")] = 4_000_000,
    max_queued_spans: Annotated[Optional[int], typer.Option(
        help="released spans waiting for correction at most; beyond it requests get UNAVAILABLE / 503 + "
             "Retry-After (default: --max-spans)")] = None,
    max_queued_ids: Annotated[Optional[int], typer.Option(
        help="token ids waiting for correction at most (default: --max-ids)")] = None,
    mask: MaskOpt = "kept",
    trajectory: TrajectoryOpt = False,
    final_reward: FinalRewardOpt = False,
    fsync: Annotated[bool, typer.Option("--fsync/--no-fsync", help="fsync the triplets file per trace")] = False,
    spool: Annotated[Optional[Path], typer.Option("--spool", help="crash-safe request journal directory")] = None,
    shutdown_grace: Annotated[float, typer.Option(help="seconds in-flight requests get at shutdown")] = 10.0,
    stats_interval: Annotated[float, typer.Option(help="seconds between stats log lines (0: off)")] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Receive OTLP traces (gRPC + HTTP), correct edited LLM spans, write triplets, optionally forward.

    Binds 127.0.0.1 by default. Stops gracefully on SIGTERM/SIGINT: no new requests, held traces released,
    every triplet flushed. Prints 'otel-tokenfix serve ready grpc=... http=...' on stdout when ready.
    """
    from ..service.pipeline import PipelineOptions
    from ..service.server import ENV_TOKEN, ServeConfig, TokenFixService, register_metrics

    setup_logging(log_level)
    try:
        options = TripletOptions(mask=mask, trajectory=trajectory, final_reward=final_reward)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    headers = []
    for h in forward_header:
        k, sep, v = h.partition("=")
        if not sep:
            typer.echo(f"error: --forward-header needs KEY=VALUE, got {h!r}", err=True)
            raise typer.Exit(2)
        headers.append((k.strip().lower(), v.strip()))
    tokenizers, names = tokenizer_map(tokenizer)
    config = ServeConfig(
        grpc=grpc_addr or None,
        http=http_addr or None,
        output=str(output),
        fsync=fsync,
        tokenizers=tokenizers,
        tokenizer_names=names,
        token=token or os.environ.get(ENV_TOKEN) or None,
        forward=forward,
        forward_headers=headers,
        forward_max_elapsed=forward_max_elapsed,
        max_message_bytes=int(max_message_mib * (1 << 20)),
        pipeline=PipelineOptions(triplets=options, root_grace=root_grace, hold_timeout=hold_timeout,
                                 max_traces=max_traces, max_spans=max_spans, max_ids=max_ids,
                                 max_queued_spans=max_queued_spans, max_queued_ids=max_queued_ids),
        shutdown_grace=shutdown_grace,
        stats_interval=stats_interval,
        spool=str(spool) if spool else None,
    )
    if not config.grpc and not config.http:
        typer.echo("error: both --grpc and --http are disabled", err=True)
        raise typer.Exit(2)
    try:
        service = TokenFixService(config)
    except (OSError, RuntimeError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    register_metrics(service)

    def ready(endpoints: dict) -> None:
        parts = " ".join(f"{k}={v}" for k, v in endpoints.items())
        typer.echo(f"otel-tokenfix serve ready {parts} output={output}")
        sys.stdout.flush()
        logger = logging.getLogger("otel_tokenfix.service")
        logger.info("serving %s; tokenizers: %s", parts, ", ".join(config.tokenizer_names) or "none")
        if not config.tokenizer_names:
            logger.warning("no --tokenizer: text edits cannot be applied (spans get status=error); "
                           "token-id edits still work")

    service.run_forever(ready)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
