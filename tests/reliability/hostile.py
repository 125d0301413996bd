"""Hypothesis strategies for hostile span content: what a buggy or malicious agent can put on spans.

Shared by the processor fuzz test and the OTLP service fuzz test (and ``bench/fuzz_*.py``).
"""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import strategies as st

#: a file that code hidden in a repr string would create if anything ever evaluated it
CANARY = os.path.join(tempfile.gettempdir(), "otel_tokenfix_canary_must_not_exist")

EVIL_REPRS = (
    f"[1, 2, __import__('os').system('touch {CANARY}')]",
    f"[[1, 2], open('{CANARY}', 'w')]",
    "(lambda: [1, 2])()",
    "[1, 2] + [3] * 10**9",
    "{'token_ids': [1, 2], 'x': exec('import os')}",
    "[" * 5000 + "]" * 5000,
    "[" * 200_000,
    "[1, 2, 3",
    '{"token_ids": [1, "2", null]}',
    "[9223372036854775808, -1]",
    "[1e309, nan]",
    "[True, False]",
    "b'\\xff\\xfe'",
)

_GIANT = ("x" * 3_000_000, "é" * 1_000_000, "\U0001f600" * 500_000, "[" + "1, " * 400_000 + "1]")

ids = st.lists(
    st.one_of(
        st.integers(-5, 160_000),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([2**63 - 1, 2**63, -(2**63), 2**64, 151645, 151667, 0]),
    ),
    max_size=40,
)

text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4),  # lone
    st.sampled_from(_GIANT),
    st.sampled_from(EVIL_REPRS),
    st.just("<|im_end|><think>[INST]\x00\ufffd"),
)

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=40),  # invalid UTF-8 as an attribute value
)

value = st.one_of(
    scalar,
    ids,
    ids.map(repr),
    ids.map(lambda x: repr([x])),
    ids.map(lambda x: str([{"token_ids": x, "logprobs": {"content": [{"logprob": "nan"}]}}])),
    st.lists(scalar, max_size=5).map(tuple),
    st.dictionaries(st.text(max_size=5), scalar, max_size=3),
)

RESPONSE_KEYS = (
    "response_token_ids",
    "tokenfix.response.token_ids",
    "llm.hosted_vllm.response_token_ids",
    "llm.hosted_vllm.choices",
    "agentlightning.operation.output.choices.0.token_ids",
)
OTHER_KEYS = (
    "prompt_token_ids",
    "tokenfix.prompt.token_ids",
    "gen_ai.completion.0.content",
    "gen_ai.output.messages",
    "output.value",
    "logprobs.content",
    "gen_ai.request.model",
    "gen_ai.response.id",
    "agentlightning.reward.0.value",
    "tokenfix.status",
    "reward",
    "agentops.task.output",
)
EDIT_KEYS = (
    "tokenfix.edit.text",
    "tokenfix.edit.token_ids",
    "tokenfix.edit.target.span_id",
    "tokenfix.edit.target.response_id",
    "tokenfix.edit.view",
    "tokenfix.edit.source",
)

attributes = st.dictionaries(st.sampled_from(RESPONSE_KEYS + OTHER_KEYS), value, max_size=6)
edit_attributes = st.dictionaries(st.sampled_from(EDIT_KEYS), value, max_size=4)

# small id spaces, so duplicate span ids, shared traces and parent cycles happen often
small_id = st.integers(1, 6)
span_shape = st.fixed_dictionaries(
    {
        "trace": st.integers(1, 3),
        "span": small_id,
        "parent": st.one_of(st.none(), small_id),
        "remote": st.booleans(),
        "attributes": attributes,
        "events": st.lists(
            st.tuples(st.sampled_from(["text.edited", "text.edited", "other", ""]), edit_attributes), max_size=3
        ),
        "start": st.integers(0, 2**64 - 1),
        "duration": st.integers(-(10**9), 10**9),
    }
)
trace_batch = st.lists(span_shape, min_size=1, max_size=12)


