"""Attribute keys and readers: where token ids, text, logprobs, edits and rewards live on a span.

Why one module: the SDK processor, the triplet exporter and the OTLP service must read spans the same
way. Readers take a :class:`SpanView` (never an SDK class), return plain values, and never raise on
malformed data: a value that cannot be read is ``None`` (ids, text) or an :class:`EditEvent` whose
``error`` says why. No standard exists for token ids, so every key list is configurable through
:class:`Conventions`; the defaults cover the shapes found in the wild (REFERENCE.md section 1).
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from operator import itemgetter
from typing import Any, Union

from .view import EventView, SpanView

try:  # a C JSON parser (a dependency); the readers fall back to the stdlib for anything it refuses
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

try:  # a C JSON decoder into typed structs (a dependency): the log-prob reader's fast path, see below
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - depends on the environment
    _msgspec = None

# --- the edit event --------------------------------------------------------------------------------
EDIT_EVENT = "text.edited"
EDIT_TEXT = "tokenfix.edit.text"
EDIT_TOKEN_IDS = "tokenfix.edit.token_ids"
EDIT_TARGET_SPAN_ID = "tokenfix.edit.target.span_id"
EDIT_TARGET_RESPONSE_ID = "tokenfix.edit.target.response_id"
EDIT_VIEW = "tokenfix.edit.view"
EDIT_SOURCE = "tokenfix.edit.source"
EDIT_VIEWS = ("content", "raw")

# --- what a corrected span carries (the overlay) ---------------------------------------------------
PROMPT_IDS = "tokenfix.prompt.token_ids"
RESPONSE_IDS = "tokenfix.response.token_ids"
ORIGINAL_RESPONSE_IDS = "tokenfix.original.response_token_ids"
PROVENANCE = "tokenfix.response.provenance"
LOGPROBS = "tokenfix.response.logprobs"
TEXT = "tokenfix.response.text"
SOURCE_KEY = "tokenfix.response.source_key"
EDIT_COUNT = "tokenfix.edit.count"
TOKENS_KEPT = "tokenfix.tokens.kept"
TOKENS_INSERTED = "tokenfix.tokens.inserted"
TOKENS_REMOVED = "tokenfix.tokens.removed"
STATUS = "tokenfix.status"
ERROR = "tokenfix.error"
METHOD = "tokenfix.method"

#: set by the capture (``otel_tokenfix.capture``) on every call span: ``ok``, ``no_token_ids``, ``incomplete``,
#: ``error``, ``unsupported_response``; with ``tokenfix.capture.reason`` saying why a call has no ids
CAPTURE_STATUS = "tokenfix.capture.status"
CAPTURE_REASON = "tokenfix.capture.reason"

STATUS_CORRECTED = "corrected"
STATUS_UNCHANGED = "unchanged"
STATUS_FALLBACK = "fallback"
STATUS_ERROR = "error"
STATUSES = (STATUS_CORRECTED, STATUS_UNCHANGED, STATUS_FALLBACK, STATUS_ERROR)

# --- rewards and rollout identity (agent-lightning v0.x, AgentOps legacy) ---------------------------
AGL_REWARD_PREFIX = "agentlightning.reward"
AGL_ANNOTATION_SPAN = "agentlightning.annotation"
AGENTOPS_OUTPUT_KEYS = ("agentops.task.output", "agentops.entity.output")
LEGACY_REWARD_KEY = "reward"
ROLLOUT_ID = "agentlightning.rollout_id"
ATTEMPT_ID = "agentlightning.attempt_id"
SPAN_SEQUENCE_ID = "agentlightning.span_sequence_id"

_AGL_OUT = "agentlightning.operation.output"

DEFAULT_PROMPT_KEYS: tuple[str, ...] = (
    "prompt_token_ids",
    f"{_AGL_OUT}.prompt_token_ids",
    "llm.hosted_vllm.prompt_token_ids",
    PROMPT_IDS,
)
DEFAULT_RESPONSE_KEYS: tuple[str, ...] = (
    "response_token_ids",
    f"{_AGL_OUT}.response_token_ids.0",
    f"{_AGL_OUT}.choices.0.token_ids",
    f"{_AGL_OUT}.choices.0.provider_specific_fields.token_ids",
    "llm.hosted_vllm.response_token_ids",
    "llm.hosted_vllm.choices",
    RESPONSE_IDS,
)
DEFAULT_TEXT_KEYS: tuple[str, ...] = (
    "gen_ai.completion.0.content",
    "gen_ai.output.messages",
    "llm.output_messages.0.message.content",
    "output.value",
)
DEFAULT_LOGPROB_KEYS: tuple[str, ...] = ("logprobs.content", "llm.hosted_vllm.choices")
DEFAULT_MODEL_KEYS: tuple[str, ...] = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
DEFAULT_RESPONSE_ID_KEYS: tuple[str, ...] = ("gen_ai.response.id",)
#: Attributes marking a span as an LLM call even when it has no token ids: (key, accepted values or None
#: for any value). Such a call still counts when an untargeted edit looks for "the most recent LLM span".
#: Only our capture's status by default: other instrumentations' spans (``gen_ai.operation.name=chat``,
#: ``openinference.span.kind=LLM``) often *wrap* the call that has the ids; add them if yours do not.
DEFAULT_LLM_MARKERS: tuple[tuple[str, tuple[str, ...] | None], ...] = ((CAPTURE_STATUS, None),)

_HEX16 = re.compile(r"^(?:0x)?[0-9a-fA-F]{16}$")


@dataclass(frozen=True)
class Conventions:
    """Every key the readers look at, in lookup order, and the safety limits of parsing.

    ``overwrite_source_key``: write corrected ids back under the key(s) they were read from (so
    existing consumers such as agent-lightning's adapters read corrected ids); the originals are kept
    under ``tokenfix.original.response_token_ids`` either way.
    """

    prompt_keys: tuple[str, ...] = DEFAULT_PROMPT_KEYS
    response_keys: tuple[str, ...] = DEFAULT_RESPONSE_KEYS
    text_keys: tuple[str, ...] = DEFAULT_TEXT_KEYS
    logprob_keys: tuple[str, ...] = DEFAULT_LOGPROB_KEYS
    model_keys: tuple[str, ...] = DEFAULT_MODEL_KEYS
    response_id_keys: tuple[str, ...] = DEFAULT_RESPONSE_ID_KEYS
    llm_markers: tuple[tuple[str, tuple[str, ...] | None], ...] = DEFAULT_LLM_MARKERS
    edit_event_name: str = EDIT_EVENT
    overwrite_source_key: bool = True
    #: longest string attribute we try to parse as a literal (JSON or Python repr)
    max_literal_chars: int = 16_000_000
    #: most token ids accepted in one list
    max_ids: int = 2_000_000
    #: longest edited text accepted in one edit event
    max_edit_chars: int = 8_000_000
    #: the SDK's attribute value length limit, if one is set (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``): an
    #: edit text of exactly this length was almost surely truncated, so it is rejected, not applied
    truncation_limit: int | None = None

    @cached_property
    def response_key_set(self) -> frozenset[str]:
        """The response keys as a set, for the one-call hot-path check in :func:`has_response_key`."""
        return frozenset(self.response_keys)

    @cached_property
    def watch_key_set(self) -> frozenset[str]:
        """Keys that make a span an LLM call (response ids or an LLM marker): the SDK processor's hot path
        lets a span without events and without any of them pass at once."""
        return frozenset(self.response_keys + tuple(key for key, _ in self.llm_markers))

    @cached_property
    def id_key_set(self) -> frozenset[str]:
        """Every prompt and response ids key, for weighing a held span in one set intersection."""
        return frozenset(self.prompt_keys + self.response_keys)


DEFAULT_CONVENTIONS = Conventions()


# --- safe literal parsing --------------------------------------------------------------------------
@dataclass(frozen=True)
class Parsed:
    """A parsed attribute value and how it was written, so corrected ids can be written back alike."""

    value: Any
    #: "native" (already a list/tuple/...), "json" or "repr" (a Python-literal string)
    encoding: str


def parse_literal(value: Any, *, max_chars: int = DEFAULT_CONVENTIONS.max_literal_chars) -> Parsed | None:
    """Parse a JSON string or a Python-repr literal string (``ast.literal_eval``: literals only, never
    ``eval``); non-strings pass through. ``None`` when it cannot be parsed or is too long.

    Results of long strings are cached (a LiteLLM-proxy ``choices`` repr of 1k tokens with logprobs takes
    ~0.1 s to parse, and one correction reads it several times): treat ``Parsed.value`` as read-only."""
    if not isinstance(value, str):
        return None if value is None else Parsed(value, "native")
    if len(value) > max_chars:
        return None
    if len(value) >= _CACHE_FROM:
        return _parse_cached(value)
    return _parse_text(value)


_CACHE_FROM = 2048


def _parse_text(value: str) -> Parsed | None:
    text = value.strip()
    if not text:
        return None
    try:
        return Parsed(json.loads(text), "json")
    except (ValueError, RecursionError):
        pass
    if text[0] not in "[({":  # only containers are worth a literal_eval
        return None
    try:
        return Parsed(ast.literal_eval(text), "repr")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


_parse_cached = lru_cache(maxsize=8)(_parse_text)


def _parse_fast(value: Any, max_chars: int) -> Parsed | None:
    """:func:`parse_literal` for the readers of ids and logprobs, with orjson first (3-4x faster on a 1k-token
    ``logprobs.content`` string). Why not everywhere: orjson reads an integer literal beyond 64 bits as a
    float, so it may only serve readers that check their result's types (ids: ints only, else an exact
    re-parse, see :func:`_ids_from`) or convert to float anyway (logprobs). Not cached: the readers memoize
    per span (``SpanView.memo``)."""
    if _orjson is not None and isinstance(value, str) and len(value) <= max_chars:
        try:
            return Parsed(_orjson.loads(value), "json")
        except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
            pass
    return parse_literal(value, max_chars=max_chars)


_INT_TYPES = frozenset({int})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def int_list(obj: Any, *, max_ids: int = DEFAULT_CONVENTIONS.max_ids) -> list[int] | None:
    """Token ids from a list of ints, a list of lists (take ``[0]``), or choices (``[0]["token_ids"]``)."""
    path = _ids_path(obj)
    if path is None:
        return None
    for step in path:
        obj = obj[step]
    if len(obj) > max_ids:
        return None
    return list(obj)


def _ids_path(obj: Any, depth: int = 0) -> tuple[Any, ...] | None:
    """Where the int list sits inside ``obj``: () for obj itself, (0,) for a list of lists, ..."""
    if depth > 4:
        return None
    if isinstance(obj, Mapping):
        if "token_ids" in obj:
            sub = _ids_path(obj["token_ids"], depth + 1)
            return None if sub is None else ("token_ids", *sub)
        return None
    if not isinstance(obj, (list, tuple)):
        return None
    if set(map(type, obj)) <= _INT_TYPES:  # C-speed check; bool is excluded (its type is not int)
        return ()
    if obj and isinstance(obj[0], (list, tuple, Mapping)):
        sub = _ids_path(obj[0], depth + 1)
        return None if sub is None else (0, *sub)
    return None


def parse_ids(value: Any, conv: Conventions = DEFAULT_CONVENTIONS) -> list[int] | None:
    """Token ids from any accepted attribute shape; ``None`` if it holds none."""
    return _ids_from(value, conv.max_literal_chars, conv.max_ids)


def _ids_from(value: Any, max_chars: int, max_ids: int) -> list[int] | None:
    """:func:`parse_ids`: orjson first; a string it read that holds no int list is parsed again exactly
    (an integer beyond 64 bits came out of orjson as a float), so the result is :func:`parse_literal`'s."""
    parsed = _parse_fast(value, max_chars)
    if parsed is None:
        return None
    ids = int_list(parsed.value, max_ids=max_ids)
    if ids is None and parsed.encoding == "json" and _orjson is not None:
        exact = parse_literal(value, max_chars=max_chars)
        if exact is not None:
            ids = int_list(exact.value, max_ids=max_ids)
    return ids


