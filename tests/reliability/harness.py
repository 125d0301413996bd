"""Reliability harness: simulated agents, a flaky downstream, span-id accounting, RSS, and the
differential checker. Shared by the tests in this folder and by ``bench/soak.py`` (full size).

Why a harness and not fixtures: the soak, the bounded-memory test and the service crash test all need
the same workload and the same checks; keeping them here (real OpenTelemetry SDK, real tokenizer,
no mocks) lets the benchmark run exactly what CI runs, only bigger.
"""

from __future__ import annotations

import json
import random
import resource
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

EDIT_EVENT = "text.edited"
MODEL = "qwen"

# Words of several scripts, so windows cross multi-byte characters and CJK/emoji merges.
WORDS = (
    "the agent reads a file and writes its answer quickly while the tool returns data about weather "
    "prices tokens tables function value result error retry total count zero alpha beta gamma delta "
    "wonderful extraordinary understanding implementation configuration everything something "
    'naïve café résumé über Zürich façade 日本語 中文 東京 😀 🚀 ✓ 42 3.14 1e9 x=1; {"k": [1, 2]} '
    "<tool_call> </tool_call> <think> </think>"
).split()
NEW_WORDS = "edited fixed corrected replaced improved Ärger 変更 🙂 done OK — new-value".split()


# --- expectations: what the workload did --------------------------------------------------------------
@dataclass
class Expect:
    """One LLM span as the simulated agent produced it, and what a correct result must look like."""

    trace_id: int
    span_id: int
    original_ids: Any  # array('i') of the sampled ids
    original_text: str
    final_text: str
    #: char ranges of the original text that no edit touched (tokens inside must survive)
    keep: list[tuple[int, int]]
    #: (start, end) char offsets of each original token, flattened ((-1, -1) for special tokens)
    offsets: Any
    edits: int = 0
    #: for a token-level edit: exactly the ids the agent gave
    expected_ids: list[int] | None = None
    #: False when the workload made correction impossible to promise (edit after an early root end,
    #: edit from a later trace after a grace period): the span must still leave exactly once.
    must_correct: bool = True


@dataclass
class Ledger:
    """Thread-safe record of every span the workload ended and every LLM span's expectation."""

    ended: list[tuple[int, int]] = field(default_factory=list)
    llm: dict[int, Expect] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_ended(self, span: Any) -> None:
        ctx = span.get_span_context()
        with self.lock:
            self.ended.append((ctx.trace_id, ctx.span_id))

    def add_llm(self, exp: Expect) -> None:
        with self.lock:
            self.llm[exp.span_id] = exp


# --- text model --------------------------------------------------------------------------------------
@dataclass
class Doc:
    """A response as words (original index or None for inserted words), so edits have known regions."""

    words: list[tuple[int | None, str]]
    touched: set[int] = field(default_factory=set)

    @property
    def text(self) -> str:
        return " ".join(w for _, w in self.words)

    def edit(self, rng: random.Random) -> None:
        """Replace, delete or insert one word (never on an already touched original word)."""
        candidates = [k for k, (i, _) in enumerate(self.words) if i is not None and i not in self.touched]
        if not candidates:
            self.words.append((None, rng.choice(NEW_WORDS)))
            return
        k = rng.choice(candidates)
        i = self.words[k][0]
        op = rng.random()
        if op < 0.6:
            self.words[k] = (None, rng.choice(NEW_WORDS))
            self.touched.add(i)
        elif op < 0.8 and len(self.words) > 1:
            del self.words[k]
            self.touched.add(i)
        else:
            self.words.insert(k, (None, rng.choice(NEW_WORDS)))
            self.touched.update({i, i - 1})


def keep_regions(original_words: Sequence[str], touched: set[int]) -> list[tuple[int, int]]:
    """Char ranges of maximal runs of untouched original words in ``" ".join(original_words)``."""
    regions: list[tuple[int, int]] = []
    pos = 0
    run_start: int | None = None
    run_end = 0
    for i, w in enumerate(original_words):
        start, end = pos, pos + len(w)
        pos = end + 1
        if i in touched:
            if run_start is not None:
                regions.append((run_start, run_end))
                run_start = None
            continue
        if run_start is None:
            run_start = start
        run_end = end
    if run_start is not None:
        regions.append((run_start, run_end))
    return regions


