"""One self-contained HTML page for a triplets file: summary on top, one collapsible block per call.

Why self-contained: the page is attached to bug reports and opened offline, so it loads nothing from the
network (inline CSS and a few lines of inline script, no fonts, no CDNs).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .model import CONTEXT, KINDS, CallView, Summary

_CLASS = {"sampled": "s", "shifted": "h", "inserted": "i", "removed": "r", "context": "c"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5rem;color:#1d1d1f;
 background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .6rem}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0 1rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f0f0f0}
td.l,th.l{text-align:left}
.legend span{margin-right:.8rem}
details.call{background:#fff;border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.3rem .7rem}
details.call>summary{cursor:pointer;font-weight:600;padding:.2rem 0}
.meta{color:#666;font-size:.8rem;font-weight:400}
.resp{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem;white-space:pre-wrap;
 word-break:break-word;line-height:1.55;margin:.4rem 0}
.t,.key{border-radius:2px}.key{padding:0 .3rem}
.s{background:#e3f4e3}.t.s:nth-child(even){background:#cdebcd}
.h{background:#fff1c2}.t.h:nth-child(even){background:#ffe59a}
.i{background:#cfe8ff;outline:1px solid #4a90d9}
.r{background:#ffd9d9;color:#a00;text-decoration:line-through}
.c{color:#888;background:#f1f1f1}
.note{color:#a60;font-size:.8rem}
button{font-size:.8rem;margin-right:.4rem}
"""

_JS = """
function setAll(open){document.querySelectorAll('details.call').forEach(d=>d.open=open);}
function onlyEdited(on){document.querySelectorAll('details.call[data-status="unchanged"]')
 .forEach(d=>d.style.display=on?'none':'');}
"""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _summary(summary: Summary, calls: Sequence[CallView]) -> str:
    head = "".join(f"<th>{k}</th>" for k in KINDS)
    rows = []
    for c in calls:
        cells = "".join(f"<td>{c.count(k)}</td>" for k in KINDS)
        rows.append(
            f'<tr><td>{c.index}</td><td class="l">{escape(c.model or "-")}</td><td class="l">{escape(c.status)}</td>'
            f'<td>{c.edits}</td>{cells}<td>{_fmt(c.reward)}</td><td class="l">{escape(c.continuation)}</td></tr>'
        )
    totals = "".join(f"<td><b>{summary.totals[k]}</b></td>" for k in KINDS)
    statuses = ", ".join(f"{escape(k)} {v}" for k, v in sorted(summary.statuses.items()))
    rows.append(
        f'<tr class="total"><td><b>all</b></td><td class="l">{summary.traces} trace(s)</td><td class="l">{statuses}'
        f"</td><td></td>{totals}<td>{_fmt(sum(summary.rewards)) if summary.rewards else '-'}</td><td></td></tr>"
    )
    return (
        '<table id="summary"><tr><th>call</th><th class="l">model</th><th class="l">status</th><th>edits</th>'
        f'{head}<th>reward</th><th class="l">continuation</th></tr>{"".join(rows)}</table>'
    )


def _token(piece_kind: str, text: str, token_id: int | None, logprob: float | None) -> str:
    title = piece_kind + ("" if token_id is None else f" · id {token_id}")
    title += "" if logprob is None else f" · logprob {logprob:.3f}"
    return f'<span class="t {_CLASS.get(piece_kind, "s")}" title="{escape(title)}">{escape(text)}</span>'


def _call(call: CallView, open_: bool) -> str:
    counts = " · ".join(f"{k} {call.count(k)}" for k in KINDS)
    what = f"trajectory {call.index} ({call.calls} calls)" if call.calls > 1 else f"call {call.index}"
    tokens = "".join(_token(p.kind, p.text, p.token_id, p.logprob) for p in call.pieces)
    note = f'<div class="note">{escape(call.note)}</div>' if call.note else ""
    return (
        f'<details class="call" data-index="{call.index}" data-status="{escape(call.status)}"'
        f"{' open' if open_ else ''}>"
        f"<summary>{what} · {escape(call.model or 'model ?')} · {escape(call.status)} "
        f'<span class="meta">reward {_fmt(call.reward)} · {counts} · continuation {escape(call.continuation)}</span>'
        f'</summary><div class="meta">trace {escape(call.trace_id)} · span {escape(call.span_id)} · prompt '
        f"{call.prompt_tokens} tokens · {call.edits} edit(s)</div>{note}"
        f'<div class="resp">{tokens}</div></details>'
    )


def render_html(calls: Sequence[CallView], summary: Summary, *, title: str = "otel-tokenfix inspect") -> str:
    """The whole page as a string. Calls with edits start open; with few calls, all do."""
    kinds = (*KINDS, CONTEXT) if any(c.count(CONTEXT) for c in calls) else KINDS
    legend = "".join(f'<span class="key {_CLASS[k]}">{"between turns" if k == CONTEXT else k}</span>' for k in kinds)
    body = "".join(_call(c, open_=len(calls) <= 8 or c.status != "unchanged") for c in calls)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style><script>{_JS}</script></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<div class="legend">{legend}</div>'
        f"{_summary(summary, calls)}"
        '<div><button onclick="setAll(true)">expand all</button><button onclick="setAll(false)">collapse all</button>'
        '<label><input type="checkbox" onchange="onlyEdited(this.checked)"> only calls with edits</label>'
        f'</div><div id="calls">{body}</div></body></html>\n'
    )
