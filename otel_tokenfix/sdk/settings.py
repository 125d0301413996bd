"""``OTEL_TOKENFIX_*`` environment settings shared by the configurator and the triplet exporter.

Why env vars: ``opentelemetry-instrument`` users configure everything through the environment, and the
SDK builds exporters with zero arguments. Bad values are logged and replaced by defaults, never raised:
a typo in an env var must not stop the user's application.

| variable | meaning | default |
|---|---|---|
| ``OTEL_TOKENFIX_TOKENIZERS`` | ``model=dir,model2=dir2`` (a dir, tokenizer file or ``builtin:qwen``) | none |
| ``OTEL_TOKENFIX_DEFAULT_TOKENIZER`` | tokenizer for any other model | none |
| ``OTEL_TOKENFIX_MAX_TRACES`` | traces held at most | 1024 |
| ``OTEL_TOKENFIX_MAX_SPANS`` | spans held at most | 8192 |
| ``OTEL_TOKENFIX_HOLD_TIMEOUT`` | seconds a trace is held waiting for its root | 1800 |
| ``OTEL_TOKENFIX_MAX_IDS`` | token ids on held spans at most (memory bound) | 4000000 |
| ``OTEL_TOKENFIX_ROOT_GRACE`` | seconds a root LLM span waits for edits from later traces | 2 |
| ``OTEL_TOKENFIX_LATE_GRACE`` | seconds spans that end after their trace's root wait after the last one | 2 |
| ``OTEL_TOKENFIX_TIMER_INTERVAL`` | seconds between background timeout checks (0: none) | 1 |
| ``OTEL_TOKENFIX_OVERWRITE_SOURCE_KEY`` | write corrected ids under the key they came from | true |
| ``OTEL_TOKENFIX_MARK_UNCHANGED`` | mark unedited LLM spans ``unchanged`` in traces that have edits | true |
| ``OTEL_TOKENFIX_METRICS`` | export the processor's counters as OTel metrics | true |
| ``OTEL_TOKENFIX_WARM_UP`` | load tokenizers and build engine tables at start, on a background thread | false |
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..trace.conventions import Conventions

logger = logging.getLogger(__name__)

PREFIX = "OTEL_TOKENFIX_"


def parse_tokenizer_map(text: str) -> dict[str, str]:
    """``"m1=/dir/a, org/m2=builtin:qwen"`` -> ``{"m1": "/dir/a", "org/m2": "builtin:qwen"}`` (split on the
    first ``=`` of each comma-separated pair; malformed pairs are logged and skipped)."""
    out: dict[str, str] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        model, sep, spec = pair.partition("=")
        if not sep or not model.strip() or not spec.strip():
            logger.warning("tokenfix: ignoring malformed %sTOKENIZERS entry %r (want model=dir)", PREFIX, pair)
            continue
        out[model.strip()] = spec.strip()
    return out


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float, minimum: float = 0) -> Any:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        logger.warning("tokenfix: %s%s=%r is not a number; using %s", PREFIX, name, raw, default)
        return default
    if value < minimum:
        logger.warning("tokenfix: %s%s=%r is below %s; using %s", PREFIX, name, raw, minimum, default)
        return default
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    logger.warning("tokenfix: %s%s=%r is not a boolean; using %s", PREFIX, name, raw, default)
    return default


@dataclass(frozen=True)
class Settings:
    tokenizers: dict[str, str] = field(default_factory=dict)
    default_tokenizer: str | None = None
    max_traces: int = 1024
    max_spans: int = 8192
    hold_timeout: float = 1800.0
    max_ids: int = 4_000_000
    root_grace: float = 2.0
    late_grace: float = 2.0
    timer_interval: float = 1.0
    overwrite_source_key: bool = True
    mark_unchanged: bool = True
    metrics: bool = True
    warm_up: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            tokenizers=parse_tokenizer_map(_get(env, "TOKENIZERS") or ""),
            default_tokenizer=_get(env, "DEFAULT_TOKENIZER"),
            max_traces=_number(env, "MAX_TRACES", d.max_traces, int, 1),
            max_spans=_number(env, "MAX_SPANS", d.max_spans, int, 1),
            hold_timeout=_number(env, "HOLD_TIMEOUT", d.hold_timeout),
            max_ids=_number(env, "MAX_IDS", d.max_ids, int, 1),
            root_grace=_number(env, "ROOT_GRACE", d.root_grace),
            late_grace=_number(env, "LATE_GRACE", d.late_grace),
            timer_interval=_number(env, "TIMER_INTERVAL", d.timer_interval),
            overwrite_source_key=_flag(env, "OVERWRITE_SOURCE_KEY", d.overwrite_source_key),
            mark_unchanged=_flag(env, "MARK_UNCHANGED", d.mark_unchanged),
            metrics=_flag(env, "METRICS", d.metrics),
            warm_up=_flag(env, "WARM_UP", d.warm_up),
        )

    def conventions(self, base: Conventions | None = None) -> Conventions:
        return replace(base or Conventions(), overwrite_source_key=self.overwrite_source_key)

    def resolver(self) -> Any:
        """A lazy :class:`~otel_tokenfix.sdk.tokenizers.TokenizerResolver` for the configured tokenizers."""
        from .tokenizers import TokenizerResolver

        return TokenizerResolver(self.tokenizers, self.default_tokenizer)

    def assembly_kwargs(self) -> dict[str, Any]:
        """Bounds for a :class:`~otel_tokenfix.trace.assembly.TraceAssembly`."""
        return dict(max_traces=self.max_traces, max_spans=self.max_spans, max_ids=self.max_ids,
                    hold_timeout=self.hold_timeout,
                    root_grace=self.root_grace, late_grace=self.late_grace)

    def processor_kwargs(self, resolver: Any = None) -> dict[str, Any]:
        """Keyword arguments for :class:`~otel_tokenfix.sdk.processor.TokenFixSpanProcessor`."""
        return dict(
            tokenizers=resolver if resolver is not None else self.resolver(),
            conventions=self.conventions(),
            timer_interval=self.timer_interval or None,
            mark_unchanged=self.mark_unchanged,
            warm_up=self.warm_up,
            **self.assembly_kwargs(),
        )
