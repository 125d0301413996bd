"""agent-lightning v1.0 (no OpenTelemetry; an HTTP store of ``model_request`` events) takes our corrected
``model_request`` payload: posted after the gateway's original, it replaces it in the trainer's triplet
view (v1.0 keeps the last event per prompt ids), with log-probs only when they fit the corrected ids.

Runs agent-lightning 1.0.2's own FastAPI app in a throwaway venv (Python >= 3.12, cached under
~/.cache/otel-tokenfix/venvs/agl-1.0.2). If no such interpreter exists or the install fails, the test
fails with the reason.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otel_tokenfix.sdk.triplet_exporter import TripletExporter
from otel_tokenfix.triplets.formats import to_agl_v1_model_request, to_agl_v1_reward
from otel_tokenfix.triplets.sinks import MemorySink

sys.path.insert(0, str(Path(__file__).parents[1]))
from triplets.agent_traces import recorded_spans  # noqa: E402

AGL_VERSION = "1.0.2"
VENV = Path(os.environ.get("OTEL_TOKENFIX_CACHE", Path.home() / ".cache" / "otel-tokenfix")) / "venvs" / "agl-1.0.2"
SCRIPT = Path(__file__).with_name("agl1_events.py")


def _python312() -> str | None:
    """An interpreter >= 3.12 (agentlightning 1.x requires it): PATH first, then pyenv's versions."""
    candidates = [shutil.which(n) for n in ("python3.13", "python3.12")]
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/3.1[2-9]*/bin/python3"), reverse=True)
    for c in candidates:
        if not c:
            continue
        out = subprocess.run([c, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True,
                             text=True)
        if out.returncode == 0 and out.stdout.strip() == "True":
            return c
    return None


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = "import importlib.metadata as m, fastapi.testclient; print(m.version('agentlightning'))"
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120)
    return out.returncode == 0 and out.stdout.strip() == AGL_VERSION


@pytest.fixture(scope="module")
def agl1_python() -> Path:
    python = VENV / "bin" / "python"
    if _works(python):
        return python
    base = _python312()
    if base is None:
        pytest.fail("agentlightning 1.x needs Python >= 3.12 and none was found (PATH, pyenv)")
    tmp = VENV.with_name(VENV.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([base, "-m", "venv", str(tmp)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"could not create a venv for agentlightning {AGL_VERSION}: {made.stderr}")
    pip = subprocess.run(
        [str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", f"agentlightning=={AGL_VERSION}", "httpx"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"pip install agentlightning=={AGL_VERSION} failed:\n{pip.stderr[-5000:]}")
    shutil.rmtree(VENV, ignore_errors=True)
    tmp.rename(VENV)
    assert _works(python), "agentlightning 1.x installed but not importable"
    return python


def gateway_event(prompt, sampled, logprobs):
    """What the v1.0 gateway recorded for the call as the model server answered it (sampled ids)."""
    choice = {"index": 0, "token_ids": sampled, "logprobs": {"content": [{"logprob": x} for x in logprobs]}}
    return {
        "event_type": "model_request",
        "data": {"response": {"prompt_token_ids": prompt, "choices": [choice]}, "status": "ok", "http_status": 200},
    }


def test_corrected_model_request_replaces_the_gateway_original(qwen, agl1_python, tmp_path):
    spans, (run,) = recorded_spans(qwen, rewards=(None, None, 1.0))
    sink = MemorySink()
    ex = TripletExporter(sink, tokenizers=qwen, timer=False, root_grace=0, env={})
    ex.export(spans)
    ex.shutdown()
    records = sink.records
    assert [r.metadata["status"] for r in records] == ["corrected", "unchanged", "corrected"]
    assert records[0].log_probs.count(None) > 0 and records[2].log_probs.count(None) == 0

    bodies = []
    for k, rec in enumerate(records):
        sampled_lps = [-0.01 * (i + 1) for i in range(len(run.sampled[k]))]
        bodies.append(gateway_event(run.prompts[k], run.sampled[k], sampled_lps))
        if rec.metadata["status"] == "corrected":  # the agent edited: post the correction before the next call
            bodies.append(to_agl_v1_model_request(rec))
    bodies.append(to_agl_v1_reward(records[-1]))
    (tmp_path / "events.json").write_text(json.dumps(bodies))
    proc = subprocess.run(
        [str(agl1_python), str(SCRIPT), str(tmp_path / "events.json")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=""),
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["all_events"] == len(bodies)
    requests = [e["data"] for e in out["triplet_events"] if e["event_type"] == "model_request"]
    rewards = [e["data"]["value"] for e in out["triplet_events"] if e["event_type"] == "reward"]
    assert len(requests) == 3 and rewards == [1.0]
    for data, rec, sampled in zip(requests, records, run.sampled, strict=True):
        assert data["prompt_token_ids"] == rec.prompt_ids
        assert data["response_token_ids"] == rec.response_ids  # ours replaced the sampled original
        if rec.metadata["status"] == "corrected":
            assert data["response_token_ids"] != sampled
    # log-probs: none where inserted tokens have none (v1.0 cannot mark a missing one) ...
    assert requests[0]["response_log_probs"] is None
    # ... and exactly one per token, ours, where every token kept its sampled log-prob
    assert requests[2]["response_log_probs"] == pytest.approx(records[2].log_probs)
    assert len(requests[2]["response_log_probs"]) == len(requests[2]["response_token_ids"])
    # the unchanged call keeps the gateway's own record
    assert requests[1]["response_log_probs"] == pytest.approx([-0.01 * (i + 1) for i in range(len(run.sampled[1]))])
