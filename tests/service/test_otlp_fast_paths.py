"""The service's fast paths give exactly what the general paths give: int arrays read in bulk from their
serialized bytes (``packed_ints``) vs protobuf's own element reads, on real and on adversarial bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

from otel_tokenfix.otlp.decode import _PACKED_FROM, any_value, packed_ints
from otel_tokenfix.otlp.encode import set_any_value

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
IDS = st.one_of(
    st.integers(min_value=0, max_value=151_935),  # token ids
    st.integers(min_value=0, max_value=2**63 - 1),
    INT64,
)


def reference(value: AnyValue):
    """The general reading, one element at a time (what ``any_value`` did before the bulk path)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(reference(v) for v in value.array_value.values)
    if kind is None:
        return None
    out = getattr(value, kind)
    return bytes(out) if kind == "bytes_value" else out


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(IDS, min_size=0, max_size=300))
def test_int_arrays_read_in_bulk_equal_element_reads(ids):
    av = AnyValue()
    set_any_value(av, ids)
    assert any_value(av) == reference(av) == tuple(ids)
    got = packed_ints(av.array_value.SerializeToString(), len(ids))
    if ids and min(ids) >= 0:
        assert got == tuple(ids)  # every non-negative int64 takes the bulk path
    else:
        assert got is None  # negative ints (10-byte varints) or nothing: the general path


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(IDS, IDS, IDS, st.booleans(), st.text(max_size=3), st.floats(allow_nan=False),
                          st.none()), min_size=1, max_size=80))
def test_mixed_arrays_read_as_the_general_path(values):
    av = AnyValue()
    array = av.array_value
    array.SetInParent()
    for v in values:
        set_any_value(array.values.add(), v)
    assert any_value(av) == reference(av)


# --- adversarial bytes: every way an element can differ from "0A <k+1> 18 <varint>" -------------------
def canonical(n: int) -> bytes:
    body = b"\x18" + varint(n)
    return b"\x0a" + bytes([len(body)]) + body


ELEMENT = st.one_of(
    st.builds(canonical, st.integers(min_value=0, max_value=2**63 - 1)),
    st.builds(canonical, st.integers(min_value=0, max_value=300)),
    # a non-canonical varint (padded with continuation bytes): protobuf reads the same value
    st.builds(lambda n, pad: (lambda body: b"\x0a" + bytes([len(body)]) + body)(
        b"\x18" + bytes([(n & 0x7F) | 0x80]) + b"\x80" * pad + b"\x00"), st.integers(0, 127), st.integers(0, 3)),
    # the int field twice (the last one wins), an int then a bool (the oneof's last one wins)
    st.builds(lambda a, b: b"\x0a" + bytes([2 + len(varint(a)) + len(varint(b))]) + b"\x18" + varint(a) + b"\x18"
              + varint(b), st.integers(0, 1000), st.integers(0, 1000)),
    st.builds(lambda a: b"\x0a" + bytes([3 + len(varint(a))]) + b"\x18" + varint(a) + b"\x08\x01",
              st.integers(0, 1000)),
    st.just(b"\x0a\x00"),  # an empty AnyValue
    st.just(b"\x0a\x02\x08\x01"),  # bool_value
    st.builds(lambda n: b"\x0a" + bytes([2 + len(varint(n))]) + b"\x48" + varint(n) + b"", st.integers(0, 300)),
    st.builds(lambda t: b"\x0a" + bytes([2 + len(t)]) + b"\x0a" + bytes([len(t)]) + t,
              st.binary(max_size=6)),  # string_value (maybe invalid UTF-8: then no parse)
    st.builds(lambda n: b"\x12\x01" + bytes([n]), st.integers(0, 127)),  # an unknown ArrayValue field
    st.builds(lambda n: b"\x18" + varint(n), st.integers(0, 1000)),  # an unknown varint ArrayValue field
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(ELEMENT, min_size=1, max_size=12), st.lists(ELEMENT, max_size=3))
def test_packed_ints_accepts_only_plain_int_elements(elements, more):
    raw = b"".join(elements + more)
    try:
        array = ArrayValue.FromString(raw)
    except Exception:  # noqa: BLE001 - bytes protobuf refuses are never handed to packed_ints
        return
    values = array.values
    got = packed_ints(raw, len(values))
    if got is not None:
        assert all(v.WhichOneof("value") == "int_value" for v in values)
        assert got == tuple(v.int_value for v in values)
    av = AnyValue(array_value=array)
    assert any_value(av) == reference(av)


def test_long_arrays_take_the_bulk_path_and_short_ones_do_not():
    assert _PACKED_FROM > 1
    ids = list(range(100, 100 + 2 * _PACKED_FROM))
    av = AnyValue()
    set_any_value(av, ids)
    assert packed_ints(av.array_value.SerializeToString(), len(ids)) == tuple(ids) == any_value(av)
    # a non-int element late in a long int array: the general path reads it (no bulk result)
    av.array_value.values.add(string_value="x")
    assert packed_ints(av.array_value.SerializeToString(), len(av.array_value.values)) is None
    assert any_value(av) == (*ids, "x")


def test_views_built_through_slots_equal_keyword_built_views():
    from dataclasses import fields

    from otel_tokenfix.trace.view import SpanView, make_span_view

    args = (1, 2, 3, "n", 4, 5, {"a": 1}, (), {"r": 2}, True, object())
    fast = make_span_view(*args)
    slow = SpanView(*args)
    assert fast == slow and fast.source is slow.source
    assert fast.memo == {} and fast.memo is not make_span_view(*args).memo
    assert all(getattr(fast, f.name) == getattr(slow, f.name) for f in fields(SpanView))
