"""Corrected triplets: records, reward matching, continuation report, trajectories, trainer formats, sinks.

Pure apart from the sinks' file I/O; no OpenTelemetry SDK import (the SDK edge is
``otel_tokenfix.sdk.triplet_exporter``). See docs/triplets.md.
"""

from __future__ import annotations

from .build import CallData, TripletOptions, build_records, build_triplets
from .continuation import Continuation, check_continuation
from .formats import to_agl_dict, to_agl_triplet, to_agl_v1_model_request, to_agl_v1_reward, to_verl
from .record import TripletRecord, build_mask, read_jsonl
from .rewards import match_rewards
from .sinks import CallableSink, JsonlSink, MemorySink, RetryingSink, TripletSink, make_sink
from .trajectory import merge_trajectory

__all__ = [
    "CallData",
    "CallableSink",
    "Continuation",
    "JsonlSink",
    "MemorySink",
    "RetryingSink",
    "TripletOptions",
    "TripletRecord",
    "TripletSink",
    "build_mask",
    "build_records",
    "build_triplets",
    "check_continuation",
    "make_sink",
    "match_rewards",
    "merge_trajectory",
    "read_jsonl",
    "to_agl_dict",
    "to_agl_triplet",
    "to_agl_v1_model_request",
    "to_agl_v1_reward",
    "to_verl",
]
