"""The README's promises, checked: its first lines, its SDK quick start (run for real against the vLLM-like
server), its links, commands, options and environment variables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from otel_tokenfix.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_after(marker: str) -> str:
    """The fenced code block that follows ``<!-- marker -->``."""
    m = re.search(rf"<!-- {re.escape(marker)} -->\s*```[a-z]*\n(.*?)```", README, re.S)
    assert m, f"README has no code block after <!-- {marker} -->"
    return m.group(1)


def test_readme_starts_with_the_two_setup_commands():
    head = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert head[0].startswith("make demo ") and head[1].startswith("make test ")


def test_sdk_quick_start_runs_and_writes_a_corrected_triplet(tmp_path, qwen):
    """The snippet as printed, with only the server URL and the tokenizer path swapped for local ones."""
    from otel_tokenfix.demo.vllm_server import Reply, VLLMLikeServer

    code = code_after("quickstart-sdk")
    tok_dir = tmp_path / "Qwen2.5-7B-Instruct"
    qwen.save_pretrained(str(tok_dir))
    sampled = "<think>\nThe user greets me.\n</think>\nHello! How can I help you today?"
    with VLLMLikeServer([Reply(sampled, split=[12, 14])], tokenizer=qwen, model="Qwen/Qwen2.5-7B-Instruct") as srv:
        code = code.replace('"http://localhost:8000/v1"', repr(srv.base_url))
        code = code.replace('"/models/Qwen2.5-7B-Instruct"', repr(str(tok_dir)))
        assert srv.base_url in code and str(tok_dir) in code
        (tmp_path / "agent.py").write_text(code, encoding="utf-8")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        proc = subprocess.run(
            [sys.executable, "agent.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
        )
        assert proc.returncode == 0, proc.stderr
        original = srv.generations[0].token_ids
        original_lp = srv.generations[0].logprobs
    lines = (tmp_path / "triplets.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    resp = rec["response"]
    assert qwen.decode(resp["token_ids"], skip_special_tokens=True) == "Hello! How can I help you today?"
    assert rec["metadata"]["status"] == "corrected" and rec["reward"] == 1.0
    assert rec["metadata"]["original_token_ids"] == original
    kept = [(pos, s) for pos, s in enumerate(resp["source_index"]) if s is not None]
    assert len(kept) >= len(resp["token_ids"]) - 2  # only a window around the edit is re-encoded
    assert resp["log_probs"] is not None, "the sampled logprobs must survive correction"
    for pos, s in kept:
        assert resp["token_ids"][pos] == original[s]
        assert resp["log_probs"][pos] == pytest.approx(original_lp[s])


def test_relative_links_exist():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert links, "README links its documents"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def test_cli_commands_and_options_in_readme_exist():
    runner = CliRunner()
    for command in sorted(set(re.findall(r"otel-tokenfix (\w+)", README))):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"otel-tokenfix {command}: {result.output}"
        used = set()
        for line in README.splitlines():
            m = re.search(rf"otel-tokenfix {command}\b(.*)", line)
            if m:
                used |= set(re.findall(r"(--[a-z][a-z-]*)", m.group(1).split("#")[0]))
        for option in used:
            assert option in result.output, f"otel-tokenfix {command} has no {option}"


def test_environment_variables_in_readme_are_read_by_the_code():
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "otel_tokenfix").rglob("*.py"))
    for name in sorted(set(re.findall(r"\b(OTEL_TOKENFIX_[A-Z_]+)", README))):
        suffix = name.removeprefix("OTEL_TOKENFIX_")
        assert name in source or f'"{suffix}"' in source or f"'{suffix}'" in source, name