def encode_ids_like(
    original: Any,
    new_ids: Sequence[int],
    conv: Conventions = DEFAULT_CONVENTIONS,
    source_index: Sequence[int | None] | None = None,
) -> Any:
    """``new_ids`` written in the shape and encoding of ``original`` (an int array stays an int array; a
    repr string of a list of lists stays one; in choices only choice 0 changes: its ``token_ids``, and its
    per-token ``logprobs.content`` entries are re-indexed with ``source_index`` (``None`` logprob for
    inserted tokens) or dropped when that is not possible, since they described the old ids)."""
    parsed = parse_literal(original, max_chars=conv.max_literal_chars)
    path = None if parsed is None else _ids_path(parsed.value)
    if parsed is None or path is None:
        return tuple(map(int, new_ids))
    if parsed.encoding == "native" and path == ():
        return tuple(map(int, new_ids))
    value = _replace(parsed.value, path, list(map(int, new_ids)), source_index)
    return _write_like(parsed, value)


def _write_like(parsed: Parsed, value: Any) -> Any:
    if parsed.encoding == "json":
        return json.dumps(value)
    if parsed.encoding == "repr":
        return repr(value)
    return _to_attribute(value)


def _replace(obj: Any, path: tuple[Any, ...], ids: list[int], source_index: Sequence[int | None] | None) -> Any:
    if not path:
        return ids
    head, rest = path[0], path[1:]
    if isinstance(obj, Mapping):
        out = dict(obj)
        out[head] = _replace(obj[head], rest, ids, source_index)
        if head == "token_ids" and "logprobs" in out:
            old = out.pop("logprobs")
            entries = _entries(old)
            if entries is not None and source_index is not None and len(ids) == len(source_index):
                out["logprobs"] = {**old, "content": reindex_entries(entries, source_index)}
        return out
    out_list = list(obj)
    out_list[head] = _replace(obj[head], rest, ids, source_index)
    return out_list


