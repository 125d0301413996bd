"""The trace-ID router's own Go unit test (split keeps each trace on one backend, loses no span, spreads
traces), run with the same Go toolchain and module proxy as the Collector build."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.collector, pytest.mark.timeout(1800)]


def test_tracelb_go_unit_tests():
    if os.environ.get("OTEL_TOKENFIX_NO_COLLECTOR") == "1":
        pytest.skip("OTEL_TOKENFIX_NO_COLLECTOR=1: collector tests skipped (no-collector mode)")
    go = shutil.which("go") or "/usr/local/go/bin/go"
    proc = subprocess.run([go, "test", "-count=1", "./..."], cwd=REPO / "collector-config" / "tracelbexporter",
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1700)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout and "tracelbexporter" in proc.stdout
