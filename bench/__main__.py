"""Run every ``bench/*_bench.py`` module's ``main()``: ``python -m bench``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.endswith("_bench"))
    failed = 0
    for name in names:
        print(f"\n## {name}\n", flush=True)
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception as exc:  # one broken benchmark must not hide the others
            failed += 1
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
