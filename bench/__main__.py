"""``python -m bench`` (``make bench``): run every benchmark module's ``run()`` in turn."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "__main__"
    )
    failed = 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            continue
        print(f"== bench.{name}", flush=True)
        results = module.run()
        failed += bool(isinstance(results, dict) and results.get("errors"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
