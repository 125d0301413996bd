"""``otel-tokenfix demo`` end to end: real server on 127.0.0.1, real ``openai`` client, real Qwen tokenizer,
real OpenTelemetry SDK with TokenFixSpanProcessor + TripletExporter; the triplets must be exact and their
provenance provable."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from otel_tokenfix.demo import edits
from otel_tokenfix.demo.checks import check_call, retokenize
from otel_tokenfix.demo.runner import ATTEMPT_ID, ROLLOUT_ID, run_demo
from otel_tokenfix.demo.script import GOLD_FACTS, HEDGE, MODEL, TURN_ANSWER, TURN_SEARCH

ROOT = Path(__file__).resolve().parents[2]


def expected_texts() -> list[str]:
    """What the agent must end up using, computed independently from the script."""
    search = edits.repair_tool_json(TURN_SEARCH.text)
    answer = edits.reorder_sentences(edits.delete_phrase(edits.strip_think(TURN_ANSWER.text), HEDGE), GOLD_FACTS[0])
    return [search, answer]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    result = run_demo(out, console=Console(file=buf, width=140, color_system=None))
    return result, buf.getvalue()


def test_every_call_becomes_one_exact_triplet(demo, qwen):
    result, _ = demo
    assert result.ok, [c.problems for c in result.checks]
    assert len(result.agent.calls) == 2
    assert len(result.records) == 2
    for rec, text, log in zip(result.records, expected_texts(), result.agent.calls, strict=True):
        ids = rec["response"]["token_ids"]
        assert qwen.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == text
        assert log.final_text == text
        assert rec["metadata"]["status"] == "corrected"
        assert rec["metadata"]["edits"] == len(log.edits)
        assert rec["metadata"]["model"] == MODEL
        assert rec["rollout_id"] == ROLLOUT_ID and rec["attempt_id"] == ATTEMPT_ID
        assert rec["trace_id"] == result.agent.trace_id
    assert [len(c.edits) for c in result.agent.calls] == [1, 3]


def test_provenance_is_provable_against_what_the_server_sampled(demo, qwen):
    """Independent of the demo's own checks: every kept token is the sampled id (and logprob) at its
    source index (each used once); inserted tokens have no source; the stop token is kept."""
    result, _ = demo
    for rec, log in zip(result.records, result.agent.calls, strict=True):
        resp = rec["response"]
        original = rec["metadata"]["original_token_ids"]
        assert original == log.original_ids  # what the client received is what the record calls original
        src = resp["source_index"]
        kept = [(pos, s) for pos, s in enumerate(src) if s is not None]
        assert len({s for _, s in kept}) == len(kept)  # each sampled token used at most once
        for pos, s in kept:
            assert resp["token_ids"][pos] == original[s]
            assert resp["provenance"][pos] in (1, 2)
            assert resp["log_probs"][pos] == pytest.approx(log.logprobs[s])
            assert resp["mask"][pos] == 1
        for pos, s in enumerate(src):
            if s is None:
                assert resp["provenance"][pos] == 0 and resp["mask"][pos] == 0 and resp["log_probs"][pos] is None
        assert resp["token_ids"][-1] == original[-1] == qwen.convert_tokens_to_ids("<|im_end|>")
        assert check_call(qwen, rec, log.final_text, log.original_ids, log.logprobs).problems == ()


def test_non_canonical_samples_survive_where_retokenization_rewrites_them(demo, qwen):
    from otel_tokenfix.demo.vllm_server import token_table

    result, _ = demo
    rec, log = result.records[1], result.agent.calls[1]
    table = token_table(qwen)
    pairs = [table.split_token(table.encode(word)[0]) for word in TURN_ANSWER.split_words]
    pairs = [list(p) for p in pairs if p is not None]

    def count(ids):
        return sum(1 for p in pairs for i in range(len(ids) - 1) if ids[i : i + 2] == p)

    assert count(log.original_ids) == len(pairs) >= 2  # the server sampled them split, e.g. [' Fa', 'ir']
    assert count(rec["response"]["token_ids"]) >= 1  # correction keeps split samples outside its windows
    assert count(retokenize(qwen, log.final_text, log.original_ids)) == 0  # re-tokenizing rewrites them all
    chk = result.checks[1]
    assert chk.retok_no_origin > chk.inserted
    assert chk.kept + chk.removed == len(log.original_ids)


def test_reward_lands_on_the_answer_call(demo):
    result, _ = demo
    assert result.agent.reward == 1.0
    assert [r["reward"] for r in result.records] == [None, 1.0]


def test_records_follow_the_documented_schema(demo):
    import jsonschema

    schema = json.loads((ROOT / "docs" / "triplet.schema.json").read_text(encoding="utf-8"))
    result, _ = demo
    lines = result.triplets_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line in lines:
        jsonschema.validate(json.loads(line), schema)


def test_report_tells_the_story(demo):
    result, out = demo
    assert "per LLM call" in out
    assert "strip <think>" in out and "repair tool JSON" in out
    assert "delete hedge" in out and "reorder sentences" in out
    assert "call 0 -> call 1:" in out
    assert str(result.triplets_path) in out
    assert "otel-tokenfix inspect" in out
    assert result.html_path is not None and result.html_path.exists()


def test_readme_shows_what_the_demo_prints(demo):
    """The table in the README's demo section is this run's numbers (update the README if this fails)."""
    import re

    result, _ = demo
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- demo-output -->", 1)[1].split("```", 2)[1]
    rows = [line.split() for line in block.splitlines() if re.match(r"\s+\d+ (search|answer) ", line)]
    assert len(rows) == len(result.checks) == 2
    for row, log, chk in zip(rows, result.agent.calls, result.checks, strict=True):
        expected = [log.step, len(log.edits), chk.sampled, chk.shifted, chk.inserted, chk.removed, chk.retok_no_origin]
        assert row[1:8] == [str(x) for x in expected]
        assert row[8] == ("yes" if chk.exact and chk.provenance_ok else "NO")
    assert "call 0 -> call 1: holds" in block
    assert result.records[0]["metadata"]["continuation"]["holds"] is True