def _entries(logprobs: Any) -> list[Any] | None:
    """The per-token entry list of an OpenAI-style ``logprobs`` object (``{"content": [...]}``)."""
    if isinstance(logprobs, Mapping) and isinstance(logprobs.get("content"), list):
        return logprobs["content"]
    return None


def reindex_entries(entries: Sequence[Any], source_index: Sequence[int | None]) -> list[Any]:
    """Per-token entries (``{"token", "logprob", ...}``) for corrected ids: a kept token keeps its entry,
    an inserted one gets ``{"token": "", "logprob": None}`` (it was never sampled)."""
    n = len(entries)
    return [entries[s] if s is not None and 0 <= s < n else _inserted_entry() for s in source_index]


def _inserted_entry() -> dict[str, Any]:
    return {"token": "", "logprob": None, "bytes": None, "top_logprobs": []}


def reindex_logprobs_like(
    original: Any, source_index: Sequence[int | None], conv: Conventions = DEFAULT_CONVENTIONS
) -> Any | None:
    """A ``logprobs.content``-style value (a list of per-token entries, JSON or native) re-indexed for the
    corrected ids, in the original's encoding; ``None`` if ``original`` is not such a list."""
    parsed = parse_literal(original, max_chars=conv.max_literal_chars)
    if parsed is None or not isinstance(parsed.value, list):
        return None
    if not all(isinstance(e, Mapping) for e in parsed.value):
        return None
    value = reindex_entries(parsed.value, source_index)
    if parsed.encoding == "native":
        return json.dumps(value)
    return _write_like(parsed, value)


