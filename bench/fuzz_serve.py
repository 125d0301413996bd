"""Long fuzz run against a real ``otel-tokenfix serve``: ``.venv/bin/python -m bench.fuzz_serve [--examples N]``.

The test suite sends ~260 hostile OTLP payloads (protobuf, JSON, gRPC); this sends many more with the same
hypothesis strategies (``tests/reliability/hostile.py``) and prints a table: answers by status, rejections
counted by the service, internal errors, whether the process survived and stopped cleanly, and that no
input was evaluated (canary file). Exit code 0 only if every answer was a 2xx/4xx with a reason.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples per kind (protobuf, JSON, gRPC)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import grpc
    import httpx
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    from otel_tokenfix.tokenizers.builtin import qwen_tokenizer
    from tests.reliability import hostile
    from tests.reliability.harness import format_table
    from tests.reliability.service_harness import start_serve

    token = "fuzz-token"
    auth = {"authorization": f"Bearer {token}"}
    tmp = Path(tempfile.mkdtemp(prefix="tokenfix-fuzz-"))
    qwen_tokenizer().save_pretrained(tmp / "tok")
    serve = start_serve(tmp / "t.jsonl", tmp / "tok", "--token", token, "--root-grace", "0.1", grpc="127.0.0.1:0")
    answers: Counter[str] = Counter()
    bad: list[str] = []
    if os.path.exists(hostile.CANARY):
        os.remove(hostile.CANARY)
    common = settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    t0 = time.monotonic()

    @seed(args.seed)
    @common
    @given(body=hostile.otlp_body)
    def protobuf(body: bytes) -> None:
        r = httpx.post(
            f"{serve.http}/v1/traces",
            content=body,
            timeout=60,
            headers={"content-type": "application/x-protobuf", **auth},
        )
        answers[f"http/protobuf {r.status_code}"] += 1
        if r.status_code not in (200, 400, 413):
            bad.append(f"protobuf {r.status_code}: {r.text[:200]}")

    @seed(args.seed)
    @common
    @given(body=hostile.otlp_json_body, gz=st.booleans())
    def as_json(body: bytes, gz: bool) -> None:
        headers = {"content-type": "application/json", **auth}
        if gz:
            body, headers = gzip.compress(body), {**headers, "content-encoding": "gzip"}
        r = httpx.post(f"{serve.http}/v1/traces", content=body, headers=headers, timeout=60)
        answers[f"http/json {r.status_code}"] += 1
        if r.status_code not in (200, 400, 413) or (r.status_code != 200 and not r.json().get("message")):
            bad.append(f"json {r.status_code}: {r.text[:200]}")

    @seed(args.seed)
    @common
    @given(body=hostile.otlp_body)
    def over_grpc(body: bytes) -> None:
        with grpc.insecure_channel(serve.grpc) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            try:
                export(body, timeout=60, metadata=(("authorization", f"Bearer {token}"),))
                answers["grpc OK"] += 1
            except grpc.RpcError as err:
                answers[f"grpc {err.code().name}"] += 1
                if err.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    bad.append(f"grpc {err.code().name}: {err.details()}")

    for run in (protobuf, as_json, over_grpc):
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - report, keep fuzzing the other kinds
            bad.append(f"{run.__name__}: {type(exc).__name__}: {exc}"[:300])
    health = httpx.get(f"{serve.http}/healthz", timeout=10).json() if serve.alive() else {}
    alive = serve.alive()
    rc = serve.stop() if alive else serve.proc.returncode
    canary = os.path.exists(hostile.CANARY)
    rows = [(k, str(v)) for k, v in sorted(answers.items())]
    rejected = sum(v for k, v in answers.items() if not (k.endswith(" 200") or k.endswith(" OK")))
    rows += [
        ("rejections answered / counted by the service", f"{rejected} / {health.get('rejected_requests')}"),
        ("internal errors", str(health.get("internal_errors"))),
        ("alive after the fuzz / exit code after SIGTERM", f"{alive} / {rc}"),
        ("input evaluated (canary file created)", str(canary)),
        ("answers that were not 2xx/4xx with a reason", str(len(bad))),
        ("wall time", f"{time.monotonic() - t0:.0f} s"),
    ]
    print(format_table(rows, f"Hostile OTLP against serve ({args.examples} examples per kind)"))
    for line in bad[:20]:
        print("  !", line)
    ok = not bad and alive and rc == 0 and not canary and health.get("internal_errors") == 0
    ok = ok and health.get("rejected_requests") == rejected
    verdict = "PASS" if ok else "FAIL"
    print(f"\ncommand: .venv/bin/python -m bench.fuzz_serve --examples {args.examples}; result: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
