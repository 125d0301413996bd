"""Capture: put token ids, logprobs and the response text on LLM spans of OpenAI-compatible clients.

``instrument_openai()`` wraps the official ``openai`` client; see ``docs/capture.md``.
"""

from __future__ import annotations

from .attributes import CAPTURE_REASON, CAPTURE_STATUS, choice_response_id
from .openai import instrument_openai, is_instrumented, uninstrument_openai

__all__ = [
    "CAPTURE_REASON",
    "CAPTURE_STATUS",
    "choice_response_id",
    "instrument_openai",
    "is_instrumented",
    "uninstrument_openai",
]
