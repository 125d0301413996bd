"""Load a tokenizer from a local directory or file: offline, never ``trust_remote_code``.

Why a loader of our own: traces name a model, and the corrector needs that model's *exact* tokenizer.
Loading must never reach the network or run code shipped with a checkpoint, and every failure must be one
clear ``TokenFixError`` the edges can report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.correction import TokenFixError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

__all__ = ["load_tokenizer"]


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _check_fast(tok: PreTrainedTokenizerBase, source: str) -> PreTrainedTokenizerBase:
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise TokenFixError(f"tokenizer from {source} is not backed by a fast (Rust) tokenizer")
    return tok


def _from_dir(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def _from_tokenizer_json(path: Path) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    side = path.parent / "tokenizer_config.json"
    if path.name == "tokenizer.json" and side.exists():
        return _from_dir(path.parent)
    backend = Tokenizer.from_file(str(path))
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)


def _from_spm(path: Path) -> PreTrainedTokenizerBase:
    from transformers import LlamaTokenizer

    # transformers only converts a file literally named ``tokenizer.model``.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / "tokenizer.model")
        return LlamaTokenizer.from_pretrained(tmp, local_files_only=True, legacy=False)


def _is_tekken(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"vocab"' in head and (b'"config"' in head or b"tekken" in path.name.encode())


def _from_tekken(path: Path) -> PreTrainedTokenizerBase:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral.tokenizer import MistralConverter  # type: ignore[import-not-found]

    backend = MistralConverter(str(path)).converted()
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)


def _looks_like_tokenizer_json(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return b'"model"' in head or b'"added_tokens"' in head


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer from a local directory, ``tokenizer.json``, SentencePiece ``*.model`` or a
    Mistral ``tekken*.json``. Offline only; raises ``TokenFixError`` if it cannot."""
    _offline_env()
    p = Path(path).expanduser()
    if not p.exists():
        raise TokenFixError(f"tokenizer path does not exist: {p}")
    try:
        if p.is_dir():
            if not any((p / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
                tekkens = sorted(p.glob("tekken*.json"))
                if tekkens:
                    return _check_fast(_from_tekken(tekkens[0]), str(p))
                raise TokenFixError(f"no tokenizer files in directory {p}")
            return _check_fast(_from_dir(p), str(p))
        if p.suffix == ".model":
            return _check_fast(_from_spm(p), str(p))
        if p.suffix == ".json":
            if _is_tekken(p) and not _looks_like_tokenizer_json(p):
                return _check_fast(_from_tekken(p), str(p))
            if _is_tekken(p) and "tekken" in p.name:
                return _check_fast(_from_tekken(p), str(p))
            return _check_fast(_from_tokenizer_json(p), str(p))
        raise TokenFixError(f"unsupported tokenizer file {p} (expected a directory, tokenizer.json, *.model)")
    except TokenFixError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, json.JSONDecodeError, Exception) as exc:
        raise TokenFixError(f"cannot load tokenizer from {p}: {type(exc).__name__}: {exc}") from exc
