"""The middle: plain span records, the conventions that read them, trace assembly and the corrector.

No SDK classes, no protobuf, no I/O here: the SDK processor, the triplet exporter and the OTLP service
all convert their spans to :class:`SpanView` and call the same functions (see docs/conventions.md).
"""

from __future__ import annotations

from .assembly import AddResult, LateEdit, Release, TraceAssembly
from .conventions import DEFAULT_CONVENTIONS, Conventions, EditEvent, RewardView
from .corrector import EditIssue, LLMCall, TraceCorrection, as_lookup, correct_release, correct_trace
from .view import EventView, SpanView

__all__ = [
    "DEFAULT_CONVENTIONS",
    "AddResult",
    "Conventions",
    "EditEvent",
    "EditIssue",
    "EventView",
    "LLMCall",
    "LateEdit",
    "Release",
    "RewardView",
    "SpanView",
    "TraceAssembly",
    "TraceCorrection",
    "as_lookup",
    "correct_release",
    "correct_trace",
]
