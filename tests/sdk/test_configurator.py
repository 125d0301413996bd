"""OTEL_TOKENFIX_* settings, the lazy tokenizer resolver, and ``opentelemetry-instrument`` with
``OTEL_PYTHON_CONFIGURATOR=tokenfix`` in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from processor_helpers import qwen_ids

from otel_tokenfix.engine.correction import TokenFixError
from otel_tokenfix.sdk.settings import Settings, parse_tokenizer_map
from otel_tokenfix.sdk.tokenizers import TokenizerResolver
from otel_tokenfix.trace import conventions as cv


def test_settings_from_env_with_bad_values_falls_back() -> None:
    s = Settings.from_env({
        "OTEL_TOKENFIX_TOKENIZERS": "m1=/a, org/m2=builtin:qwen,broken,=x",
        "OTEL_TOKENFIX_DEFAULT_TOKENIZER": "/d",
        "OTEL_TOKENFIX_MAX_TRACES": "7",
        "OTEL_TOKENFIX_MAX_SPANS": "lots",
        "OTEL_TOKENFIX_HOLD_TIMEOUT": "-1",
        "OTEL_TOKENFIX_ROOT_GRACE": "0.5",
        "OTEL_TOKENFIX_OVERWRITE_SOURCE_KEY": "false",
        "OTEL_TOKENFIX_MARK_UNCHANGED": "maybe",
        "OTEL_TOKENFIX_MAX_IDS": "1000",
    })
    assert s.max_ids == 1000 and s.assembly_kwargs()["max_ids"] == 1000
    assert s.tokenizers == {"m1": "/a", "org/m2": "builtin:qwen"} and s.default_tokenizer == "/d"
    assert (s.max_traces, s.max_spans, s.hold_timeout, s.root_grace) == (7, 8192, 1800.0, 0.5)
    assert s.overwrite_source_key is False and s.mark_unchanged is True  # "maybe" -> the default
    assert s.conventions().overwrite_source_key is False
    kw = s.processor_kwargs()
    assert kw["max_traces"] == 7 and kw["root_grace"] == 0.5 and isinstance(kw["tokenizers"], TokenizerResolver)
    assert parse_tokenizer_map("") == {}


def test_resolver_lookup_order_and_lazy_single_load() -> None:
    loads: list[str] = []

    def loader(spec):
        loads.append(spec)
        if spec == "bad":
            raise OSError("no such dir")
        return f"tok:{spec}"

    r = TokenizerResolver({"Org/Model-A": "a", "b": "b", "broken": "bad"}, default="d", loader=loader)
    assert r("Org/Model-A") == "tok:a" and r("org/model-a") == "tok:a" and r("other/model-a") == "tok:a"
    assert r("x/b") == "tok:b" and r("unknown") == "tok:d" and r(None) == "tok:d"
    assert r("Org/Model-A") == "tok:a"
    assert loads == ["a", "b", "d"]
    for _ in range(2):
        with pytest.raises(TokenFixError, match="no such dir"):
            r("broken")
    assert loads.count("bad") == 1 and "broken" in r.failures
    assert TokenizerResolver({})("m") is None


def test_resolver_loads_a_real_directory(qwen, tmp_path: Path) -> None:
    qwen.save_pretrained(tmp_path / "qwen")
    r = TokenizerResolver({"qwen": str(tmp_path / "qwen")})
    tok = r("qwen")
    assert tok.encode("Hello world", add_special_tokens=False) == qwen.encode("Hello world", add_special_tokens=False)


AGENT = textwrap.dedent('''
    import json, sys
    from opentelemetry import trace
    from otel_tokenfix import record_edit
    ids = json.loads(sys.argv[1])
    tracer = trace.get_tracer("agent")
    with tracer.start_as_current_span("run"):
        with tracer.start_as_current_span("openai.chat.completion",
                                          attributes={"response_token_ids": ids, "gen_ai.request.model": "qwen"}):
            pass
        with tracer.start_as_current_span("step"):
            record_edit("The capital of France is Paris.")
    print("AGENT DONE", file=sys.stderr)
''')


def _console_spans(out: str) -> list[dict]:
    dec, spans, i = json.JSONDecoder(), [], 0
    while True:
        j = out.find("{", i)
        if j < 0:
            return spans
        obj, i = dec.raw_decode(out, j)
        spans.append(obj)


def test_opentelemetry_instrument_with_configurator(qwen, tmp_path: Path) -> None:
    qwen.save_pretrained(tmp_path / "qwen")
    (tmp_path / "agent.py").write_text(AGENT)
    ids = qwen_ids(qwen, "The capital of France is Paris. I am quite sure about that.")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({
        "OTEL_PYTHON_CONFIGURATOR": "tokenfix",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_TOKENFIX_TOKENIZERS": f"qwen={tmp_path / 'qwen'}",
        "HF_HUB_OFFLINE": "1",
    })
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "opentelemetry-instrument"), sys.executable, str(tmp_path / "agent.py"), json.dumps(ids)],
        env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AGENT DONE" in proc.stderr
    spans = {s["name"]: s for s in _console_spans(proc.stdout)}
    assert set(spans) == {"run", "openai.chat.completion", "step"}, proc.stdout[-2000:]
    a = spans["openai.chat.completion"]["attributes"]
    assert a[cv.STATUS] == cv.STATUS_CORRECTED, a
    assert qwen.decode(a["response_token_ids"], skip_special_tokens=True) == "The capital of France is Paris."
    assert a[cv.ORIGINAL_RESPONSE_IDS] == ids


def test_warm_up_loads_tokenizers_and_builds_tables_in_background(qwen, tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_tokenfix.engine.table import _TABLES
    from otel_tokenfix.sdk.processor import TokenFixSpanProcessor

    qwen.save_pretrained(tmp_path / "qwen")
    resolver = TokenizerResolver({"qwen": str(tmp_path / "qwen"), "broken": str(tmp_path / "missing")})
    proc = TokenFixSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), tokenizers=resolver,
                                 timer_interval=None, warm_up=True)
    assert proc.warmed_up.wait(120)
    tok = resolver("qwen")  # the already-loaded object: no second load
    assert tok in _TABLES
    assert "broken" in resolver.failures
    proc.shutdown()
