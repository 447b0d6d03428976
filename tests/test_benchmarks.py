"""The benchmark scripts' structure (their figures come from running them, not from tests).

Each benchmark is self-contained: it imports the shared helpers (_common,
_datasets) and its own parts, never another benchmark, and saves its results
through ``_common.save_results``.
"""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_benchmark_imports_another_and_all_save_through_common() -> None:
    scripts = sorted(BENCH.glob("bench_*.py"))
    assert len(scripts) >= 4
    names = {p.stem for p in scripts}
    for path in scripts + sorted((BENCH / "router").glob("*.py")):
        assert not (_imports(path) & names), (path.name, _imports(path) & names)
    for path in scripts:
        text = path.read_text(encoding="utf-8")
        assert "save_results(" in text, path.name
        assert "write_text(" not in text and "json.dump(" not in text, path.name


def test_bench_router_is_a_short_cli_over_its_parts() -> None:
    assert len((BENCH / "bench_router.py").read_text().splitlines()) < 200
    for part in ("latency", "forgetting", "workload", "report"):
        assert (BENCH / "router" / f"{part}.py").is_file()