class Sampler:
    """Turns text into 'sampled' ids with a real tokenizer: canonical, plus (optionally) some tokens
    split into two valid pieces, the non-canonical sampling real models do (REFERENCE.md section 3)."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._lock = threading.Lock()

    def sample(self, text: str, rng: random.Random, split_rate: float) -> tuple[list[int], list]:
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = []
        offsets: list[tuple[int, int] | None] = []
        pieces = self.tok.convert_ids_to_tokens(enc["input_ids"])
        for tid, piece, (a, b) in zip(enc["input_ids"], pieces, enc["offset_mapping"], strict=True):
            if split_rate and rng.random() < split_rate and len(piece) >= 3 and piece.isascii():
                body = piece[1:] if piece.startswith("Ġ") else piece
                if body.isalpha() and len(piece) == b - a:
                    k = rng.randrange(1, len(piece))
                    left, right = piece[:k], piece[k:]
                    if left in self.vocab and right in self.vocab:
                        ids += [self.vocab[left], self.vocab[right]]
                        offsets += [(a, a + k), (a + k, b)]
                        continue
            ids.append(tid)
            offsets.append((a, b))
        ids.append(self.eos)
        offsets.append(None)
        return ids, offsets


# --- the simulated agent --------------------------------------------------------------------------------
@dataclass
class Workload:
    """Knobs of the simulated agents (probabilities per trace or per LLM call)."""

    threads: int = 16
    spans: int = 20_000  # total spans to produce (approximately; whole traces)
    seed: int = 7
    p_edit: float = 0.6
    p_chain: float = 0.3  # an edited response gets a second (and maybe third) edit
    p_token_edit: float = 0.1  # an edit given as token ids instead of text
    p_explicit_target: float = 0.4
    p_reward: float = 0.5
    p_tool: float = 0.5
    p_nested_llm: float = 0.15  # an LLM call inside a tool span
    p_early_root: float = 0.1  # the root ends before its last step
    p_llm_root: float = 0.05  # a bare LLM root span, edited from the next trace
    split_rate: float = 0.08
    words: tuple[int, int] = (8, 60)


_KEY_STYLES = ("tokenfix", "agl", "vllm", "genai")


def _llm_attributes(style: str, prompt: list[int], ids: list[int], text: str, response_id: str) -> dict:
    attrs: dict[str, Any] = {"gen_ai.request.model": MODEL, "gen_ai.response.id": response_id}
    if style == "tokenfix":
        attrs["tokenfix.prompt.token_ids"] = prompt
        attrs["tokenfix.response.token_ids"] = ids
        attrs["gen_ai.completion.0.content"] = text
    elif style == "agl":
        attrs["prompt_token_ids"] = prompt
        attrs["response_token_ids"] = ids
        attrs["gen_ai.completion.0.content"] = text
    elif style == "vllm":
        attrs["llm.hosted_vllm.prompt_token_ids"] = repr(prompt)
        attrs["llm.hosted_vllm.response_token_ids"] = repr([ids])
        attrs["gen_ai.completion.0.content"] = text
    else:
        attrs["tokenfix.prompt.token_ids"] = prompt
        attrs["tokenfix.response.token_ids"] = ids
        attrs["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}]
        )
    return attrs


class Agent:
    """One simulated agent thread: produces traces with nested spans, LLM calls, edits and rewards."""

    def __init__(self, tracer: Any, sampler: Sampler, ledger: Ledger, cfg: Workload, rng: random.Random):
        self.tracer, self.sampler, self.ledger, self.cfg, self.rng = tracer, sampler, ledger, cfg, rng
        self.spans = 0
        self._pending_root_edit: tuple[int, Doc, int] | None = None  # (span id, doc, edits) of a bare LLM root

    def _start(self, name: str, parent: Any = None, attributes: dict | None = None) -> Any:
        ctx = otel_trace.set_span_in_context(parent) if parent is not None else otel_context.Context()
        return self.tracer.start_span(name, context=ctx, attributes=attributes)

    def _end(self, span: Any) -> None:
        span.end()
        self.ledger.add_ended(span)
        self.spans += 1

    def _llm(self, parent: Any, must_correct: bool) -> tuple[Any, Doc, Expect]:
        rng = self.rng
        words = [rng.choice(WORDS) for _ in range(rng.randint(*self.cfg.words))]
        doc = Doc([(i, w) for i, w in enumerate(words)])
        text = doc.text
        ids, offsets = self.sampler.sample(text, rng, self.cfg.split_rate)
        prompt = [rng.randrange(0, 150000) for _ in range(rng.randint(4, 24))]
        style = rng.choice(_KEY_STYLES)
        span = self._start(
            "chat " + MODEL, parent, _llm_attributes(style, prompt, ids, text, f"resp-{rng.getrandbits(64):x}")
        )
        self._end(span)
        flat = array("i", [x for off in offsets for x in (off if off is not None else (-1, -1))])
        exp = Expect(
            span.get_span_context().trace_id,
            span.get_span_context().span_id,
            array("i", ids),
            text,
            text,
            [],
            flat,
            must_correct=must_correct,
        )
        self.ledger.add_llm(exp)
        return span, doc, exp

    def _edit(self, carrier: Any, llm: Any, doc: Doc, exp: Expect, original_words: list[str]) -> None:
        """Apply 1..3 chained text edits (or one token-level edit), each as a ``text.edited`` event."""
        rng = self.rng
        sid = format(llm.get_span_context().span_id, "016x")
        token_edit = rng.random() < self.cfg.p_token_edit
        n = 1
        while not token_edit and n < 3 and rng.random() < self.cfg.p_chain:
            n += 1
        for _ in range(n):
            doc.edit(rng)
            attrs: dict[str, Any] = {}
            if token_edit:
                # the agent hands back ids it tokenized itself (+ the trailing EOS): these are the answer
                exp.expected_ids = self.sampler.tok.encode(doc.text, add_special_tokens=False) + [self.sampler.eos]
                attrs["tokenfix.edit.token_ids"] = exp.expected_ids
            else:
                attrs["tokenfix.edit.text"] = doc.text
            if rng.random() < self.cfg.p_explicit_target:
                attrs["tokenfix.edit.target.span_id"] = sid
            carrier.add_event(EDIT_EVENT, attributes=attrs)
        exp.final_text = doc.text
        exp.edits += n
        exp.keep = keep_regions(original_words, doc.touched)

    def trace(self) -> None:
        rng, cfg = self.rng, self.cfg
        root = self._start("agent.run", None, {"agentlightning.rollout_id": f"ro-{rng.getrandbits(32):x}"})
        if self._pending_root_edit is not None:  # edit a bare LLM root from the previous trace
            sid, doc, words = self._pending_root_edit
            self._pending_root_edit = None
            exp = self.ledger.llm[sid]
            doc.edit(rng)
            root.add_event(
                EDIT_EVENT,
                attributes={"tokenfix.edit.text": doc.text, "tokenfix.edit.target.span_id": format(sid, "016x")},
            )
            exp.final_text, exp.edits, exp.keep = doc.text, exp.edits + 1, keep_regions(words, doc.touched)
        steps = rng.randint(1, 4)
        early = rng.random() < cfg.p_early_root
        for s in range(steps):
            last = s == steps - 1
            step = self._start("agent.step", root, {"step": s})
            if early and last:
                self._end(root)  # the root ends while its last step still runs
            if rng.random() < cfg.p_tool:
                tool = self._start("tool.call", step, {"tool.name": "search"})
                if rng.random() < cfg.p_nested_llm:
                    self._call(tool, tool, not (early and last))
                self._end(tool)
            self._call(step, step, not (early and last))
            self._end(step)
        if not early:
            self._end(root)
        if rng.random() < cfg.p_llm_root:
            span, doc, exp = self._llm(None, must_correct=False)
            self._pending_root_edit = (exp.span_id, doc, [w for _, w in doc.words])

    def _call(self, parent: Any, carrier: Any, must_correct: bool) -> None:
        llm, doc, exp = self._llm(parent, must_correct)
        words = [w for _, w in doc.words]
        if self.rng.random() < self.cfg.p_edit:
            self._edit(carrier, llm, doc, exp, words)
        else:
            exp.keep = keep_regions(words, set())
        if self.rng.random() < self.cfg.p_reward:
            ann = self._start(
                "agentlightning.annotation",
                parent,
                {
                    "agentlightning.reward.0.name": "primary",
                    "agentlightning.reward.0.value": round(self.rng.random(), 3),
                },
            )
            self._end(ann)

    def run(self, budget: int) -> None:
        while self.spans < budget:
            self.trace()
        if self._pending_root_edit is not None:  # leave no edit promised but unsent
            self.trace()


def run_agents(tracer_provider: Any, sampler: Sampler, cfg: Workload, ledger: Ledger | None = None) -> Ledger:
    """Run ``cfg.threads`` agents in parallel until about ``cfg.spans`` spans have ended."""
    ledger = ledger or Ledger()
    tracer = tracer_provider.get_tracer("reliability.soak")
    per_thread = max(1, cfg.spans // cfg.threads)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            Agent(tracer, sampler, ledger, cfg, random.Random(cfg.seed * 1000 + i)).run(per_thread)
        except BaseException as exc:  # surfaced to the caller: the host application saw an exception
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"agent-{i}") for i in range(cfg.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return ledger


# --- downstream: flaky, counting --------------------------------------------------------------------------
_KEPT_KEYS = ("tokenfix.status", "tokenfix.method", "tokenfix.error", "tokenfix.edit.count")


def _project(attrs: Any) -> dict[str, Any]:
    """What the checks read of an output span, stored compactly (a 200k-span soak keeps them all)."""
    out = {k: attrs[k] for k in _KEPT_KEYS if k in attrs}
    ids = attrs.get("tokenfix.response.token_ids")
    if isinstance(ids, (list, tuple)) and all(isinstance(i, int) and 0 <= i < 2**31 for i in ids):
        out["tokenfix.response.token_ids"] = array("i", ids)
    elif ids is not None:
        out["tokenfix.response.token_ids"] = ids
    return out


class FlakyCountingProcessor(SpanProcessor):
    """The downstream the TokenFix processor wraps. Records every span it is handed (before misbehaving),
    then with small probabilities raises or stalls, like a real exporter on a bad network."""

    def __init__(
        self,
        *,
        p_raise: float = 0.01,
        p_stall: float = 0.002,
        stall_s: float = 0.01,
        seed: int = 1,
        keep: Callable[[ReadableSpan], bool] | None = None,
    ):
        self.p_raise, self.p_stall, self.stall_s = p_raise, p_stall, stall_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.received: Counter[tuple[int, int]] = Counter()
        self.spans: dict[int, dict[str, Any]] = {}  # span id -> attributes (only spans ``keep`` wants)
        self.keep = keep or (lambda s: any(k.startswith("tokenfix.") for k in (s.attributes or {})))
        self.raised = 0
        self.stalled = 0
        self.shutdown_called = False

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        with self.lock:
            self.received[(ctx.trace_id, ctx.span_id)] += 1
            if self.keep(span):
                self.spans[ctx.span_id] = _project(span.attributes or {})
            roll = self.rng.random()
        if roll < self.p_raise:
            with self.lock:
                self.raised += 1
            raise RuntimeError("downstream exporter failed (simulated)")
        if roll < self.p_raise + self.p_stall:
            with self.lock:
                self.stalled += 1
            time.sleep(self.stall_s)

    def shutdown(self) -> None:
        self.shutdown_called = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class FlakyExporter(SpanExporter):
    """A SpanExporter that records every span and then randomly fails or stalls."""

    def __init__(self, *, p_fail: float = 0.05, p_stall: float = 0.02, stall_s: float = 0.02, seed: int = 2):
        self.p_fail, self.p_stall, self.stall_s = p_fail, p_stall, stall_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.received: Counter[tuple[int, int]] = Counter()
        self.failures = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            for s in spans:
                ctx = s.get_span_context()
                self.received[(ctx.trace_id, ctx.span_id)] += 1
            roll = self.rng.random()
        if roll < self.p_fail:
            with self.lock:
                self.failures += 1
            if roll < self.p_fail / 2:
                raise RuntimeError("export failed (simulated)")
            return SpanExportResult.FAILURE
        if roll < self.p_fail + self.p_stall:
            time.sleep(self.stall_s)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


# --- accounting and checks ----------------------------------------------------------------------------------
@dataclass
class Accounting:
    sent: int
    received: int
    missing: list[tuple[int, int]]
    duplicated: list[tuple[int, int]]
    unexpected: list[tuple[int, int]]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)


def account(sent: Sequence[tuple[int, int]], received: Counter) -> Accounting:
    """Span-id accounting: each sent span must be received exactly once, and nothing else."""
    sent_set = set(sent)
    return Accounting(
        sent=len(sent),
        received=sum(received.values()),
        missing=sorted(sent_set - set(received)),
        duplicated=sorted(k for k, n in received.items() if n > 1),
        unexpected=sorted(set(received) - sent_set),
    )


def _runs_in_order(haystack: Sequence[int], runs: Sequence[Sequence[int]]) -> bool:
    """Each run appears contiguously in ``haystack``, in the given order, without overlapping."""
    pos = 0
    for run in runs:
        if not run:
            continue
        n = len(run)
        first = run[0]
        while True:
            try:
                pos = haystack.index(first, pos)
            except ValueError:
                return False
            if list(haystack[pos : pos + n]) == list(run):
                pos += n
                break
            pos += 1
    return True


def protected_runs(exp: Expect, margin: int = 3) -> list[list[int]]:
    """Original tokens that must survive: those inside an untouched region, ``margin`` tokens away from
    its edges (the engine may re-encode 1-2 anchor tokens on each side of a change)."""
    runs = []
    offs = exp.offsets
    pairs = (
        [(offs[i], offs[i + 1]) for i in range(0, len(offs), 2)]
        if isinstance(offs, array)
        else [off if off is not None else (-1, -1) for off in offs]
    )
    for a, b in exp.keep:
        idx = [i for i, (x, y) in enumerate(pairs) if x >= 0 and x >= a and y <= b]
        if not idx:
            continue
        # split on gaps (cannot happen for contiguous offsets, but stay safe)
        lo, hi = idx[0] + margin, idx[-1] + 1 - margin
        if hi > lo:
            runs.append(exp.original_ids[lo:hi])
    return runs


@dataclass
class CheckResult:
    checked: int = 0
    text_mismatch: list[int] = field(default_factory=list)
    lost_tokens: list[int] = field(default_factory=list)
    eos_moved: list[int] = field(default_factory=list)
    not_corrected: list[int] = field(default_factory=list)  # edited, must_correct, but status != corrected
    statuses: Counter = field(default_factory=Counter)
    methods: Counter = field(default_factory=Counter)

    @property
    def wrong(self) -> int:
        return len(self.text_mismatch) + len(self.lost_tokens) + len(self.eos_moved)


def as_ids(value: Any) -> list[int] | None:
    if isinstance(value, (list, tuple, array)):
        return [int(x) for x in value]
    return None


def differential_check(tokenizer: Any, expects: dict[int, Expect], out: dict[int, dict[str, Any]]) -> CheckResult:
    """The 'never wrong' check on every LLM span that came out: decode(corrected ids) equals the final
    edited text, every protected original token is still there in order, the trailing EOS stays last."""
    res = CheckResult()
    for sid, exp in expects.items():
        attrs = out.get(sid)
        if attrs is None:
            continue  # accounting reports it
        status = attrs.get("tokenfix.status", "<none>")
        res.statuses[status] += 1
        res.methods[attrs.get("tokenfix.method", "<none>")] += 1
        if exp.edits and exp.must_correct and status != "corrected":
            res.not_corrected.append(sid)
        if status not in ("corrected", "unchanged"):
            continue
        ids = as_ids(attrs.get("tokenfix.response.token_ids"))
        if status == "unchanged" and ids is None:
            ids = list(exp.original_ids)
        if ids is None:
            res.text_mismatch.append(sid)
            continue
        res.checked += 1
        expected = exp.final_text if status == "corrected" else exp.original_text
        if tokenizer.decode(ids, skip_special_tokens=True) != expected:
            res.text_mismatch.append(sid)
        if not ids or ids[-1] != exp.original_ids[-1]:
            res.eos_moved.append(sid)
        if status == "corrected" and exp.expected_ids is not None:
            if list(ids) != list(exp.expected_ids):
                res.lost_tokens.append(sid)
        elif not _runs_in_order(ids, protected_runs(exp)):
            res.lost_tokens.append(sid)
    return res


# --- memory --------------------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak from getrusage)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the processor soak (shared by tests/reliability/test_soak.py and bench/soak.py) ------------------------
@dataclass
class SoakReport:
    """Figures of one soak run (what docs/reliability.md tabulates)."""

    spans_in: int
    spans_out: int
    llm_spans: int
    edited: int
    accounting: Accounting
    check: CheckResult
    downstream_raised: int
    downstream_stalled: int
    host_exceptions: int
    processor_counters: dict[str, Any]
    seconds: float
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    threads: int = 16

    def rows(self) -> list[tuple[str, str]]:
        c, a = self.check, self.accounting
        return [
            (f"spans in (ended by {self.threads} agent threads)", f"{self.spans_in}"),
            ("spans out (received downstream)", f"{self.spans_out}"),
            (
                "missing / duplicated / unexpected span ids",
                f"{len(a.missing)} / {len(a.duplicated)} / {len(a.unexpected)}",
            ),
            ("LLM spans / edited", f"{self.llm_spans} / {self.edited}"),
            ("differential check: spans checked", f"{c.checked}"),
            ("  decode != final text", f"{len(c.text_mismatch)}"),
            ("  protected sampled tokens lost", f"{len(c.lost_tokens)}"),
            ("  trailing EOS moved", f"{len(c.eos_moved)}"),
            ("  edited but not corrected (must_correct)", f"{len(c.not_corrected)}"),
            ("statuses", ", ".join(f"{k}={v}" for k, v in sorted(c.statuses.items()))),
            ("methods", ", ".join(f"{k}={v}" for k, v in sorted(c.methods.items()))),
            ("downstream raised / stalled (injected)", f"{self.downstream_raised} / {self.downstream_stalled}"),
            ("exceptions into the host application", f"{self.host_exceptions}"),
            ("processor counters", ", ".join(f"{k}={v}" for k, v in sorted(self.processor_counters.items()))),
            ("wall time", f"{self.seconds:.1f} s"),
            ("RSS start / end / peak", f"{self.rss_start_mb:.0f} / {self.rss_end_mb:.0f} / {self.rss_peak_mb:.0f} MiB"),
        ]


def processor_counters(proc: Any) -> dict[str, Any]:
    """Whatever counters the processor exposes (a ``counters``/``stats`` mapping or dataclass)."""
    for name in ("counters", "stats"):
        value = getattr(proc, name, None)
        if callable(value):
            value = value()
        if value is None:
            continue
        if isinstance(value, dict):
            return dict(value)
        if hasattr(value, "__dataclass_fields__"):
            return {k: getattr(value, k) for k in value.__dataclass_fields__}
        if hasattr(value, "__dict__"):
            return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    return {}


def run_processor_soak(
    tokenizer: Any,
    cfg: Workload,
    *,
    processor_kwargs: dict | None = None,
    p_raise: float = 0.01,
    p_stall: float = 0.002,
) -> SoakReport:
    """Simulated agents -> TracerProvider -> TokenFixSpanProcessor -> flaky counting downstream."""
    from opentelemetry.sdk.trace import TracerProvider

    from otel_tokenfix import TokenFixSpanProcessor

    rss0 = rss_mb()
    down = FlakyCountingProcessor(p_raise=p_raise, p_stall=p_stall, seed=cfg.seed)
    kwargs = {"mark_unchanged": True, **(processor_kwargs or {})}
    proc = TokenFixSpanProcessor(down, tokenizers={MODEL: tokenizer}, **kwargs)
    tp = TracerProvider()
    tp.add_span_processor(proc)
    sampler = Sampler(tokenizer)
    t0 = time.monotonic()
    host_exceptions = 0
    try:
        ledger = run_agents(tp, sampler, cfg)
    except Exception:  # counted, then re-raised by the test's assertions on the count
        host_exceptions += 1
        ledger = Ledger()
    tp.shutdown()
    seconds = time.monotonic() - t0
    acc = account(ledger.ended, down.received)
    check = differential_check(tokenizer, ledger.llm, down.spans)
    return SoakReport(
        spans_in=len(ledger.ended),
        spans_out=acc.received,
        llm_spans=len(ledger.llm),
        edited=sum(1 for e in ledger.llm.values() if e.edits),
        accounting=acc,
        check=check,
        downstream_raised=down.raised,
        downstream_stalled=down.stalled,
        host_exceptions=host_exceptions,
        processor_counters=processor_counters(proc),
        seconds=seconds,
        rss_start_mb=rss0,
        rss_end_mb=rss_mb(),
        rss_peak_mb=peak_rss_mb(),
        threads=cfg.threads,
    )


def format_table(rows: Sequence[tuple[str, str]], title: str = "") -> str:
    """A Markdown table (docs/reliability.md and the bench printout use the same text)."""
    out = [f"**{title}**", ""] if title else []
    out += ["| figure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(out)


# --- bounded memory: a flood of traces whose roots never end ------------------------------------------------
def run_flood(
    tokenizer: Any,
    *,
    traces: int = 20_000,
    response_tokens: int = 300,
    max_spans: int = 1024,
    max_traces: int = 256,
    edit_spans: int = 0,
    edit_chars: int = 20_000,
) -> tuple[list[tuple[str, str]], bool]:
    """Each trace: a root that is started and never ended, one ended LLM span (``response_tokens`` ids)
    and ``edit_spans`` ended child spans carrying an edit. Returns (figures, ok): the processor's held
    spans stay within its bound, RSS growth stays far below what holding everything would take, and
    after shutdown every ended span has left exactly once (released early, marked, never dropped)."""
    import gc

    from opentelemetry.sdk.trace import TracerProvider

    from otel_tokenfix import TokenFixSpanProcessor

    down = FlakyCountingProcessor(p_raise=0, p_stall=0, keep=lambda s: False)
    proc = TokenFixSpanProcessor(
        down, tokenizers={MODEL: tokenizer}, max_spans=max_spans, max_traces=max_traces, hold_timeout=3600.0
    )
    tp = TracerProvider()
    tp.add_span_processor(proc)
    tracer = tp.get_tracer("reliability.flood")
    rng = random.Random(5)
    base_ids = [rng.randrange(1000, 150000) for _ in range(response_tokens)]
    base_text = tokenizer.decode(base_ids)
    ids, text = base_ids, base_text
    edit_text = (base_text * (edit_chars // max(1, len(base_text)) + 1))[:edit_chars]
    ended: list[tuple[int, int]] = []
    gc.collect()
    rss0 = rss_mb()
    peak = rss0
    for i in range(traces):
        root = tracer.start_span("agent.run")  # never ended: the agent crashed or hangs
        ctx = otel_trace.set_span_in_context(root)
        # fresh objects per span (as a real agent's would be), so holding them costs real memory
        ids = [x ^ (i & 7) for x in base_ids]
        text = f"{i} {base_text}"
        llm = tracer.start_span(
            "chat",
            context=ctx,
            attributes={
                "gen_ai.request.model": MODEL,
                "tokenfix.response.token_ids": ids,
                "tokenfix.prompt.token_ids": ids[:8],
                "gen_ai.completion.0.content": text,
            },
        )
        llm.end()
        ended.append((llm.get_span_context().trace_id, llm.get_span_context().span_id))
        for j in range(edit_spans):
            s = tracer.start_span("agent.step", context=ctx)
            # targets a span that never comes: cheap for the corrector, but the carrier must be remembered
            s.add_event(
                EDIT_EVENT,
                {"tokenfix.edit.text": f"{j} {edit_text}", "tokenfix.edit.target.span_id": "00000000deadbeef"},
            )
            s.end()
            ended.append((s.get_span_context().trace_id, s.get_span_context().span_id))
            if j % 1000 == 999:
                peak = max(peak, rss_mb())
        del root, ctx, llm
        if i % 1000 == 0:
            peak = max(peak, rss_mb())
    peak = max(peak, rss_mb())
    held_before_shutdown = sum(down.received.values())
    tp.shutdown()
    acc = account(ended, down.received)
    # what holding every LLM span would have cost (attribute tuples of python ints; lower bound)
    per_span_mb = (response_tokens * 2 * 8 + response_tokens * 28 + len(text) * 2) / 2**20
    unbounded_mb = per_span_mb * traces + edit_spans * traces * edit_chars / 2**20
    bounded_mb = per_span_mb * max_spans
    growth = peak - rss0
    ok = acc.exact and growth < max(64.0, 4 * bounded_mb) and growth < unbounded_mb / 3
    rows = [
        ("traces flooded (roots never end)", f"{traces}"),
        ("spans ended / left the processor", f"{acc.sent} / {acc.received}"),
        ("missing / duplicated", f"{len(acc.missing)} / {len(acc.duplicated)}"),
        ("released early while flooding (bounds)", f"{held_before_shutdown}"),
        ("bound (max_spans / max_traces)", f"{max_spans} / {max_traces}"),
        ("RSS growth (peak - start)", f"{growth:.0f} MiB"),
        ("holding everything would need at least", f"{unbounded_mb:.0f} MiB"),
        ("processor counters", ", ".join(f"{k}={v}" for k, v in sorted(processor_counters(proc).items()))),
    ]
    return rows, ok


# --- the triplet exporter soak ------------------------------------------------------------------------------
class FlakySink:
    """A triplet sink (``TripletSink`` protocol) that randomly fails a write, like a network store; a
    failed write delivers nothing (all or nothing per call), so a retry must not duplicate."""

    def __init__(self, *, p_fail: float = 0.05, seed: int = 3):
        self.rng = random.Random(seed)
        self.p_fail = p_fail
        self.lock = threading.Lock()
        self.records: list[Any] = []
        self.failures = 0

    def write(self, records: Sequence[Any]) -> None:
        with self.lock:
            if self.rng.random() < self.p_fail:
                self.failures += 1
                raise OSError("triplet store unavailable (simulated)")
            self.records.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def run_exporter_soak(
    tokenizer: Any, cfg: Workload, *, behind_processor: bool, p_fail: float = 0.05, sink: Any = None
) -> tuple[list[tuple[str, str]], bool, dict]:
    """Simulated agents -> [TokenFixSpanProcessor ->] SimpleSpanProcessor -> TripletExporter -> a
    flaky sink. Every LLM span must give exactly one triplet that passes the differential check."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otel_tokenfix import TokenFixSpanProcessor, TripletExporter

    sink = sink if sink is not None else FlakySink(p_fail=p_fail, seed=cfg.seed)
    exporter = TripletExporter(sink, tokenizers={MODEL: tokenizer}, root_grace=0.5)
    inner = SimpleSpanProcessor(exporter)
    tp = TracerProvider()
    tp.add_span_processor(TokenFixSpanProcessor(inner, tokenizers={MODEL: tokenizer}) if behind_processor else inner)
    t0 = time.monotonic()
    ledger = run_agents(tp, Sampler(tokenizer), cfg)
    tp.shutdown()
    seconds = time.monotonic() - t0
    records = [r if isinstance(r, dict) else r.to_dict() for r in getattr(sink, "records", [])]
    got = Counter((r["trace_id"], r["span_id"]) for r in records)
    want = {(format(e.trace_id, "032x"), format(e.span_id, "016x")) for e in ledger.llm.values()}
    missing, dups, unexpected = want - set(got), [k for k, n in got.items() if n > 1], set(got) - want
    out = {}
    for r in records:
        meta = r.get("metadata") or {}
        out[int(r["span_id"], 16)] = {
            "tokenfix.status": meta.get("status"),
            "tokenfix.method": meta.get("method"),
            "tokenfix.response.token_ids": r["response"]["token_ids"],
        }
    check = differential_check(tokenizer, ledger.llm, out)
    stats = asdict_safe(exporter.stats)
    ok = not missing and not dups and not unexpected and check.wrong == 0 and not check.not_corrected
    where = "behind TokenFixSpanProcessor" if behind_processor else "alone (applies edits itself)"
    rows = [
        (f"TripletExporter {where}: spans in", f"{len(ledger.ended)}"),
        ("LLM spans / triplets written", f"{len(ledger.llm)} / {sum(got.values())}"),
        ("missing / duplicated / unexpected triplets", f"{len(missing)} / {len(dups)} / {len(unexpected)}"),
        ("sink failures injected (retried)", f"{getattr(sink, 'failures', 0)}"),
        (
            "differential check: checked / wrong / not corrected",
            f"{check.checked} / {check.wrong} / {len(check.not_corrected)}",
        ),
        ("statuses", ", ".join(f"{k}={v}" for k, v in sorted(check.statuses.items()))),
        ("wall time", f"{seconds:.1f} s"),
    ]
    return rows, ok, stats


def asdict_safe(obj: Any) -> dict:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    return dict(obj) if isinstance(obj, dict) else {}


class CallableFlaky:
    """A per-record callable sink (what users pass as ``TripletExporter(fn)``) that sometimes raises."""

    def __init__(self, *, p_fail: float = 0.05, seed: int = 4):
        self.rng = random.Random(seed)
        self.p_fail = p_fail
        self.records: list[Any] = []
        self.failures = 0
        self.lock = threading.Lock()

    def __call__(self, record: Any) -> None:
        with self.lock:
            if self.rng.random() < self.p_fail:
                self.failures += 1
                raise OSError("store unavailable (simulated)")
            self.records.append(record)
