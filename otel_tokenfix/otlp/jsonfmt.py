"""OTLP/JSON <-> protobuf.

Why not plain ``json_format``: OTLP/JSON writes trace and span ids as hex strings, while protobuf's
JSON mapping expects base64 for ``bytes`` fields; and receivers must ignore unknown fields. Everything
else (camelCase names, int64 as strings, enum numbers) is the standard mapping, so ids are rewritten
and the rest goes through ``json_format`` — one protobuf path for every door.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class OTLPJsonError(ValueError):
    """The text is not an OTLP/JSON trace request."""


def _hex_to_b64(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if len(value) in (16, 32):
        try:
            return base64.b64encode(bytes.fromhex(value)).decode("ascii")
        except ValueError:
            pass
    return value  # not hex: let json_format try base64 (and fail loudly if it is neither)


def _fix_ids(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        if key in obj:
            obj[key] = _hex_to_b64(obj[key])


def request_from_dict(obj: Any) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON trace request already loaded with ``json.loads``."""
    if not isinstance(obj, dict):
        raise OTLPJsonError("an OTLP/JSON request must be a JSON object")
    try:
        for rs in obj.get("resourceSpans") or obj.get("resource_spans") or ():
            if not isinstance(rs, dict):
                continue
            for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ():
                if not isinstance(ss, dict):
                    continue
                for span in ss.get("spans") or ():
                    if not isinstance(span, dict):
                        continue
                    _fix_ids(span)
                    for link in span.get("links") or ():
                        if isinstance(link, dict):
                            _fix_ids(link)
    except TypeError as exc:  # e.g. "resourceSpans": 5 -- a client error, not a server one
        raise OTLPJsonError(f"not an OTLP/JSON trace request: {exc}") from exc
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(obj, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError, RecursionError) as exc:
        raise OTLPJsonError(str(exc)) from exc
    return request


def request_from_json(data: str | bytes) -> ExportTraceServiceRequest:
    """Parse one OTLP/JSON trace request (a line of the Collector's file exporter, an HTTP body)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..." bodies
        raise OTLPJsonError(f"not JSON: {exc}") from exc
    return request_from_dict(obj)


def _ids_to_hex(obj: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if obj.get(key):
            obj[key] = base64.b64decode(obj[key]).hex()


def request_to_dict(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON object of a request (hex ids, camelCase), as the Collector's file exporter writes it."""
    obj = json_format.MessageToDict(request, preserving_proto_field_name=False)
    for rs in obj.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                _ids_to_hex(span)
                for link in span.get("links", ()):
                    _ids_to_hex(link)
    return obj


def request_to_json(request: ExportTraceServiceRequest) -> str:
    return json.dumps(request_to_dict(request), separators=(",", ":"))
