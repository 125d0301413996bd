"""Per-tokenizer cached table: the bytes of every token id and a text-preserving window encoder.

Why: correcting ids after an edit is done in bytes, without calling ``decode`` on the whole response.
That needs, once per tokenizer, the exact bytes each id decodes to, which ids the content view hides
(special added tokens), which ids must never be re-encoded or used as anchors (added tokens), and an
encoder that writes text *exactly* (no Unicode normalizer, no dummy prefix, typed control-token text
stays text).
"""

from __future__ import annotations

import array
import json
import struct
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .correction import TokenFixError

if TYPE_CHECKING:  # pragma: no cover
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

SPM_SPACE = "\u2581"

#: Packed per-id table entry: ``start << 32 | byte length << 16 | hidden`` (uint64). On a little-endian
#: machine byte 0 is the hidden flag alone and bytes 2-3 (the second uint16) the length: both are read
#: as strided views of the gathered entries, without an arithmetic pass (numpy calls cost most on short
#: responses).
PACK_HIDDEN = np.uint64(1)
PACK_LEN_SHIFT = np.uint64(16)
PACK_LEN_MASK = np.uint64(0xFFFF)
PACK_START_SHIFT = np.uint64(32)
_UNICODE_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD"}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=False))


_BYTE_TRANSLATE = {ord(ch): b for b, ch in bytes_to_unicode().items()}


