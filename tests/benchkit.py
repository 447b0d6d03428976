"""Benchmark scripts loaded as modules, for the tests of their pure parts.

The scripts import ``_common`` / ``_datasets`` as top-level modules (they run
from benchmarks/), so the folder goes on sys.path first; the module is
registered under ``<name>_under_test`` because a dataclass looks its module up.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load_bench(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
