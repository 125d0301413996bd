"""``otel-tokenfix demo`` as a user runs it (a subprocess, offline), then ``otel-tokenfix inspect`` on its
triplets in both modes, and the HTML page in headless Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("otel-tokenfix")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="120", NO_COLOR="1")
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo-cli")
    proc = _run("demo", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "per LLM call" in proc.stdout and f"triplets: {out / 'triplets.jsonl'}" in proc.stdout.replace("\n", "")
    return out


def _records(demo_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (demo_dir / "triplets.jsonl").read_text(encoding="utf-8").splitlines()]


def test_demo_writes_two_corrected_triplets_and_a_page(demo_dir):
    records = _records(demo_dir)
    assert [r["metadata"]["status"] for r in records] == ["corrected", "corrected"]
    assert (demo_dir / "triplets.html").stat().st_size > 1000


def test_inspect_terminal_on_demo_output(demo_dir, qwen):
    proc = _run("inspect", str(demo_dir / "triplets.jsonl"), "--tokenizer", "builtin:qwen")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "2 call(s) in 1 trace(s)" in out
    # without colour, removed runs are bracketed [-..-] and inserted ones {+..+}
    flat = out.replace("\n", " ")
    assert "[-<think>" in flat and "{+" in flat
    totals = {"inserted": 0, "removed": 0}
    for r in _records(demo_dir):
        totals["inserted"] += r["metadata"]["tokens"]["inserted"]
        totals["removed"] += r["metadata"]["tokens"]["removed"]
    all_row = next(line for line in out.splitlines() if line.strip().startswith("all"))
    assert str(totals["inserted"]) in all_row.split() and str(totals["removed"]) in all_row.split()


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.kinds: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "details" and "call" in classes:
            self.calls += 1
        if tag == "span" and "t" in classes:
            kind = next(c for c in classes if c != "t")
            self.kinds[kind] = self.kinds.get(kind, 0) + 1


@pytest.mark.chromium
def test_inspect_html_on_demo_output_renders(demo_dir, tmp_path, chromium):
    from PIL import Image

    page = tmp_path / "inspect.html"
    proc = _run("inspect", str(demo_dir / "triplets.jsonl"), "-t", "qwen2.5", "--html", str(page), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = _records(demo_dir)
    dom = _Dom()
    dom.feed(chromium.dump_dom(page))
    assert dom.calls == len(records) == 2
    n_response = sum(len(r["response"]["token_ids"]) for r in records)
    n_removed = sum(r["metadata"]["tokens"]["removed"] for r in records)
    n_inserted = sum(r["metadata"]["tokens"]["inserted"] for r in records)
    assert dom.kinds.get("s", 0) + dom.kinds.get("h", 0) + dom.kinds.get("i", 0) == n_response
    assert dom.kinds.get("i", 0) == n_inserted
    assert dom.kinds.get("r", 0) == n_removed
    png = chromium.screenshot(page, tmp_path / "inspect.png", size="1100,800")
    image = Image.open(png).convert("RGB")
    present = {rgb for _, rgb in image.getcolors(maxcolors=1 << 20) or []}
    assert len(present) > 50
    assert (0xFF, 0xD9, 0xD9) in present and (0xFF, 0xF1, 0xC2) in present  # removed and shifted backgrounds
