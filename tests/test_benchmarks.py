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


# ---------------------------------------------------------------------------
# Issue 10: cache keys, frozen splits, hard negatives, LoCoMo reading.

import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def bench_path() -> None:
    sys.path.insert(0, str(BENCH))


def test_outcome_cache_key_covers_every_source_that_shapes_an_outcome(bench_path: None) -> None:
    """config.py, router/policy.py and learning/explore.py were missing from the key."""
    from router import pipeline as bp
    root = BENCH.parent
    covered = {p.relative_to(root).as_posix() for pat in bp.OUTCOME_SOURCES
               for p in root.glob(pat)}
    for must in ("ruvllm_edge/config.py", "ruvllm_edge/router/policy.py",
                 "ruvllm_edge/learning/explore.py", "ruvllm_edge/learning/utility.py",
                 "ruvllm_edge/pipeline.py", "ruvllm_edge/memory/retrieval.py",
                 "ruvllm_edge/ranking.py", "ruvllm_edge/server/components.py",
                 "benchmarks/router/workload.py"):
        assert must in covered, must
    assert any(c.startswith("ruvllm_edge/answer/") for c in covered)


def test_token_f1_is_locomos_metric(bench_path: None) -> None:
    from _datasets import token_f1
    assert token_f1("7 May 2023", "7 May 2023") == 1.0
    assert token_f1("It was on 7 May, 2023.", "7 May 2023") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("I don't have that in my notes.", "7 May 2023") == 0.0
    assert token_f1("The dog", "dog") == 1.0        # articles do not count


def test_locomo_is_read_in_place_and_never_in_the_repo(bench_path: None) -> None:
    from _datasets import locomo_path, locomo_samples
    assert not list(BENCH.parent.glob("**/locomo*.json"))
    path = locomo_path()
    if path is None:
        pytest.skip("LoCoMo dev data absent (../shared/data/locomo-dev.json)")
    s = locomo_samples(path)[0]
    assert s["turns"] and s["qa"]
    assert all(q["category"] in (1, 2, 3, 4) and q["answer"] for q in s["qa"])
    assert all(e.startswith("D") and ":" in e for q in s["qa"] for e in q["evidence"])


def test_router_workload_has_frozen_splits_and_hard_negatives(bench_path: None) -> None:
    if not list((BENCH / ".cache").glob("pycountry-*.whl")):
        pytest.skip("pycountry wheel not cached (bench_router downloads it)")
    from router.workload import TEMPLATES, build_split_workload
    wl = build_split_workload()
    dev, held = wl.split("dev"), wl.split("heldout")
    assert dev and held and len(dev) + len(held) == len(wl.queries)
    for qs in (dev, held):
        cats = {q.category for q in qs}
        assert {"neg_other_attribute", "neg_other_entity", "taught_fact"} <= cats
    assert not {q.group for q in dev} & {q.group for q in held}
    templated = {a.split("{")[0] for t in TEMPLATES.values() for a in t["ask"]}
    for q in held:
        if q.category == "taught_fact":
            assert not any(q.query.startswith(t) for t in templated if t), q.query
    dev_facts = [f for f in wl.facts if f.get("split") != "heldout"]
    held_facts = [f for f in wl.facts if f.get("split") == "heldout"]
    for f in held_facts:   # no held-out entity was taught in dev
        name = f["question"].split(" of ")[-1].rstrip("?").removeprefix("the ")
        assert not any(name in d["text"] for d in dev_facts), name
