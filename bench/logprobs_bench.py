"""Benchmark: reading a 1k-token ``logprobs.content`` string, today's general path (orjson, then each
entry's ``logprob``) vs the msgspec fast path, measured in the same run, interleaved, median of repeats.

Shapes (1,000 entries each, tokens and bytes from the real Qwen vocabulary):
- ``bench``: ``{"token": "", "logprob": x}``, the entries of ``serve_bench`` (b);
- ``openai k=1`` / ``k=5``: OpenAI/vLLM entries ``{"token", "logprob", "bytes", "top_logprobs"}`` with k
  alternatives, each with its own token, logprob and bytes;
- ``choices (JSON)``: ``[{"index", "token_ids", "logprobs": {"content": [k=1 entries]}}]``, a shape the fast
  path does not answer: what its failed attempt costs before the general path reads it.
Both paths' answers are checked equal (bit for bit) before timing.

Run: ``.venv/bin/python -m bench.logprobs_bench [--repeats 15]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

N_TOKENS = 1000


def _docs() -> dict[str, str]:
    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer

    tok = qwen_tokenizer()
    rng = random.Random(7)
    vocab = [t for t in (tok.decode([i]) for i in range(0, 150_000, 37)) if t]

    def alt() -> dict:
        token = rng.choice(vocab)
        return {"token": token, "logprob": -rng.random() * 12, "bytes": list(token.encode())}

    def entry(k: int) -> dict:
        return {**alt(), "top_logprobs": [alt() for _ in range(k)]}

    bench = [{"token": "", "logprob": round(-0.01 * (i % 50) - 1e-6 * i, 6)} for i in range(N_TOKENS)]
    oai1 = [entry(1) for _ in range(N_TOKENS)]
    choices = [{"index": 0, "token_ids": [rng.randrange(150_000) for _ in range(N_TOKENS)],
                "logprobs": {"content": oai1}, "finish_reason": "length"}]
    return {
        "bench": json.dumps(bench),
        "openai k=1": json.dumps(oai1),
        "openai k=5": json.dumps([entry(5) for _ in range(N_TOKENS)]),
        "openai k=1, {content}": json.dumps({"content": oai1, "refusal": None}),
        "choices (JSON)": json.dumps(choices),
    }


def _per_call_ms(fn, text: str, loops: int) -> float:
    t0 = time.perf_counter()
    for _ in range(loops):
        fn(text)
    return (time.perf_counter() - t0) / loops * 1e3


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)

    from otel_tokenfix.trace import conventions as cv

    conv = cv.DEFAULT_CONVENTIONS
    decoder = cv._LOGPROBS_DECODER
    if decoder is None:
        print("msgspec is not installed: only the general path runs")

    def new(text: str):
        return cv._logprobs_from(text, conv)

    def old(text: str):
        cv._LOGPROBS_DECODER = None
        try:
            return cv._logprobs_from(text, conv)
        finally:
            cv._LOGPROBS_DECODER = decoder

    print(f"{'shape (1k entries)':24} {'chars':>8} {'old ms':>8} {'new ms':>8} {'old/new':>8}  answered by")
    for name, text in _docs().items():
        want = old(text)
        assert repr(new(text)) == repr(want), name
        fast = decoder is not None and cv._logprobs_msgspec(text) is not None
        loops = max(3, int(2e5 // len(text)))
        olds, news = [], []
        for _ in range(args.repeats):  # interleaved: both see the same machine
            olds.append(_per_call_ms(old, text, loops))
            news.append(_per_call_ms(new, text, loops))
        o, n = statistics.median(olds), statistics.median(news)
        print(f"{name:24} {len(text):8,} {o:8.3f} {n:8.3f} {o / n:7.2f}x  {'msgspec' if fast else 'general'}")
    print(f"median of {args.repeats} repeats; old: msgspec off (orjson + each entry's logprob), new: as shipped")


if __name__ == "__main__":
    main()
