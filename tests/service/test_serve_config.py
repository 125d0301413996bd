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
