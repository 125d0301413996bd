"""TokenFixConfigurator: ``OTEL_PYTHON_CONFIGURATOR=tokenfix`` wraps every configured exporter's processor.

Why a configurator: the SDK has no environment variable for span processors, but a configurator can
pass ``export_span_processor`` to ``_initialize_components`` (SDK >= 1.40), so ``opentelemetry-instrument``
users get corrected spans from every exporter with no code. Settings come from ``OTEL_TOKENFIX_*``
(see :mod:`otel_tokenfix.sdk.settings`).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from .processor import TokenFixSpanProcessor
from .settings import Settings

logger = logging.getLogger(__name__)


def export_span_processor(settings: Settings | None = None) -> Any:
    """The factory handed to the SDK: ``exporter -> TokenFixSpanProcessor(BatchSpanProcessor(exporter))``.
    One tokenizer resolver is shared by every exporter's processor (each tokenizer loads once)."""
    settings = settings or Settings.from_env()
    resolver = settings.resolver()

    def factory(exporter: SpanExporter) -> TokenFixSpanProcessor:
        meter_provider = None
        if settings.metrics:
            from opentelemetry.metrics import get_meter_provider

            meter_provider = get_meter_provider()  # a proxy until the SDK sets the real one
        return TokenFixSpanProcessor(
            BatchSpanProcessor(exporter), meter_provider=meter_provider, **settings.processor_kwargs(resolver)
        )

    return factory


class TokenFixConfigurator(_OTelSDKConfigurator):
    """The SDK's default configuration, with every exporting processor wrapped by the token fixer."""

    def _configure(self, **kwargs: Any) -> None:
        try:
            kwargs.setdefault("export_span_processor", export_span_processor())
        except Exception:  # noqa: BLE001 - a broken setting must not stop the application
            logger.exception("tokenfix: could not set up the span processor; using the SDK defaults")
        super()._configure(**kwargs)
