"""Run the real Collector on free 127.0.0.1 ports with one of the repository's configs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.serve_helpers import free_port

CONFIGS = Path(__file__).resolve().parents[2] / "collector-config"


@dataclass
class CollectorProcess:
    proc: subprocess.Popen
    grpc: str
    http: str
    log: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.log)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("collector did not stop:\n" + self.text()) from None


def _port_open(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def start_collector(binary: Path, config: str, env: dict[str, str], timeout: float = 60.0) -> CollectorProcess:
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    full_env = {**os.environ, "OTELCOL_GRPC_ENDPOINT": grpc_addr, "OTELCOL_HTTP_ENDPOINT": http_addr,
                "OTELCOL_METRICS_PORT": str(free_port()), **env}
    proc = subprocess.Popen([str(binary), "--config", str(CONFIGS / config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=full_env, stdin=subprocess.DEVNULL)
    cp = CollectorProcess(proc, grpc_addr, http_addr)

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            cp.log.append(line.rstrip())

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"collector exited with {proc.returncode}:\n{cp.text()}")
        if _port_open(grpc_addr) and _port_open(http_addr) and "Everything is ready" in cp.text():
            return cp
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"collector not ready after {timeout}s:\n{cp.text()}")
