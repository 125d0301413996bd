"""Run ``otel-tokenfix serve`` as a child process and wait until it is ready.

Why in the package: the service, collector and reliability tests and the bench scripts all start real
``serve`` processes on 127.0.0.1; one launcher (reading the endpoints from the ready line) keeps them from
drifting apart, and it is what an orchestration script of a user would need too.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

READY_LINE = "otel-tokenfix serve ready"


@dataclass
class ServeProcess:
    """One ``serve`` child; ``grpc``/``http`` are the bound endpoints from its ready line."""

    proc: subprocess.Popen
    output: Path
    grpc: str = ""
    http: str = ""
    stderr_lines: list[str] = field(default_factory=list)
    ready_s: float = 0.0  # seconds from spawn to the ready line (after any spool replay)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        """Send ``sig`` and wait; SIGKILL and raise if it does not stop in time."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError("serve did not stop on signal; stderr:\n" + self.stderr_text()) from None

    def stderr_text(self, tail: int = 200) -> str:
        return "\n".join(self.stderr_lines[-tail:])

    def records(self) -> list[dict]:
        """The triplets written so far (whole lines only)."""
        if not self.output.exists():
            return []
        return [json.loads(line) for line in self.output.read_text().splitlines() if line.strip()]

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.http}/healthz", timeout=5).json()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if not self.alive():
                raise AssertionError(f"serve exited ({self.proc.returncode}) waiting for {what}:\n{self.stderr_text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr_text()}")


def start_serve(
    output: Path,
    *args: str,
    tokenizer: str | None = None,
    grpc: str = "127.0.0.1:0",
    http: str = "127.0.0.1:0",
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
) -> ServeProcess:
    """Spawn ``serve -o OUTPUT`` (``tokenizer`` is a ``MODEL=DIR`` spec; an empty ``grpc``/``http`` turns that
    receiver off) and return once its ready line names the bound endpoints."""
    cmd = [sys.executable, "-m", "otel_tokenfix.cli.main", "serve", "-o", str(output), "--grpc", grpc,
           "--http", http, "--stats-interval", "0", *args]
    if tokenizer is not None:
        cmd += ["--tokenizer", tokenizer]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd)
    sp = ServeProcess(proc, Path(output))
    lines: queue.Queue[str | None] = queue.Queue()

    def pump_out() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    def pump_err() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            sp.stderr_lines.append(line.rstrip())

    threading.Thread(target=pump_out, daemon=True).start()
    threading.Thread(target=pump_err, daemon=True).start()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            proc.wait()
            raise AssertionError(f"serve exited with {proc.returncode} before ready:\n{sp.stderr_text()}")
        if line.startswith(READY_LINE):
            sp.ready_s = time.monotonic() - t0
            for part in line.split():
                if part.startswith("grpc="):
                    sp.grpc = part[5:]
                elif part.startswith("http="):
                    sp.http = part[5:]
            return sp
    sp.kill9()
    raise AssertionError(f"serve not ready after {timeout}s:\n{sp.stderr_text()}")
