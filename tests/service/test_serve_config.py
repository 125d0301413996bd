"""Pure parts of the serve configuration: listen addresses and tokenizer specs (flags + env)."""

from __future__ import annotations

import pytest

from otel_tokenfix.service.forward import parse_target
from otel_tokenfix.service.server import (
    ENV_DEFAULT_TOKENIZER,
    ENV_TOKENIZERS,
    load_tokenizers,
    parse_hostport,
    parse_tokenizer_specs,
)


def test_parse_hostport():
    assert parse_hostport("127.0.0.1:4327") == ("127.0.0.1", 4327)
    assert parse_hostport("4327") == ("127.0.0.1", 4327)  # loopback unless told otherwise
    assert parse_hostport(":0") == ("127.0.0.1", 0)
    assert parse_hostport("[::1]:9") == ("::1", 9)
    assert parse_hostport("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError):
        parse_hostport("localhost")


def test_tokenizer_specs_env_then_flags(tmp_path):
    d = tmp_path / "tok=odd"  # a directory whose name has '=' is a default, not MODEL=DIR
    d.mkdir()
    env = {ENV_TOKENIZERS: "qwen2.5=/m/qwen, mistral=/m/mistral,/m/default"}
    assert parse_tokenizer_specs([], env) == {"qwen2.5": "/m/qwen", "mistral": "/m/mistral", "*": "/m/default"}
    got = parse_tokenizer_specs(["qwen2.5=/other", str(d)], env)
    assert got["qwen2.5"] == "/other" and got["*"] == str(d) and got["mistral"] == "/m/mistral"
    assert parse_tokenizer_specs([], {ENV_DEFAULT_TOKENIZER: "builtin:qwen"}) == {"*": "builtin:qwen"}
    assert parse_tokenizer_specs(["builtin:qwen"], {}) == {"*": "builtin:qwen"}


def test_tokenizers_resolve_like_the_sdk_path(qwen_dir):
    lookup = load_tokenizers({"Qwen/Qwen2.5-7B-Instruct": str(qwen_dir)})
    tok = lookup("Qwen/Qwen2.5-7B-Instruct")
    assert tok is not None and tok.convert_tokens_to_ids("<think>") == 151667
    assert lookup("qwen/qwen2.5-7b-instruct") is tok and lookup("Qwen2.5-7B-Instruct") is tok  # case, last part
    assert lookup("mistral-7b") is None and load_tokenizers({}) == {}


def test_forward_targets():
    assert parse_target("127.0.0.1:4317").protocol == "grpc"
    t = parse_target("grpcs://collector:4317")
    assert (t.protocol, t.address, t.secure) == ("grpc", "collector:4317", True)
    assert parse_target("http://127.0.0.1:4318").address == "http://127.0.0.1:4318/v1/traces"
    assert parse_target("https://x:1/custom").address == "https://x:1/custom"
    with pytest.raises(ValueError):
        parse_target("ftp://x")


def test_serving_process_freezes_its_start_up_heap():
    """``settle_heap`` (run once by ``serve`` after start-up): start-up objects leave the collector's walks,
    young collections run less often; ``OTEL_TOKENFIX_GC_FREEZE=0`` keeps the interpreter's defaults."""
    import os
    import subprocess
    import sys

    code = ("import gc; from otel_tokenfix.service.server import settle_heap; before = gc.get_threshold(); "
            "settle_heap(); print(gc.get_freeze_count() > 0, gc.get_threshold()[0] > before[0])")
    env = {k: v for k, v in os.environ.items() if k != "OTEL_TOKENFIX_GC_FREEZE"}
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], env={**env, "OTEL_TOKENFIX_GC_FREEZE": "0"},
                         capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["True", "True"] and off.stdout.split() == ["False", "False"]
