"""Without a cached Collector and without a way to build one, the collector tests FAIL with the build's
error (they skip only in the documented OTEL_TOKENFIX_NO_COLLECTOR=1 mode)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO


def run_collector_test(tmp_path, **env):
    bin_dir = tmp_path / "bin"  # a PATH with bash and coreutils but no `go`
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "sha256sum", "cut", "find", "sort", "cat", "mkdir", "flock", "dirname"):
        for d in ("/usr/bin", "/bin"):
            if os.path.exists(f"{d}/{tool}") and not (bin_dir / tool).exists():
                (bin_dir / tool).symlink_to(f"{d}/{tool}")
    full = {**os.environ, "PATH": str(bin_dir), "OTEL_TOKENFIX_CACHE": str(tmp_path / "cache"), **env}
    full.pop("OTEL_TOKENFIX_NO_COLLECTOR", None)
    full.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/collector/test_collector_pipeline.py", "-k", "offline"],
                          cwd=REPO, env=full, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_missing_collector_fails_with_the_build_error(tmp_path):
    proc = run_collector_test(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "collector build failed" in proc.stdout and "Go is not installed" in proc.stdout


def test_no_collector_mode_skips(tmp_path):
    proc = run_collector_test(tmp_path, OTEL_TOKENFIX_NO_COLLECTOR="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout
