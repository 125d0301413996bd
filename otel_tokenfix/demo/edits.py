"""The edits the demo agent makes to model output, as pure text functions.

Why these four: they are what real agents do between the LLM API and the next step (reasoning parsers
drop ``<think>``, guardrails delete hedges, post-processors reorder, tool parsers repair JSON). Each edit
bypasses the API, so without correction the trace keeps the pre-edit token ids.
"""

from __future__ import annotations

import json
import re

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_TOOL = re.compile(r"(<tool_call>\s*)(.*?)(\s*</tool_call>)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def strip_think(text: str) -> str:
    """Drop every ``<think>...</think>`` block and the whitespace after it."""
    return _THINK.sub("", text)


def delete_phrase(text: str, phrase: str) -> str:
    """Delete a hedge phrase (first occurrence); a phrase wrapped in commas leaves no double comma."""
    if phrase not in text:
        return text
    return text.replace(phrase, "", 1)


def reorder_sentences(text: str, first_containing: str) -> str:
    """Move the sentence containing ``first_containing`` to the front (answer in the question's order)."""
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    for i, sentence in enumerate(sentences):
        if first_containing in sentence and i > 0:
            sentences.insert(0, sentences.pop(i))
            return " ".join(sentences)
    return text


def parse_tool_call(text: str) -> dict | None:
    """The JSON object inside ``<tool_call>`` (strict), or None."""
    m = _TOOL.search(text)
    if not m:
        return None
    try:
        value = json.loads(m.group(2))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def repair_tool_json(text: str) -> str:
    """Repair the JSON inside ``<tool_call>`` (trailing commas, single quotes) and re-serialise it compactly
    the way the tool parser would; text without a tool call, or already valid, is returned unchanged."""
    m = _TOOL.search(text)
    if not m:
        return text
    raw = m.group(2)
    try:
        json.loads(raw)
        return text
    except json.JSONDecodeError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", raw)
    try:
        value = json.loads(fixed)
    except json.JSONDecodeError:
        try:
            value = json.loads(fixed.replace("'", '"'))
        except json.JSONDecodeError:
            return text
    return text[: m.start(2)] + json.dumps(value, ensure_ascii=False) + text[m.end(2) :]
