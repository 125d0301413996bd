"""The real OpenTelemetry Collector built from collector-config/builder-config.yaml.

If no cached build exists the fixture runs collector-config/build.sh; if that fails the tests FAIL with
its error, unless OTEL_TOKENFIX_NO_COLLECTOR=1 (the documented "no collector" mode) where they skip.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "collector-config" / "build.sh"


@pytest.fixture(scope="session")
def collector_bin() -> Path:
    if os.environ.get("OTEL_TOKENFIX_NO_COLLECTOR") == "1":
        pytest.skip("OTEL_TOKENFIX_NO_COLLECTOR=1: collector tests skipped (no-collector mode)")
    proc = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"collector build failed (set OTEL_TOKENFIX_NO_COLLECTOR=1 to skip):\n{proc.stderr[-4000:]}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file() and os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="session")
def qwen_dir(qwen, tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen-tokenizer")
    qwen.save_pretrained(path)
    return path
