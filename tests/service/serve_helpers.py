"""Real `otel-tokenfix serve` processes on 127.0.0.1 for the service and collector tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServeProcess:
    """One `otel-tokenfix serve` child; `grpc`/`http` are the bound endpoints from its ready line."""

    proc: subprocess.Popen
    output: Path
    grpc: str = ""
    http: str = ""
    stderr_lines: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("serve did not stop on signal; stderr:\n" + self.stderr_text()) from None

    def stderr_text(self) -> str:
        return "\n".join(self.stderr_lines)

    def records(self) -> list[dict]:
        if not self.output.exists():
            return []
        return [json.loads(line) for line in self.output.read_text().splitlines() if line.strip()]

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.http}/healthz", timeout=5).json()

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}) waiting for {what}:\n{self.stderr_text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr_text()}")


def start_serve(output: Path, tokenizer_dir: Path | None, *args: str, grpc: str = "127.0.0.1:0",
                http: str = "127.0.0.1:0", env: dict | None = None, timeout: float = 90.0) -> ServeProcess:
    cmd = [sys.executable, "-m", "otel_tokenfix.cli.main", "serve", "-o", str(output), "--grpc", grpc,
           "--http", http, "--stats-interval", "0", *args]
    if tokenizer_dir is not None:
        cmd += ["--tokenizer", f"qwen2.5={tokenizer_dir}"]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=REPO)
    sp = ServeProcess(proc, output)
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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            proc.wait()
            raise AssertionError(f"serve exited with {proc.returncode} before ready:\n{sp.stderr_text()}")
        if line.startswith("otel-tokenfix serve ready"):
            for part in line.split():
                if part.startswith("grpc="):
                    sp.grpc = part[5:]
                elif part.startswith("http="):
                    sp.http = part[5:]
            return sp
    proc.kill()
    raise AssertionError(f"serve not ready after {timeout}s:\n{sp.stderr_text()}")