@dataclass(eq=False)
class TokenTable:
    """Everything the engine needs about one tokenizer, built once."""

    kind: str  # "bytelevel" | "metaspace"
    size: int
    token_bytes: list[bytes | None]
    lengths: np.ndarray  # int64 byte length per id (0 for holes)
    hidden: np.ndarray  # bool per id: skipped by decode(skip_special_tokens=True)
    added: np.ndarray  # bool per id: an added token (never an anchor, never re-encoded as text)
    valid: np.ndarray  # bool per id: the id decodes to something
    strip_leading_space: bool  # decoder strips one leading space of the whole text (SPM dummy prefix)
    encoder: Tokenizer  # normalizer-free, no dummy prefix, encode_special_tokens=True
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))  # all token bytes
    starts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # id -> offset in flat
    bos: int | None = None
    packed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # see PACK_*
    has_holes: bool = False
    byte_ids: dict[int, int] = field(default_factory=dict)  # byte value -> id of its byte-fallback token
    lossy_normalizer: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: The added ids as a set (membership tests on a few Python ints, cheaper than numpy scalar indexing).
    added_ids: frozenset[int] = field(init=False, repr=False)
    #: Some valid id decodes to no bytes (then byte gathers take their general path).
    has_empty: bool = field(init=False)

    def __post_init__(self) -> None:
        self.added_ids = frozenset(np.flatnonzero(self.added).tolist())
        self.has_empty = bool((self.valid & (self.lengths == 0)).any())

    def lookup(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Ids as an int64 array and their packed table entries (one gather: fewer cache misses than one
        per property); raise TokenFixError on any id the tokenizer cannot decode."""
        arr = ids_array(ids)
        if not arr.size:
            return arr, np.zeros(0, dtype=np.uint64)
        if int(arr.view(np.uint64).max()) >= self.size:  # one pass: a negative id is a huge unsigned one
            lo, hi = int(arr.min()), int(arr.max())
            bad = lo if lo < 0 else hi
            raise TokenFixError(f"token id {bad} is out of vocabulary (size {self.size})")
        info = self.packed[arr]
        if self.has_holes:
            ok = self.valid[arr]
            if not bool(ok.all()):
                raise TokenFixError(f"token id {int(arr[~ok][0])} is not in the vocabulary")
        return arr, info

    def check_ids(self, ids: Sequence[int]) -> np.ndarray:
        """Ids as an int64 array; raise TokenFixError on any id the tokenizer cannot decode."""
        return self.lookup(ids)[0]

    def encode(self, text: str) -> list[int]:
        """Encode text exactly (caller verifies bytes); literal ``▁`` under SentencePiece via byte tokens.
        A tokenizer that fails on the text (e.g. an unknown character and no unk id) raises TokenFixError."""
        try:
            return self._encode(text)
        except TokenFixError:
            raise
        except Exception as exc:  # the Rust backend raises plain Exception
            raise TokenFixError(f"the tokenizer cannot encode this text: {exc}") from exc

    def _encode(self, text: str) -> list[int]:
        if not text:
            return []
        if self.kind == "metaspace" and SPM_SPACE in text:
            out: list[int] = []
            parts = text.split(SPM_SPACE)
            raw = SPM_SPACE.encode()
            for k, part in enumerate(parts):
                if k:
                    if not all(b in self.byte_ids for b in raw):
                        raise TokenFixError("tokenizer has no byte-fallback tokens to write a literal '\u2581'")
                    out.extend(self.byte_ids[b] for b in raw)
                if part:
                    out.extend(self.encoder.encode(part, add_special_tokens=False).ids)
            return out
        return self.encoder.encode(text, add_special_tokens=False).ids

    def join(self, ids: Any) -> bytes:
        tb = self.token_bytes
        return b"".join([tb[i] for i in ids])  # type: ignore[misc]


def ids_array(ids: Sequence[int]) -> np.ndarray:
    """Token ids as an int64 array; TokenFixError if they are not a flat sequence of integers.

    Why ``struct``: packing a list or tuple of Python ints with one precompiled format is ~3x faster than
    ``array.array``/``np.array`` (it matters at 32k ids: ~0.2 ms instead of ~0.6 ms). Both accept exactly
    the objects with ``__index__`` and reject floats, strings and nested sequences."""
    try:
        if type(ids) is list or type(ids) is tuple:
            return np.frombuffer(struct.pack(f"{len(ids)}q", *ids), dtype=np.int64)
        return np.frombuffer(array.array("q", ids), dtype=np.int64)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise TokenFixError(f"token ids must be a flat sequence of integers: {exc}") from exc


_TABLES: weakref.WeakKeyDictionary[Any, TokenTable] = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


#: Tokenizers that cannot be weakly referenced (a bare ``tokenizers.Tokenizer``): a few, held strongly.
_STRONG: dict[int, tuple[Any, TokenTable]] = {}
_STRONG_MAX = 8


def _lookup(tokenizer: Any) -> TokenTable | None:
    try:
        return _TABLES.get(tokenizer)
    except TypeError:
        hit = _STRONG.get(id(tokenizer))
        return hit[1] if hit is not None and hit[0] is tokenizer else None


def get_table(tokenizer: PreTrainedTokenizerBase) -> TokenTable:
    """The cached table of ``tokenizer`` (built on first use; weakly keyed on the tokenizer object)."""
    table = _lookup(tokenizer)
    if table is not None:
        return table
    with _TABLES_LOCK:
        table = _lookup(tokenizer)
        if table is None:
            table = build_table(tokenizer)
            try:
                _TABLES[tokenizer] = table
            except TypeError:
                if len(_STRONG) >= _STRONG_MAX:
                    _STRONG.pop(next(iter(_STRONG)))
                _STRONG[id(tokenizer)] = (tokenizer, table)
    return table


def _backend(tokenizer: Any) -> Tokenizer:
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise TokenFixError(f"{type(tokenizer).__name__} is not a fast tokenizer; load one backed by tokenizers")
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise TokenFixError(f"{type(tokenizer).__name__} has no backend tokenizer")
    return backend


def _flatten(node: dict | None, key: str) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        out: list[dict] = []
        for child in node.get(key, []):
            out.extend(_flatten(child, key))
        return out
    return [node]


def _decoder_kind(dec: dict | None) -> tuple[str, bool]:
    steps = _flatten(dec, "decoders")
    types = [s.get("type") for s in steps]
    strip = False
    for s in steps:
        if s.get("type") == "Strip" and s.get("content") == " " and int(s.get("start", 0)) >= 1:
            strip = True
        if s.get("type") == "Metaspace":
            scheme = s.get("prepend_scheme", "always" if s.get("add_prefix_space", True) else "never")
            strip = strip or scheme != "never"
    if "ByteLevel" in types:
        return "bytelevel", False
    if "Metaspace" in types or any(
        s.get("type") == "Replace" and s.get("pattern", {}).get("String") == SPM_SPACE for s in steps
    ):
        return "metaspace", strip
    raise TokenFixError(f"unsupported tokenizer decoder {types or None}: need byte-level BPE or SentencePiece")


def _sequence(nodes: list[dict], key: str) -> dict | None:
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else {"type": "Sequence", key: nodes}


def _encoder_json(spec: dict, kind: str) -> tuple[dict, bool]:
    """Component specs that encode text exactly (see module doc)."""
    spec = dict(spec)
    lossy = False
    norms = []
    for n in _flatten(spec.get("normalizer"), "normalizers"):
        t = n.get("type")
        if t in _UNICODE_NORMALIZERS or t == "Prepend":
            continue
        if t == "Replace" and n.get("pattern", {}).get("String") == " " and n.get("content") == SPM_SPACE:
            norms.append(n)
            continue
        lossy = True
        norms.append(n)
    spec["normalizer"] = _sequence(norms, "normalizers")
    pres = []
    for p in _flatten(spec.get("pre_tokenizer"), "pretokenizers"):
        p = dict(p)
        if p.get("type") == "Metaspace":
            p["prepend_scheme"] = "never"
            p["add_prefix_space"] = False
        if p.get("type") == "ByteLevel":
            p["add_prefix_space"] = False
        pres.append(p)
    spec["pre_tokenizer"] = _sequence(pres, "pretokenizers")
    return spec, lossy


def _component_spec(backend: Tokenizer) -> dict:
    """The normalizer, pre-tokenizer and decoder specs, without serialising the (large) model."""
    spec: dict = {}
    for key, comp in (
        ("normalizer", backend.normalizer),
        ("pre_tokenizer", backend.pre_tokenizer),
        ("decoder", backend.decoder),
    ):
        spec[key] = None if comp is None else json.loads(comp.__getstate__())
    return spec


def _make_encoder(backend: Tokenizer, enc_spec: dict) -> Tokenizer:
    """A tokenizer sharing the backend's model (no copy of the vocabulary) with exact-text components and
    the same added tokens at the same ids; falls back to a full JSON copy if the ids do not line up."""
    from tokenizers import Tokenizer

    tiny = Tokenizer.from_str(
        json.dumps(
            {
                "version": "1.0",
                "added_tokens": [],
                "normalizer": enc_spec.get("normalizer"),
                "pre_tokenizer": enc_spec.get("pre_tokenizer"),
                "post_processor": None,
                "decoder": None,
                "model": {"type": "BPE", "vocab": {}, "merges": []},
            }
        )
    )
    enc = Tokenizer(backend.model)
    enc.normalizer = tiny.normalizer
    enc.pre_tokenizer = tiny.pre_tokenizer
    added = sorted(backend.get_added_tokens_decoder().items())
    group: list = []
    for n, (_, tok) in enumerate(added):
        group.append(tok)
        if n + 1 == len(added) or added[n + 1][1].special != tok.special:  # add in id order, in batches
            (enc.add_special_tokens if tok.special else enc.add_tokens)(group)
            group = []
    if all(enc.token_to_id(tok.content) == i for i, tok in added):
        return enc
    full = json.loads(backend.to_str())  # rare: added ids with gaps; copy everything
    full.update({k: enc_spec.get(k) for k in ("normalizer", "pre_tokenizer")})
    full.update({"post_processor": None, "truncation": None, "padding": None})
    return Tokenizer.from_str(json.dumps(full))


def build_table(tokenizer: PreTrainedTokenizerBase) -> TokenTable:
    """Build the table once per tokenizer (~0.5-1 s for a 150k vocabulary)."""
    backend = _backend(tokenizer)
    spec = _component_spec(backend)
    model_type = type(backend.model).__name__
    if model_type not in ("BPE", "Unigram"):
        raise TokenFixError(f"unsupported tokenizer model {model_type!r}: need BPE or Unigram")
    kind, strip = _decoder_kind(spec.get("decoder"))
    vocab = backend.get_vocab(with_added_tokens=True)
    size = max(max(vocab.values(), default=-1) + 1, backend.get_vocab_size(with_added_tokens=True))
    try:
        size = max(size, len(tokenizer))
    except TypeError:
        pass
    token_bytes: list[bytes | None] = [None] * size
    byte_ids: dict[int, int] = {}
    if kind == "bytelevel":
        for tok, i in vocab.items():
            s = tok.translate(_BYTE_TRANSLATE)
            try:
                token_bytes[i] = s.encode("latin-1")
            except UnicodeEncodeError:
                token_bytes[i] = tok.encode("utf-8")
    else:
        for tok, i in vocab.items():
            if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
                try:
                    b = int(tok[3:5], 16)
                except ValueError:
                    token_bytes[i] = tok.replace(SPM_SPACE, " ").encode("utf-8")
                    continue
                token_bytes[i] = bytes([b])
                byte_ids[b] = i
            else:
                token_bytes[i] = tok.replace(SPM_SPACE, " ").encode("utf-8")
    hidden = np.zeros(size, dtype=bool)
    added = np.zeros(size, dtype=bool)
    for i, at in backend.get_added_tokens_decoder().items():
        if i >= size:
            continue
        added[i] = True
        hidden[i] = bool(at.special)
        # Added tokens are decoded from their content, bypassing the byte map (checked once here).
        token_bytes[i] = backend.decode([i], skip_special_tokens=False).encode("utf-8")
    valid = np.array([b is not None for b in token_bytes], dtype=bool)
    lengths = np.array([len(b) if b is not None else 0 for b in token_bytes], dtype=np.int64)
    starts = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    if int(starts[-1]) >= 1 << 32:
        raise TokenFixError("the vocabulary's token bytes exceed 4 GiB: unsupported vocabulary")
    if int(lengths.max(initial=0)) > 0xFFFF:
        raise TokenFixError("a token longer than 65535 bytes: unsupported vocabulary")
    packed = (
        (starts[:-1].astype(np.uint64) << PACK_START_SHIFT)
        | (lengths.astype(np.uint64) << PACK_LEN_SHIFT)
        | (hidden.astype(np.uint64) * PACK_HIDDEN)
    )
    flat = np.frombuffer(b"".join(b or b"" for b in token_bytes), dtype=np.uint8)
    bos = getattr(tokenizer, "bos_token_id", None)
    enc_spec, lossy = _encoder_json(spec, kind)
    encoder = _make_encoder(backend, enc_spec)
    encoder.encode_special_tokens = True
    return TokenTable(
        kind=kind,
        size=size,
        token_bytes=token_bytes,
        lengths=lengths,
        hidden=hidden,
        added=added,
        valid=valid,
        strip_leading_space=strip,
        encoder=encoder,
        flat=flat,
        starts=starts,
        packed=packed,
        has_holes=not bool(valid.all()),
        bos=bos if isinstance(bos, int) else None,
        byte_ids=byte_ids,
        lossy_normalizer=lossy,
    )
