"""``make bench``: run every ``tests/bench/bench_*.py`` module's ``main()`` and print its figures.
Figures are printed, never asserted; compare ratios within one run."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import tests.bench as pkg


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_"))
    if len(sys.argv) > 1:
        names = [n for n in names if any(a in n for a in sys.argv[1:])]
    for name in names:
        start = time.perf_counter()
        print(f"== {name}")
        importlib.import_module(f"tests.bench.{name}").main()
        print(f"   ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
