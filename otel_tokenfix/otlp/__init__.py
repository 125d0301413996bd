"""OTLP protobuf / JSON <-> SpanView, and corrected copies of protobuf spans (edge code only)."""

from .decode import LazyAttributes, SpanRef, any_value, parse_request, request_views, span_view
from .encode import apply_overlay, build_request, set_any_value, to_any_value
from .jsonfmt import OTLPJsonError, request_from_dict, request_from_json, request_to_dict, request_to_json

__all__ = [
    "LazyAttributes",
    "OTLPJsonError",
    "SpanRef",
    "any_value",
    "apply_overlay",
    "build_request",
    "parse_request",
    "request_from_dict",
    "request_from_json",
    "request_to_dict",
    "request_to_json",
    "request_views",
    "set_any_value",
    "span_view",
    "to_any_value",
]
