"""Load a tokenizer from a local directory or file: offline (``local_files_only=True``, local reads only),
never ``trust_remote_code``.

Why a loader of our own: traces name a model, and the corrector needs that model's *exact* tokenizer.
Loading must never reach the network or run code shipped with a checkpoint, and every failure must be one
clear ``TokenFixError`` the edges can report.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.correction import TokenFixError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

__all__ = ["load_tokenizer"]


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


def _first_key(path: Path) -> str | None:
    """The first key of a JSON object file: Mistral's tekken files start with "config", HF's tokenizer.json
    with "version" (cheap: reads 4 KB, not the 20 MB file)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    m = re.match(rb'\s*\{\s*"([^"]+)"', head)
    return m.group(1).decode("utf-8", "replace") if m else None


def _from_tekken(path: Path) -> PreTrainedTokenizerBase:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral.tokenizer import MistralConverter  # type: ignore[import-not-found]

    backend = MistralConverter(str(path)).converted()
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer from a local directory, ``tokenizer.json``, SentencePiece ``*.model`` or a
    Mistral ``tekken*.json``. Offline only; raises ``TokenFixError`` if it cannot."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TokenFixError(f"tokenizer path does not exist: {p}")
    try:
        if p.is_dir():
            if (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists():
                return _check_fast(_from_dir(p), str(p))
            if (p / "tokenizer.model").exists():
                return _check_fast(_from_spm(p / "tokenizer.model"), str(p))
            tekkens = sorted(p.glob("tekken*.json"))
            if tekkens:
                return _check_fast(_from_tekken(tekkens[0]), str(p))
            raise TokenFixError(f"no tokenizer files in directory {p}")
        if p.suffix == ".model":
            return _check_fast(_from_spm(p), str(p))
        if p.suffix == ".json":
            if _first_key(p) == "config":
                return _check_fast(_from_tekken(p), str(p))
            return _check_fast(_from_tokenizer_json(p), str(p))
        raise TokenFixError(f"unsupported tokenizer file {p} (expected a directory, tokenizer.json, *.model)")
    except TokenFixError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported as the one documented error
        raise TokenFixError(f"cannot load tokenizer from {p}: {type(exc).__name__}: {exc}") from exc
