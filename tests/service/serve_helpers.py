"""Real `otel-tokenfix serve` processes on 127.0.0.1 for the service and collector tests."""

from __future__ import annotations

import socket
from pathlib import Path

from otel_tokenfix.service.child import ServeProcess
from otel_tokenfix.service.child import start_serve as _start

__all__ = ["REPO", "ServeProcess", "free_port", "start_serve"]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(output: Path, tokenizer_dir: Path | None, *args: str, grpc: str = "127.0.0.1:0",
                http: str = "127.0.0.1:0", env: dict | None = None, timeout: float = 90.0) -> ServeProcess:
    """The package's launcher, with the test tokenizer (the Qwen fixture saved to a directory)."""
    tokenizer = f"qwen2.5={tokenizer_dir}" if tokenizer_dir is not None else None
    return _start(output, *args, tokenizer=tokenizer, grpc=grpc, http=http, env=env, timeout=timeout, cwd=REPO)
