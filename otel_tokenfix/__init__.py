"""otel_tokenfix: correct sampled token IDs after agents edit LLM output, inside OpenTelemetry.

Layout (import direction: edges -> middle -> engine):
- ``engine/``     pure token engine (no OpenTelemetry): ``correct_text``, ``correct_tokens``
- ``tokenizers/`` offline tokenizer loading
- ``trace/``      the middle: SpanView, conventions, trace assembly, corrector (no SDK classes)
- ``triplets/``   triplet records, rewards, continuation, trainer formats, sinks (pure + file I/O)
- ``sdk/``        OpenTelemetry SDK edge: processor, triplet exporter, helpers, configurator
- ``otlp/``       OTLP protobuf/JSON <-> SpanView
- ``service/``    ``otel-tokenfix serve`` (OTLP gRPC + HTTP)
- ``capture/``    ``instrument_openai``: token ids onto LLM spans
- ``demo/``, ``cli/``

Public names are imported lazily so ``import otel_tokenfix`` stays cheap inside user applications.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # engine
    "correct_text": "otel_tokenfix.engine",
    "correct_tokens": "otel_tokenfix.engine",
    "Correction": "otel_tokenfix.engine.correction",
    "TokenFixError": "otel_tokenfix.engine.correction",
    "load_tokenizer": "otel_tokenfix.tokenizers",
    # sdk edge
    "TokenFixSpanProcessor": "otel_tokenfix.sdk.processor",
    "record_edit": "otel_tokenfix.sdk.helpers",
    "record_reward": "otel_tokenfix.sdk.helpers",
    "TripletExporter": "otel_tokenfix.sdk.triplet_exporter",
    # capture
    "instrument_openai": "otel_tokenfix.capture.openai",
    "uninstrument_openai": "otel_tokenfix.capture.openai",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_tokenfix' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
