"""Terminal view of a triplets file (rich): a summary table, then each call's response token by token.

Why rich: colour by provenance is the whole point of the view, and rich degrades to plain text when the
output is not a terminal (pipes, CI logs), so the same code serves both.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .model import CONTEXT, KINDS, CallView, Summary

#: one style per provenance; two backgrounds alternate so token boundaries stay visible.
STYLES: dict[str, tuple[str, str]] = {
    "sampled": ("green", "green on grey11"),
    "shifted": ("yellow", "yellow on grey11"),
    "inserted": ("bold cyan", "bold cyan on grey11"),
    "removed": ("red strike", "red strike on grey11"),
    "context": ("dim", "dim on grey11"),
}
#: wdiff-style markers used when the console has no colour (pipes, NO_COLOR): removed [-..-], inserted {+..+}.
MARKERS = {"removed": ("[-", "-]"), "inserted": ("{+", "+}")}
#: styles of the count columns (a struck-through number would read as "not counted").
COUNT_STYLES = {kind: STYLES[kind][0].replace(" strike", "") for kind in STYLES}
LABELS = {"sampled": "sampled", "shifted": "shifted", "inserted": "inserted", "removed": "removed"}
LABELS["context"] = "between turns"


def legend(*, markers: bool = False, context: bool = False) -> Text:
    text = Text("legend: ")
    for kind in (*KINDS, CONTEXT) if context else KINDS:
        label = LABELS[kind]
        if markers and kind in MARKERS:
            label = MARKERS[kind][0] + label + MARKERS[kind][1]
        text.append(f" {label} ", style=STYLES[kind][0])
    return text


def summary_table(summary: Summary, calls: Sequence[CallView], limit: int = 0) -> Table:
    """Totals over every call; one row per call for the first ``limit`` calls (0: all)."""
    models = sorted({c.model for c in calls if c.model})
    title = f"{summary.calls} call(s) in {summary.traces} trace(s)" + (f" · {', '.join(models)}" if models else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), header_style="bold")
    many_traces = summary.traces > 1
    if many_traces:
        table.add_column("trace")
    table.add_column("call", justify="right")
    table.add_column("status")
    table.add_column("edits", justify="right")
    for kind in KINDS:
        table.add_column(kind, justify="right", style=COUNT_STYLES[kind], no_wrap=True)
    table.add_column("reward", justify="right")
    table.add_column("continuation", overflow="fold")
    shown = calls if limit <= 0 else calls[:limit]
    for c in shown:
        table.add_row(
            *([c.trace_id[:8]] if many_traces else []),
            str(c.index),
            c.status,
            str(c.edits),
            *(str(c.count(k)) for k in KINDS),
            "-" if c.reward is None else f"{c.reward:g}",
            c.continuation,
        )
    table.add_section()
    if len(shown) < len(calls):
        table.add_row(*([""] if many_traces else []), "…", f"{len(calls) - len(shown)} more", *[""] * 7)
    table.add_row(
        *([""] if many_traces else []),
        "all",
        "",
        str(sum(c.edits for c in calls)),
        *(str(summary.totals[k]) for k in KINDS),
        f"{sum(summary.rewards):g}" if summary.rewards else "-",
        ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())),
    )
    return table


def response_text(call: CallView, *, markers: bool = False) -> Text:
    """The response token by token; ``markers`` adds wdiff-style brackets around removed/inserted runs."""
    text = Text()
    pieces = call.pieces
    for n, piece in enumerate(pieces):
        style = STYLES.get(piece.kind, STYLES["sampled"])[n % 2]
        mark = MARKERS.get(piece.kind) if markers else None
        if mark and (n == 0 or pieces[n - 1].kind != piece.kind):
            text.append(mark[0], style=style)
        text.append(piece.text, style=style)
        if mark and (n + 1 == len(pieces) or pieces[n + 1].kind != piece.kind):
            text.append(mark[1], style=style)
    return text


def call_panel(call: CallView, *, markers: bool = False) -> Panel:
    what = f"trajectory {call.index} ({call.calls} calls)" if call.calls > 1 else f"call {call.index}"
    title = f"{what} · {call.model or 'model ?'} · {call.status}"
    counts = "  ".join(f"{k} {call.count(k)}" for k in KINDS)
    meta = Text(f"span {call.span_id} · prompt {call.prompt_tokens} tokens · {counts}", style="dim")
    parts: list[Text] = [meta]
    if call.note:
        parts.append(Text(call.note, style="italic dim"))
    parts.append(response_text(call, markers=markers))
    return Panel(Group(*parts), title=title, title_align="left")


def render(calls: Sequence[CallView], summary: Summary, console: Console | None = None, *, limit: int = 0) -> None:
    """Summary table, legend, then one panel per call (the first ``limit`` calls; 0: all)."""
    console = console or Console()
    console.print(summary_table(summary, calls, limit))
    markers = console.no_color or console.color_system is None
    console.print(legend(markers=markers, context=any(c.count(CONTEXT) for c in calls)))
    shown = calls if limit <= 0 else calls[:limit]
    for call in shown:
        console.print(call_panel(call, markers=markers))
    if len(shown) < len(calls):
        console.print(Text(f"{len(calls) - len(shown)} more call(s) not shown (--limit 0 shows all)", style="dim"))
