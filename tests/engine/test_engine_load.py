"""load_tokenizer: local directories and files, offline, never trust_remote_code, one error type."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import pytest

from otel_tokenfix.engine import TokenFixError, correct_text
from otel_tokenfix.tokenizers import load_tokenizer

TEXT = "Hello world, <think>ok</think> 日本語 😀"


def _same(a, b) -> None:
    assert a.encode(TEXT, add_special_tokens=False) == b.encode(TEXT, add_special_tokens=False)


def test_directory_and_tokenizer_json(qwen, tmp_path):
    qwen.save_pretrained(tmp_path / "dir")
    tok = load_tokenizer(tmp_path / "dir")
    _same(tok, qwen)
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(tmp_path / "dir" / "tokenizer.json", alone / "my-tokenizer.json")
    tok2 = load_tokenizer(alone / "my-tokenizer.json")
    _same(tok2, qwen)
    c = correct_text(tok2, tok2.encode("Hi there", add_special_tokens=False), "Hi over there")
    assert tok2.decode(c.token_ids) == "Hi over there"


def test_sentencepiece_model_file(mistral_spm, tmp_path):
    src = resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    with resources.as_file(src) as p:
        shutil.copyfile(p, tmp_path / "mistral.model")
    tok = load_tokenizer(tmp_path / "mistral.model")
    _same(tok, mistral_spm)


def test_tekken_json(tekken):
    src = resources.files("mistral_common") / "data" / "tekken_240911.json"
    with resources.as_file(src) as p:
        tok = load_tokenizer(p)
    _same(tok, tekken)


@pytest.mark.parametrize("make", ["missing", "empty_dir", "garbage_json", "bad_suffix"])
def test_errors_are_tokenfix_errors(tmp_path, make):
    path = tmp_path / "x"
    if make == "empty_dir":
        path.mkdir()
    elif make == "garbage_json":
        path = tmp_path / "tokenizer.json"
        path.write_text("{not json")
    elif make == "bad_suffix":
        path = tmp_path / "tokenizer.bin"
        path.write_bytes(b"\x00\x01")
    with pytest.raises(TokenFixError):
        load_tokenizer(path)


def test_never_runs_remote_code(qwen, tmp_path):
    """A checkpoint asking for custom tokenizer code: the code must never run."""
    d = tmp_path / "evil"
    qwen.save_pretrained(d)
    marker = tmp_path / "pwned"
    (d / "evil_tok.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "evil_tok.EvilTokenizer"]}
    cfg["tokenizer_class"] = "EvilTokenizer"
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    try:
        tok = load_tokenizer(d)
    except TokenFixError:
        tok = None
    assert not marker.exists()
    if tok is not None:
        assert type(tok).__name__ != "EvilTokenizer"


def test_directories_with_only_a_model_file(mistral_spm, tekken, tmp_path):
    spm_dir, tek_dir = tmp_path / "spm", tmp_path / "tek"
    spm_dir.mkdir()
    tek_dir.mkdir()
    for name, target in (
        ("tokenizer.model.v1", spm_dir / "tokenizer.model"),
        ("tekken_240911.json", tek_dir / "tekken.json"),
    ):
        with resources.as_file(resources.files("mistral_common") / "data" / name) as p:
            shutil.copyfile(p, target)
    _same(load_tokenizer(spm_dir), mistral_spm)
    _same(load_tokenizer(tek_dir), tekken)


def test_hub_ids_are_never_downloaded():
    with pytest.raises(TokenFixError, match="does not exist"):
        load_tokenizer("Qwen/Qwen2.5-7B-Instruct")