# --- OTLP requests ------------------------------------------------------------------------------------------
def any_value(v, depth: int = 0):
    """A hostile Python value as an OTLP AnyValue (what a buggy or malicious exporter can send)."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    out = AnyValue()
    if v is None:
        return out
    if isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        if -(2**63) <= v < 2**63:
            out.int_value = v
        else:
            out.string_value = str(v)
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, bytes):
        out.bytes_value = v
    elif isinstance(v, str):
        out.string_value = v.encode("utf-8", "replace").decode("utf-8")  # protobuf refuses lone surrogates
    elif isinstance(v, dict) and depth < 4:
        for k, x in v.items():
            out.kvlist_value.values.append(
                KeyValue(key=k.encode("utf-8", "replace").decode(), value=any_value(x, depth + 1))
            )
    elif isinstance(v, (list, tuple)) and depth < 4:
        for x in v:
            out.array_value.values.append(any_value(x, depth + 1))
    else:
        out.string_value = repr(v)[:1000]
    return out


def _kvs(attrs: dict):
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


otlp_id = st.one_of(st.binary(min_size=0, max_size=40), st.integers(1, 6).map(lambda i: i.to_bytes(8, "big")))
otlp_span = st.fixed_dictionaries(
    {
        "trace_id": st.one_of(st.integers(1, 3).map(lambda i: i.to_bytes(16, "big")), st.binary(max_size=40)),
        "span_id": otlp_id,
        "parent_span_id": st.one_of(st.just(b""), otlp_id),
        "name": st.text(max_size=30),
        "start": st.integers(0, 2**64 - 1),
        "end": st.integers(0, 2**64 - 1),
        "flags": st.integers(0, 2**32 - 1),
        "kind": st.integers(0, 2**31 - 1),
        "attributes": attributes,
        "events": st.lists(
            st.tuples(st.sampled_from(["text.edited", "text.edited", "x"]), edit_attributes, st.integers(0, 2**64 - 1)),
            max_size=3,
        ),
        "resource": st.dictionaries(st.sampled_from(["agentlightning.rollout_id", "service.name"]), value, max_size=2),
    }
)


def otlp_request(spans: list[dict]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    for s in spans:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(_kvs(s["resource"]))
        sp = rs.scope_spans.add().spans.add()
        sp.trace_id, sp.span_id, sp.parent_span_id = s["trace_id"], s["span_id"], s["parent_span_id"]
        sp.name = s["name"].encode("utf-8", "replace").decode()
        sp.start_time_unix_nano, sp.end_time_unix_nano = s["start"], s["end"]
        sp.flags = s["flags"]
        sp.kind = s["kind"]
        sp.attributes.extend(_kvs({"gen_ai.request.model": "qwen", **s["attributes"]}))
        for name, attrs, t in s["events"]:
            ev = sp.events.add()
            ev.name, ev.time_unix_nano = name, t
            ev.attributes.extend(_kvs(attrs))
    return req.SerializeToString()


def mutate(body: bytes, how: str, at: int) -> bytes:
    """Damage a valid body: cut it, flip a byte, or plant invalid UTF-8 where a string was."""
    if not body:
        return body
    i = at % len(body)
    if how == "truncate":
        return body[:i]
    if how == "flip":
        return body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
    if how == "utf8" and b"qwen" in body:
        return body.replace(b"qwen", b"\xff\xfe\xfd\xfc", 1)
    return body


otlp_body = st.one_of(
    st.lists(otlp_span, min_size=1, max_size=6).map(otlp_request),
    st.tuples(
        st.lists(otlp_span, min_size=1, max_size=4).map(otlp_request),
        st.sampled_from(["truncate", "flip", "utf8", "none"]),
        st.integers(0, 10**6),
    ).map(lambda t: mutate(*t)),
    st.binary(max_size=300),
)


# --- OTLP/JSON bodies ---------------------------------------------------------------------------------------
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=20)
)
json_value = st.recursive(
    json_scalar,
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=12,
)
json_span = st.fixed_dictionaries(
    {},
    optional={
        "traceId": st.one_of(st.sampled_from(["0" * 32, "ab" * 16, "zz" * 16, "", "AQID"]), json_value),
        "spanId": st.one_of(st.sampled_from(["01" * 8, "xyz", "0" * 16]), json_value),
        "parentSpanId": json_value,
        "name": json_value,
        "startTimeUnixNano": st.one_of(st.sampled_from(["1", "-1", "18446744073709551616", "1e9"]), json_value),
        "attributes": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"key": st.sampled_from(RESPONSE_KEYS + EDIT_KEYS)}, optional={"value": json_value}
                ),
                max_size=4,
            ),
            json_value,
        ),
        "events": st.one_of(
            st.lists(
                st.dictionaries(st.sampled_from(["name", "attributes", "timeUnixNano"]), json_value, max_size=3),
                max_size=3,
            ),
            json_value,
        ),
        "links": json_value,
        "kind": json_value,
    },
)


def _json_request(spans, where: int, junk) -> dict:
    levels = [
        {"resourceSpans": junk},
        {"resourceSpans": [{"scopeSpans": junk}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": junk}]}]},
        {"resourceSpans": [{"resource": junk, "scopeSpans": [{"scope": junk, "spans": spans}]}]},
    ]
    return levels[where % len(levels)]


otlp_json_body = st.one_of(
    st.builds(
        lambda s, w, j: json.dumps(_json_request(s, w, j)).encode(),
        st.lists(json_span, max_size=3),
        st.integers(0, 3),
        json_value,
    ),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            b"[" * 100_000,
            b'{"resourceSpans": ' + b"[" * 50_000,
            b"\xff\xfe{}",
            b"",
            b"null",
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "x", "value": '
            + b'{"kvlistValue": {"values": [{"key": "a", "value": ' * 300
            + b"{}"
            + b"}]}}" * 300
            + b"}]}]}]}]}",
        ]
    ),
    st.binary(max_size=200),
)