def _to_attribute(value: Any) -> Any:
    """A nested structure is not a valid SDK attribute value: write it as JSON."""
    if isinstance(value, list) and all(_is_int(x) for x in value):
        return tuple(value)
    return json.dumps(value)


# --- span readers ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdsRead:
    """Response ids of an LLM span, the key they came from, and every key holding the same ids."""

    ids: list[int]
    key: str
    keys: tuple[str, ...]


def _memoized(span: Any, mkey: tuple[Any, ...], compute: Callable[..., Any], *args: Any) -> Any:
    """``compute(*args)``, once per span and ``mkey`` when the span has a memo of derived values
    (``SpanView.memo``; other span-like objects have none): every other time the stored result, ``None``
    included."""
    memo = getattr(span, "memo", None)
    if memo is None:
        return compute(*args)
    found = memo.get(mkey, memo)
    if found is memo:
        found = memo[mkey] = compute(*args)
    return found


def read_response_ids(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> IdsRead | None:
    """The sampled response ids (first key in ``conv.response_keys`` that holds ids). Parsed once per span
    (memoized on the view); every call returns its own copy of the ids."""
    mkey = ("response_ids", conv.response_keys, conv.max_literal_chars, conv.max_ids)
    found = _memoized(span, mkey, _read_response_ids, span, conv)
    return None if found is None else IdsRead(list(found.ids), found.key, found.keys)


def _read_response_ids(span: SpanView, conv: Conventions) -> IdsRead | None:
    attrs = span.attributes
    first: IdsRead | None = None
    same: list[str] = []
    for key in conv.response_keys:
        if key not in attrs:
            continue
        ids = parse_ids(attrs[key], conv)
        if ids is None:
            continue
        if first is None:
            first = IdsRead(ids, key, ())
            same.append(key)
        elif ids == first.ids and key != RESPONSE_IDS:
            same.append(key)
    if first is None:
        return None
    return IdsRead(first.ids, first.key, tuple(same))


def read_prompt_ids(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> list[int] | None:
    """Prompt ids (first key in ``conv.prompt_keys`` that holds ids); memoized like the response ids."""
    mkey = ("prompt_ids", conv.prompt_keys, conv.max_literal_chars, conv.max_ids)
    found = _memoized(span, mkey, _read_prompt_ids, span, conv)
    return None if found is None else list(found)


def _read_prompt_ids(span: SpanView, conv: Conventions) -> list[int] | None:
    for key in conv.prompt_keys:
        if key in span.attributes:
            ids = parse_ids(span.attributes[key], conv)
            if ids is not None:
                return ids
    return None


def is_llm_span(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> bool:
    """An LLM span is one that carries response token ids (cheap key check first)."""
    attrs = span.attributes
    return any(key in attrs for key in conv.response_keys) and read_response_ids(span, conv) is not None


def has_response_key(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> bool:
    """Cheap pre-check (no parsing) used on the hot path."""
    attrs = span.attributes
    return not conv.response_key_set.isdisjoint(attrs if isinstance(attrs, dict) else attrs.keys())


def idless_llm_reason(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> str | None:
    """``"no token ids: <why>"`` for an LLM call whose span carries no usable response ids (an ids key that
    cannot be read, or an LLM marker such as ``tokenfix.capture.status`` without ids); ``None`` otherwise.

    Why it matters: such a call still happened; an untargeted edit made after it is about *its* output,
    so it must not fall back to an earlier call that has ids (wrong training data)."""
    attrs = span.attributes
    detail = None
    if has_response_key(span, conv):
        if read_response_ids(span, conv) is not None:
            return None
        detail = "its token ids attribute could not be read"
    else:
        for key, values in conv.llm_markers:
            value = attrs.get(key)
            if value is not None and (values is None or value in values):
                break
        else:
            return None
    reason = attrs.get(CAPTURE_REASON)
    status = attrs.get(CAPTURE_STATUS)
    if isinstance(reason, str) and reason:
        detail = reason
    elif detail is None:
        detail = f"capture status {status!r}" if isinstance(status, str) else "the LLM span has no token ids"
    return f"no token ids: {detail}"


def read_text(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> str | None:
    """Response text as the API returned it (special tokens hidden), from the first key that has it."""
    attrs = span.attributes
    for key in conv.text_keys:
        if key not in attrs:
            continue
        text = _text_from(key, attrs[key], attrs, conv)
        if text is not None:
            return text
    return None


def _text_from(key: str, value: Any, attrs: Mapping[str, Any], conv: Conventions) -> str | None:
    if key == "gen_ai.output.messages":
        parsed = value if not isinstance(value, str) else _json_or_none(value, conv)
        return _messages_text(parsed)
    if key == "output.value" and isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith("{") or attrs.get("output.mime_type") == "application/json":
            body = _json_or_none(value, conv)
            if isinstance(body, Mapping):
                return _response_body_text(body)
        return value
    return value if isinstance(value, str) else None


def _json_or_none(value: str, conv: Conventions) -> Any:
    if len(value) > conv.max_literal_chars:
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def _messages_text(messages: Any) -> str | None:
    """OTel GenAI ``gen_ai.output.messages``: first assistant message, its text parts joined."""
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, (list, tuple)):
        return None
    chosen = None
    for msg in messages:
        if isinstance(msg, Mapping) and msg.get("role", "assistant") == "assistant":
            chosen = msg
            break
    if chosen is None:
        return None
    if isinstance(chosen.get("content"), str):
        return chosen["content"]
    parts = chosen.get("parts")
    if not isinstance(parts, (list, tuple)):
        return None
    texts = [p.get("content") for p in parts if isinstance(p, Mapping) and p.get("type", "text") == "text"]
    texts = [t for t in texts if isinstance(t, str)]
    return "".join(texts) if texts else None


def _response_body_text(body: Mapping[str, Any]) -> str | None:
    """An OpenAI-style response body (OpenInference ``output.value``)."""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
        msg = choice.get("message")
        if isinstance(msg, Mapping) and isinstance(msg.get("content"), str):
            return msg["content"]
        if isinstance(choice.get("text"), str):
            return choice["text"]
    return None


def read_logprobs(
    span: SpanView, n_ids: int | None = None, conv: Conventions = DEFAULT_CONVENTIONS
) -> list[float] | None:
    """Per-token logprobs of the response; ``None`` if absent or not one per token (when ``n_ids``)."""
    found = read_logprobs_with_key(span, n_ids, conv)
    return None if found is None else found[0]


def read_logprobs_with_key(
    span: SpanView, n_ids: int | None = None, conv: Conventions = DEFAULT_CONVENTIONS
) -> tuple[list[float], str] | None:
    """Like :func:`read_logprobs`, also naming the key the logprobs came from. Each key's value is parsed
    once per span (memoized on the view); every call returns its own list."""
    attrs = span.attributes
    for key in conv.logprob_keys:
        if key not in attrs:
            continue
        values = _memoized(span, ("logprobs", key, conv.max_literal_chars), _logprobs_from, attrs[key], conv)
        if values is not None and (n_ids is None or len(values) == n_ids):
            return list(values), key
    return None


_LOGPROB = itemgetter("logprob")

# --- the log-prob fast path (msgspec) ----------------------------------------------------------------
# Why: a 1k-token ``logprobs.content`` string is the largest thing a span carries, and orjson builds every
# entry's dict, token string, ``bytes`` ints and ``top_logprobs`` alternatives only for the reader to keep
# one float per entry. msgspec decodes into a struct with just ``logprob`` and skips the rest unbuilt
# (still validating it as JSON): 1.5-4x faster, more on OpenAI/vLLM entries carrying top_logprobs.
#
# It answers only what it can prove equal to the general path (orjson, then the stdlib): a JSON list of
# entries, or ``{"content": [...]}``, every entry with a JSON number ``logprob`` (msgspec refuses a bool,
# null, string or missing one, and a number beyond the double range: the general path reads those). Equal
# because both read a valid JSON document alike: duplicate keys last-wins, escaped keys unescaped, floats
# correctly rounded, an integer literal as ``float(int)`` (``-0`` too: 0.0). Two places they differ are
# sent to the general path:
# - an integer literal beyond -2**63 .. 2**64-1, which orjson reads as a float with its own rounding:
#   any value of magnitude 2**63 or more (rounding is monotone, so such a literal lands there) falls back;
# - nesting depth: orjson refuses past 1024 levels and the stdlib past the recursion limit (as msgspec),
#   so a document msgspec reads but orjson refuses (deep, or a number overflowing in a skipped key) must
#   be read by ``json.loads``, called one step further down the stack, with a little less recursion
#   budget than msgspec had. So the document is decoded wrapped in ``_GUARD_DEPTH`` one-element arrays
#   (``tuple[X]``: exactly one element, so ``[`` * k + text + ``]`` * k decodes iff ``text`` is one JSON
#   document), which costs msgspec that many levels: whatever it reads, ``json.loads`` reads too.
# An entry with a ``logprobs`` key (a choice, ``[{"logprobs": {"content": [...]}}]``: the general path's)
# is refused there and then, not after skipping the whole choice.
_GUARD_DEPTH = 32
_GUARD_OPEN = "[" * _GUARD_DEPTH
_GUARD_CLOSE = "]" * _GUARD_DEPTH
_EXACT_BELOW = float(2**63)  # orjson reads an integer literal of smaller magnitude exactly

if _msgspec is not None:

    class _LogprobEntry(_msgspec.Struct, gc=False):
        """An OpenAI-style per-token entry, read for its ``logprob`` only (other keys skipped unparsed)."""

        logprob: float
        logprobs: None = None  # a choice, not an entry: refused at its key

    class _LogprobContent(_msgspec.Struct, gc=False):
        """An OpenAI-style ``logprobs`` object: ``{"content": [entries]}`` (other keys skipped)."""

        content: list[_LogprobEntry]

    def _guarded_decoder() -> Any:
        doc: Any = Union[list[_LogprobEntry], _LogprobContent]  # a runtime type on 3.10
        for _ in range(_GUARD_DEPTH):
            doc = tuple[doc]
        return _msgspec.json.Decoder(doc)

    _LOGPROBS_DECODER: Any = _guarded_decoder()
else:  # pragma: no cover - depends on the environment
    _LOGPROBS_DECODER = None


def _logprobs_msgspec(value: str) -> list[float] | None:
    """The log-probs of a JSON ``logprobs.content`` string read with msgspec (see above); ``None`` when not
    proven equal to the general path (which then reads it), never a different answer."""
    try:
        doc = _LOGPROBS_DECODER.decode(_GUARD_OPEN + value + _GUARD_CLOSE)
    except (ValueError, RecursionError):  # msgspec's Decode/ValidationError and UnicodeEncodeError are too
        return None
    for _ in range(_GUARD_DEPTH):
        doc = doc[0]
    entries = doc.content if doc.__class__ is _LogprobContent else doc
    values = [e.logprob for e in entries]  # floats: msgspec converts an integer literal itself
    if values and not (-_EXACT_BELOW < min(values) and max(values) < _EXACT_BELOW):
        return None
    return values


def _logprobs_from(value: Any, conv: Conventions) -> list[float] | None:
    if _LOGPROBS_DECODER is not None and isinstance(value, str) and len(value) <= conv.max_literal_chars:
        fast = _logprobs_msgspec(value)
        if fast is not None:
            return fast
    parsed = _parse_fast(value, conv.max_literal_chars)
    if parsed is None:
        return None
    obj = parsed.value
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], Mapping) and "logprob" not in obj[0]:
        obj = obj[0].get("logprobs")  # choices: [{"token_ids": ..., "logprobs": {...}}]
    if isinstance(obj, Mapping):
        if "content" in obj:
            obj = obj["content"]
        elif "token_logprobs" in obj:  # completions API
            return _float_list(obj["token_logprobs"])
        else:
            return None
    if isinstance(obj, (list, tuple)):
        if obj and obj[0].__class__ is dict:  # parsed JSON entries: each one's logprob read in C
            try:
                return _float_list(list(map(_LOGPROB, obj)), fresh=True)
            except (KeyError, TypeError):  # an entry without one, or not a mapping: the general path
                pass
        if all(isinstance(x, Mapping) for x in obj):
            return _float_list([x.get("logprob") for x in obj])
        return _float_list(obj)
    return None


def _float_list(values: Any, fresh: bool = False) -> list[float] | None:
    """``values`` as a list of floats (ints converted; bools, text, None and ints beyond the double range
    refused). ``fresh``: ``values`` is a list made for this call, returned as it is instead of copied."""
    if not isinstance(values, (list, tuple)):
        return None
    kinds = set(map(type, values))
    if kinds <= {float}:  # the usual case (parsed JSON): checked in C, no per-token Python loop
        return values if fresh and values.__class__ is list else list(values)
    try:
        if kinds <= {float, int}:  # bool is a subclass of int but its own type here, so it is excluded
            return list(map(float, values))
        out: list[float] = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None
            out.append(float(v))
        return out
    except OverflowError:  # an integer literal of 309+ digits: not a log-prob (the reader never raises)
        return None


def first_str(attributes: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The first non-empty string among ``keys`` (key lists are in priority order)."""
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _first_str(span: SpanView, keys: Sequence[str]) -> str | None:
    return first_str(span.attributes, keys)


def read_model(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> str | None:
    return _first_str(span, conv.model_keys)


def read_response_id(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> str | None:
    return _first_str(span, conv.response_id_keys)


# --- edit events -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditEvent:
    """One ``text.edited`` event as read from its carrier span. ``error`` is set when it is malformed
    (the target fields are still read when possible, so the error can be reported on the target)."""

    carrier_trace_id: int
    carrier_span_id: int
    index: int
    time: int
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    target_span_id: int | None = None
    target_response_id: str | None = None
    view: str = "content"
    source: str | None = None
    error: str | None = None
    #: a target attribute was present (even if unreadable): such an edit never falls back to "most recent"
    target_given: bool = False

    @property
    def key(self) -> tuple[int, int]:
        """Identity of the edit: (carrier span id, event index on that span)."""
        return (self.carrier_span_id, self.index)

    @property
    def targeted(self) -> bool:
        return self.target_given or self.target_span_id is not None or self.target_response_id is not None


def parse_span_id(value: Any) -> int | None:
    """A span id from 16 hex digits (optionally ``0x``-prefixed) or a positive int; ``None`` otherwise."""
    if _is_int(value):
        return value if 0 < value < 2**64 else None
    if isinstance(value, str) and _HEX16.match(value.strip()):
        out = int(value.strip(), 16)
        return out or None
    return None


def has_edit_events(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> bool:
    name = conv.edit_event_name
    return any(ev.name == name for ev in span.events)


def read_edits(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> list[EditEvent]:
    """Every edit event on ``span``, in event order, malformed ones with ``error`` set."""
    if not span.events:
        return []
    return [
        read_edit(span, i, ev, conv) for i, ev in enumerate(span.events) if ev.name == conv.edit_event_name
    ]


def read_edit(span: SpanView, index: int, ev: EventView, conv: Conventions = DEFAULT_CONVENTIONS) -> EditEvent:
    attrs = ev.attributes or {}
    errors: list[str] = []
    target_span_id = None
    if EDIT_TARGET_SPAN_ID in attrs:
        target_span_id = parse_span_id(attrs[EDIT_TARGET_SPAN_ID])
        if target_span_id is None:
            errors.append(f"{EDIT_TARGET_SPAN_ID} is not 16 hex digits: {_short(attrs[EDIT_TARGET_SPAN_ID])}")
    target_response_id = None
    if EDIT_TARGET_RESPONSE_ID in attrs:
        value = attrs[EDIT_TARGET_RESPONSE_ID]
        if isinstance(value, str) and value:
            target_response_id = value
        else:
            errors.append(f"{EDIT_TARGET_RESPONSE_ID} must be a non-empty string, got {_short(value)}")
    text = None
    token_ids = None
    has_text, has_ids = EDIT_TEXT in attrs, EDIT_TOKEN_IDS in attrs
    if has_text and has_ids:
        errors.append(f"both {EDIT_TEXT} and {EDIT_TOKEN_IDS} given")
    elif has_text:
        value = attrs[EDIT_TEXT]
        if not isinstance(value, str):
            errors.append(f"{EDIT_TEXT} must be a string, got {type(value).__name__}")
        elif len(value) > conv.max_edit_chars:
            errors.append(f"{EDIT_TEXT} too long ({len(value)} chars > {conv.max_edit_chars})")
        elif conv.truncation_limit is not None and len(value) == conv.truncation_limit:
            errors.append(
                f"{EDIT_TEXT} is exactly {len(value)} chars, the attribute value length limit: probably truncated"
            )
        else:
            text = value
    elif has_ids:
        ids = parse_ids(attrs[EDIT_TOKEN_IDS], conv)
        if ids is None or any(i < 0 for i in ids):
            errors.append(f"{EDIT_TOKEN_IDS} must be a list of non-negative ints, got {_short(attrs[EDIT_TOKEN_IDS])}")
        else:
            token_ids = tuple(ids)
    else:
        errors.append(f"missing {EDIT_TEXT} or {EDIT_TOKEN_IDS}")
    view = attrs.get(EDIT_VIEW, "content")
    if view not in EDIT_VIEWS:
        errors.append(f"{EDIT_VIEW} must be one of {EDIT_VIEWS}, got {_short(view)}")
        view = "content"
    source = attrs.get(EDIT_SOURCE)
    return EditEvent(
        carrier_trace_id=span.trace_id,
        carrier_span_id=span.span_id,
        index=index,
        time=int(ev.time_unix_nano),
        text=text,
        token_ids=token_ids,
        target_span_id=target_span_id,
        target_response_id=target_response_id,
        view=view,
        source=source if isinstance(source, str) else None,
        error="; ".join(errors) or None,
        target_given=EDIT_TARGET_SPAN_ID in attrs or EDIT_TARGET_RESPONSE_ID in attrs,
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- rewards ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RewardView:
    """A reward found on a span. Matching rewards to calls (FIRST_OCCURRENCE by ``time``) is the triplet
    builder's job; ``time`` is the carrier span's start time, as agent-lightning uses."""

    value: float
    name: str | None
    index: int
    span_id: int
    time: int
    source: str = "agentlightning"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> bool:
        return self.index == 0


def read_rewards(span: SpanView, conv: Conventions = DEFAULT_CONVENTIONS) -> list[RewardView]:
    """Rewards on ``span`` in agent-lightning's formats: ``agentlightning.reward.N.{name,value}`` (index 0
    is primary), AgentOps ``agentops.{task,entity}.output`` JSON ``{"type": "reward", "value": x}``, and
    the v0.2 ``reward`` attribute on an ``agentlightning.annotation`` span."""
    attrs = span.attributes
    out: dict[int, dict[str, Any]] = {}
    prefix = AGL_REWARD_PREFIX + "."
    for key in attrs:  # keys first: a lazy mapping converts only the values read (not a 1k-token array)
        if not key.startswith(prefix):
            continue
        value = attrs[key]
        rest = key[len(prefix):].split(".", 1)
        if not rest[0].isdigit():
            continue
        field_name = rest[1] if len(rest) > 1 else "value"
        out.setdefault(int(rest[0]), {})[field_name] = value
    rewards: list[RewardView] = []
    for idx in sorted(out):
        value = _reward_number(out[idx].get("value"))
        if value is None:
            continue
        name = out[idx].get("name")
        rewards.append(
            RewardView(value, name if isinstance(name, str) else None, idx, span.span_id, span.start_time)
        )
    if rewards:
        return rewards
    for key in AGENTOPS_OUTPUT_KEYS:
        if key in attrs:
            body = attrs[key]
            obj = _json_or_none(body, conv) if isinstance(body, str) else body
            if isinstance(obj, Mapping) and obj.get("type") == "reward":
                value = _reward_number(obj.get("value"))
                if value is not None:
                    return [RewardView(value, None, 0, span.span_id, span.start_time, "agentops")]
    if span.name == AGL_ANNOTATION_SPAN and LEGACY_REWARD_KEY in attrs:
        value = _reward_number(attrs[LEGACY_REWARD_KEY])
        if value is not None:
            return [RewardView(value, None, 0, span.span_id, span.start_time, "legacy")]
    return []


def _reward_number(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def read_rollout(span: SpanView) -> dict[str, Any]:
    """agent-lightning rollout identity from span attributes, falling back to resource attributes."""
    out: dict[str, Any] = {}
    for key in (ROLLOUT_ID, ATTEMPT_ID, SPAN_SEQUENCE_ID):
        if key in span.attributes:
            out[key] = span.attributes[key]
        elif key in span.resource_attributes:
            out[key] = span.resource_attributes[key]
    return out


def read_status(span: SpanView) -> str | None:
    """``tokenfix.status`` if the span was already corrected upstream (the corrector reads it back)."""
    value = span.attributes.get(STATUS)
    return value if isinstance(value, str) else None
