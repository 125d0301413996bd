"""The demo's terminal report (rich): one compact table over the calls, each call's corrected response
coloured by provenance, the continuation check between turns, and where the files are.

Why a separate module: the runner stays about wiring (server, tracing, agent); this is presentation only
and reuses the ``inspect`` view so the demo and ``otel-tokenfix inspect`` show tokens the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..inspect.model import call_view
from ..inspect.terminal import COUNT_STYLES, legend, response_text

if TYPE_CHECKING:  # pragma: no cover
    from .agent import CallLog
    from .checks import CallCheck
    from .runner import DemoResult


def cli_name() -> str:
    """How to type ``otel-tokenfix`` here: bare if it is on PATH, else the venv's script (``make demo``
    users have it in ``.venv/bin`` only), relative to the working directory when that is shorter."""
    import os
    import shutil
    import sys

    if shutil.which("otel-tokenfix"):
        return "otel-tokenfix"
    script = Path(sys.executable).with_name("otel-tokenfix")
    if not script.exists():
        return "otel-tokenfix"
    try:
        rel = os.path.relpath(script)
    except ValueError:  # another drive (Windows)
        return str(script)
    return rel if len(rel) < len(str(script)) else str(script)


def _mark(ok: bool) -> Text:
    return Text("yes", style="bold green") if ok else Text("NO", style="bold red")


def calls_table(logs: Sequence[CallLog], checks: Sequence[CallCheck]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 0), header_style="bold", title="per LLM call", title_justify="left")
    table.add_column("call", justify="right")
    table.add_column("step")
    table.add_column("edits", justify="right")
    for kind in ("sampled", "shifted", "inserted", "removed"):
        table.add_column(kind, justify="right", style=COUNT_STYLES[kind])
    table.add_column("re-encode", justify="right", style="magenta")
    table.add_column("exact", justify="center")
    for i, (log, chk) in enumerate(zip(logs, checks, strict=True)):
        table.add_row(
            str(i),
            log.step,
            str(len(log.edits)),
            str(chk.sampled),
            str(chk.shifted),
            str(chk.inserted),
            str(chk.removed),
            str(chk.retok_no_origin),
            _mark(chk.exact and chk.provenance_ok),
        )
    return table


def continuation_lines(records: Sequence[dict[str, Any]]) -> list[Text]:
    lines: list[Text] = []
    for i, rec in enumerate(records[:-1]):
        cont = (rec.get("metadata") or {}).get("continuation")
        line = Text(f"call {i} -> call {i + 1}: ")
        if not isinstance(cont, dict):
            line.append("not checked", style="dim")
        elif cont.get("holds"):
            line.append("holds", style="bold green")
            line.append(": the next prompt starts with this prompt + the corrected response ids, so a trainer")
            line.append(" can merge the turns into one sequence.")
        else:
            first = cont.get("first_mismatch") or {}
            kind = first.get("kind")
            line.append("breaks", style="bold yellow")
            line.append(f" at next-prompt token {first.get('position')} ")
            where = {
                "edit_window": "inside an edited window: the server re-tokenized the edited text there",
                "response": "outside the edits: the server re-tokenized sampled text differently",
                "prompt": "in the prompt: the history was re-rendered",
                "end": "the next prompt is shorter",
            }.get(str(kind), str(kind))
            line.append(f"({where})")
            if cont.get("confined_to_edits"):
                line.append("; every difference is inside an edited window, so an edit-aware merge is sound")
        lines.append(line)
    return lines


def render(console: Console, demo: DemoResult, *, tokenizer: Any, model: str) -> None:
    """The whole report of one demo run."""
    logs, records, checks = demo.agent.calls, demo.records, demo.checks
    console.print(
        Text.assemble(
            ("otel-tokenfix demo", "bold"),
            f"  a RAG agent (think -> search -> think -> answer) on a vLLM-like server at {demo.server_url}\n",
            (
                f"model {model}, real Qwen2.5 tokenizer and chat template; scripted answers, some sampled as "
                "non-canonical token splits; openai client traced with OpenTelemetry + TokenFixSpanProcessor "
                "+ TripletExporter",
                "dim",
            ),
        )
    )
    markers = console.no_color or console.color_system is None
    console.print(legend(markers=markers))
    for i, (log, rec) in enumerate(zip(logs, records, strict=False)):
        view = call_view(rec, tokenizer, i)
        title = f"call {i} · {log.step} · {', '.join(k for k, _ in log.edits) or 'no edits'}"
        console.print(Panel(response_text(view, markers=markers), title=title, title_align="left", box=box.ROUNDED))
    console.print(calls_table(logs, checks))
    console.print(
        Text(
            "sampled/shifted: sampled tokens kept with their ids and logprobs (shifted: after an edit, so their "
            "context changed); inserted: written by the correction; re-encode: tokens a full re-tokenization of the "
            "edited text would put in the trace that the model never sampled (compare with inserted); exact: the "
            "ids decode to the agent's text and every kept token is the sampled id with its logprob.",
            style="dim",
        )
    )
    for line in continuation_lines(records):
        console.print(line)
    answer, reward = demo.agent.answer, demo.agent.reward
    console.print(Text.assemble("answer: ", (answer, "bold"), f"  reward {reward:g} (on call {len(logs) - 1})"))
    console.print(Text.assemble("triplets: ", (str(demo.triplets_path), "bold"), f" ({len(records)} records)"))
    if demo.html_path is not None:
        console.print(Text.assemble("html view: ", (str(demo.html_path), "bold")))
    console.print(
        Text(f"look closer: {cli_name()} inspect {demo.triplets_path} --tokenizer builtin:qwen", style="cyan"),
        soft_wrap=True,
    )
    console.print(Text(f"done in {demo.seconds:.1f} s", style="dim"))
