"""agent-lightning 0.3.0 reads our corrected spans: its own OtelTracer + InMemoryLightningStore +
TracerTraceToTriplet, in a throwaway venv with ``agentlightning==0.3.0`` from the package index (cached
under ~/.cache/otel-tokenfix/venvs/agl-0.3.0). If that install fails, the test fails with pip's error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_tokenfix.sdk.processor import TokenFixSpanProcessor
from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.triplets.formats import to_agl_dict
from otel_tokenfix.triplets.sinks import MemorySink

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import run_agent  # noqa: E402

AGL_VERSION = "0.3.0"
VENV = Path(os.environ.get("OTEL_TOKENFIX_CACHE", Path.home() / ".cache" / "otel-tokenfix")) / "venvs" / "agl-0.3.0"
REPLAY = Path(__file__).with_name("agl_replay.py")


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "import importlib.metadata as m; print(m.version('agentlightning'))"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    return out.returncode == 0 and out.stdout.strip() == AGL_VERSION


@pytest.fixture(scope="module")
def agl_python() -> Path:
    """The cached venv's python; created (pip install from the package index) when missing or broken."""
    python = VENV / "bin" / "python"
    if _works(python):
        return python
    tmp = VENV.with_name(VENV.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(tmp)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"could not create a venv for agentlightning: {made.stderr}")
    pip = subprocess.run(
        [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", f"agentlightning=={AGL_VERSION}"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"pip install agentlightning=={AGL_VERSION} failed:\n{pip.stderr[-5000:]}")
    shutil.rmtree(VENV, ignore_errors=True)
    tmp.rename(VENV)  # the venv's python resolves its prefix from its own location, so a move is safe
    assert _works(python), "agentlightning installed but not importable"
    return python


def test_agent_lightning_reads_our_corrected_ids_and_rewards(qwen, agl_python, tmp_path):
    raw, corrected = InMemorySpanExporter(), InMemorySpanExporter()
    sink = MemorySink()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    # the store-bound exporter is wrapped by the processor (REFERENCE.md section 1): it sees corrected copies
    provider.add_span_processor(TokenFixSpanProcessor(SimpleSpanProcessor(corrected), tokenizers=qwen, root_grace=0))
    run = run_agent(provider.get_tracer("agent"), qwen, rewards=(0.25, None, 1.0))
    provider.shutdown()
    ours = TripletExporter(sink, tokenizers=None, timer=False, env={})
    ours.export(list(corrected.get_finished_spans()))
    ours.shutdown()
    assert len(sink.records) == 3

    (tmp_path / "corrected.pb").write_bytes(encode_spans(corrected.get_finished_spans()).SerializeToString())
    (tmp_path / "raw.pb").write_bytes(encode_spans(raw.get_finished_spans()).SerializeToString())
    (tmp_path / "ours.json").write_text(json.dumps([to_agl_dict(r) for r in sink.records]))
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH="")
    args = [str(tmp_path / "corrected.pb"), str(tmp_path / "raw.pb"), str(tmp_path / "ours.json")]
    proc = subprocess.run(
        [str(agl_python), str(REPLAY), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    agl_corrected, agl_raw, validated = json.loads(proc.stdout.strip().splitlines()[-1])
    assert agl_corrected["spans"] == len(corrected.get_finished_spans())

    got = agl_corrected["triplets"]
    assert len(got) == 3
    for t, rec in zip(got, sink.records, strict=True):
        assert t["response_token_ids"] == rec.response_ids  # agent-lightning trains on our corrected ids
        assert t["prompt_token_ids"] == rec.prompt_ids
        assert t["reward"] == rec.reward
        assert t["response_id"] == rec.metadata["response_id"]
    assert [t["reward"] for t in got] == [0.25, None, 1.0]
    assert [qwen.decode(t["response_token_ids"], skip_special_tokens=True) for t in got] == run.final_texts

    # our converter's payloads are valid agent-lightning v0.x Triplet objects carrying the same data
    triplets = validated["validated"]
    assert [t["response"]["token_ids"] for t in triplets] == [r.response_ids for r in sink.records]
    assert [t["prompt"]["token_ids"] for t in triplets] == [r.prompt_ids for r in sink.records]
    assert [t["reward"] for t in triplets] == [0.25, None, 1.0]
    assert triplets[0]["metadata"]["response_mask"] == sink.records[0].mask

    # without the correction agent-lightning trains on the sampled ids the agent threw away
    before = agl_raw["triplets"]
    assert [t["response_token_ids"] for t in before] == run.sampled
    assert before[0]["response_token_ids"] != got[0]["response_token_ids"]
