"""``otel-tokenfix inspect``: terminal and HTML modes on a real triplets file; the page in headless Chromium."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from otel_tokenfix.cli.main import app
from otel_tokenfix.inspect import build, read_records
from otel_tokenfix.inspect.html import render_html

runner = CliRunner()


def _records(qwen) -> list[dict]:
    """Two calls of one trace (one corrected, one unchanged) and one of another trace."""
    original = qwen.encode("<think>plan it</think>The tower is, I think, 330 m tall.", add_special_tokens=False)
    keep_a = qwen.encode("The tower is", add_special_tokens=False)
    keep_b = qwen.encode(" 330 m tall.", add_special_tokens=False)
    start_a = next(i for i in range(len(original)) if original[i : i + len(keep_a)] == keep_a)
    start_b = next(i for i in range(len(original)) if original[i : i + len(keep_b)] == keep_b)
    new = qwen.encode(" about", add_special_tokens=False)
    ids = keep_a + new + keep_b
    src = list(range(start_a, start_a + len(keep_a))) + [None] * len(new) + list(range(start_b, start_b + len(keep_b)))
    prov = [0 if s is None else 2 for s in src]
    first = {
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "index": 0,
        "prompt": {"token_ids": [10, 11, 12]},
        "response": {
            "token_ids": ids,
            "log_probs": [None if s is None else -0.25 for s in src],
            "mask": [0 if s is None else 1 for s in src],
            "provenance": prov,
            "source_index": src,
            "text": qwen.decode(ids),
        },
        "reward": None,
        "metadata": {
            "model": "qwen",
            "status": "corrected",
            "edits": 3,
            "original_token_ids": original,
            "continuation": {"holds": True},
        },
    }
    plain = qwen.encode("Final answer: <b>330 m</b> & done.", add_special_tokens=False)
    second = {
        "trace_id": "1" * 32,
        "span_id": "3" * 16,
        "index": 1,
        "prompt": {"token_ids": [10, 11, 12, 13]},
        "response": {"token_ids": plain, "log_probs": None, "mask": [1] * len(plain), "provenance": [1] * len(plain)},
        "reward": 1.0,
        "metadata": {"model": "qwen", "status": "unchanged", "edits": 0, "continuation": None},
    }
    other = dict(second, trace_id="4" * 32, index=0, reward=0.0)
    return [first, second, other]


@pytest.fixture()
def triplets_file(tmp_path, qwen):
    path = tmp_path / "triplets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(qwen)) + '{"torn": ', encoding="utf-8")
    return path


class _Count(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.tokens: dict[str, int] = {}
        self.external: list[str] = []
        self.in_resp = False
        self.tags_in_resp: set[str] = set()
        self.resp_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div" and "resp" in classes:
            self.in_resp = True
        elif self.in_resp:
            self.tags_in_resp.add(tag)
        if tag == "details" and "call" in classes:
            self.calls += 1
        if tag == "span" and "t" in classes:
            kind = next(c for c in classes if c != "t")
            self.tokens[kind] = self.tokens.get(kind, 0) + 1
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(a[key])
        if tag == "link":
            self.external.append(str(a))

    def handle_endtag(self, tag):
        if tag == "div" and self.in_resp:
            self.in_resp = False
            self.resp_text.append("")

    def handle_data(self, data):
        if self.in_resp:
            self.resp_text[-1:] = [(self.resp_text[-1] if self.resp_text else "") + data]


def test_terminal_view_shows_totals_and_struck_text(triplets_file):
    result = runner.invoke(app, ["inspect", str(triplets_file), "--tokenizer", "qwen2.5"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "3 call(s) in 2 trace(s)" in out
    assert "corrected 1, unchanged 2" in out
    assert "The tower is about 330 m tall." not in out  # removed text sits between the kept runs
    plain = re.sub(r"\s+", " ", out)
    # no colour in a pipe: removed runs are bracketed [-..-], inserted ones {+..+}
    assert "[-<think>plan it</think>-]The tower is[-, I think,-]{+ about+} 330 m tall." in plain
    assert "Final answer: <b>330 m</b> & done." in plain


def test_trace_filter_and_missing_tokenizer(triplets_file):
    result = runner.invoke(app, ["inspect", str(triplets_file), "--trace", "4" * 32], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "1 call(s) in 1 trace(s)" in result.output
    assert "tokens are shown as ids" in result.output
    bad = runner.invoke(app, ["inspect", str(triplets_file), "--tokenizer", "no-such-tokenizer"])
    assert bad.exit_code == 2 and "no tokenizer" in bad.output


def test_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    result = runner.invoke(app, ["inspect", str(empty)])
    assert result.exit_code == 1 and "no triplet records" in result.output


def test_html_page_is_self_contained_and_counts_match(triplets_file, tmp_path, qwen):
    page = tmp_path / "view.html"
    result = runner.invoke(app, ["inspect", str(triplets_file), "-t", "qwen2.5", "--html", str(page), "-q"])
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    calls, summary = build(read_records(triplets_file), qwen)
    parsed = _Count()
    parsed.feed(text)
    assert parsed.calls == 3
    assert parsed.external == []
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I)  # no network resource at all
    assert parsed.tokens == {
        "s": summary.totals["sampled"],
        "h": summary.totals["shifted"],
        "i": summary.totals["inserted"],
        "r": summary.totals["removed"],
    }
    # model text is escaped, never markup: the response divs hold only token spans, and their text round-trips
    assert parsed.tags_in_resp == {"span"}
    assert "Final answer: <b>330 m</b> & done." in parsed.resp_text


@pytest.mark.chromium
def test_html_renders_in_headless_chromium(triplets_file, tmp_path, qwen, chromium):
    from PIL import Image

    calls, summary = build(read_records(triplets_file), qwen)
    page = tmp_path / "page.html"
    page.write_text(render_html(calls, summary), encoding="utf-8")
    dom = chromium.dump_dom(page)
    parsed = _Count()
    parsed.feed(dom)
    assert parsed.calls == len(calls) == 3
    assert sum(parsed.tokens.values()) == sum(len(c.pieces) for c in calls)
    assert parsed.tokens["r"] == summary.totals["removed"] > 0
    assert parsed.tokens["i"] == summary.totals["inserted"] > 0

    png = chromium.screenshot(page, tmp_path / "page.png")
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=1 << 20) or []
    present = {rgb for _, rgb in colours}
    assert len(present) > 50  # text, tables and coloured tokens, not a blank page
    assert (0xFF, 0xD9, 0xD9) in present  # removed tokens' background
    assert (0xCF, 0xE8, 0xFF) in present  # inserted tokens' background


def test_tokenizer_from_a_directory_matches_builtin(triplets_file, tmp_path, qwen):
    """``--tokenizer DIR`` (a saved Hugging Face tokenizer) shows the same text as the builtin."""
    tok_dir = tmp_path / "tok"
    qwen.save_pretrained(str(tok_dir))
    by_dir = runner.invoke(app, ["inspect", str(triplets_file), "-t", str(tok_dir)], env={"COLUMNS": "160"})
    by_name = runner.invoke(app, ["inspect", str(triplets_file), "-t", "builtin:qwen"], env={"COLUMNS": "160"})
    assert by_dir.exit_code == 0 and by_name.exit_code == 0, by_dir.output + by_name.output
    assert by_dir.output == by_name.output
    bad = runner.invoke(app, ["inspect", str(triplets_file), "-t", "builtin:nope"])
    assert bad.exit_code == 2 and "unknown builtin tokenizer" in bad.output


def test_limit_shows_fewer_calls_but_counts_all(triplets_file):
    result = runner.invoke(app, ["inspect", str(triplets_file), "--limit", "1"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "2 more call(s) not shown" in result.output
    assert result.output.count("╭─ call") == 1
    all_row = next(line for line in result.output.splitlines() if line.strip().startswith("all"))
    full = runner.invoke(app, ["inspect", str(triplets_file), "--limit", "0"], env={"COLUMNS": "160"})
    assert full.output.count("╭─ call") == 3
    assert all_row == next(line for line in full.output.splitlines() if line.strip().startswith("all"))


@pytest.mark.chromium
def test_html_only_edited_filter_hides_unchanged_calls(triplets_file, tmp_path, qwen, chromium):
    calls, summary = build(read_records(triplets_file), qwen)
    page = tmp_path / "filter.html"
    html = render_html(calls, summary).replace("</body>", "<script>onlyEdited(true)</script></body>")
    page.write_text(html, encoding="utf-8")
    dom = chromium.dump_dom(page)
    hidden = re.findall(r'<details class="call"[^>]*data-status="(\w+)"[^>]*style="display: none;"', dom)
    assert sorted(hidden) == ["unchanged", "unchanged"]
    assert dom.count('<details class="call"') == 3
