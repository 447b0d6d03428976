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


# -- bench_locomo: its metric functions are pure and tested on tiny synthetic data;
#    the LoCoMo data itself never enters the tests (CC BY-NC, kept outside the repo).

from benchkit import load_bench as _load_bench  # noqa: E402


def test_locomo_bm25_ranks_by_rare_terms_and_length() -> None:
    import math
    lb = _load_bench("bench_locomo")
    assert lb.tokenize("Mel's LGBTQ group, 7 May!") == ["mel", "s", "lgbtq", "group", "7", "may"]
    docs = [lb.tokenize(t) for t in (
        "the cat sat on the mat",
        "a dog chased the cat around the garden for a long long time",
        "the boiler was serviced by Ada",
        "the dog barked",
    )]
    bm = lb.BM25(docs)
    # a term in one document only: that document alone, first
    assert bm.top(lb.tokenize("who serviced the boiler"), 3)[0] == 2
    # "dog" is in docs 1 and 3 equally often: the shorter one ranks first
    assert bm.top(["dog"], 4) == [3, 1]
    # no shared term: nothing is returned rather than arbitrary documents
    assert bm.top(["zebra"], 4) == []
    # the score by hand for one term in one document (Lucene idf, k1 1.2, b 0.75)
    n, df, tf = 4, 1, 1
    avgdl = sum(map(len, docs)) / n
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    want = idf * tf * 2.2 / (tf + 1.2 * (1 - 0.75 + 0.75 * len(docs[2]) / avgdl))
    assert abs(bm.scores(["boiler"])[2] - want) < 1e-9
    # a repeated query word counts once
    assert list(bm.scores(["dog", "dog"])) == list(bm.scores(["dog"]))


def test_locomo_recall_at_k_dedupes_in_rank_order() -> None:
    import pytest
    lb = _load_bench("bench_locomo")
    ranked = ["D1:2", "D1:2", "D3:1", "D1:4", "D2:2"]
    assert lb.recall_at_k(ranked, ["D1:4"], 3) == 1.0      # the duplicate does not use up a slot
    assert lb.recall_at_k(ranked, ["D1:4"], 2) == 0.0
    assert lb.recall_at_k(ranked, ["D1:2", "D9:9"], 10) == 0.5
    assert lb.recall_at_k([], ["D1:1"], 5) == 0.0
    with pytest.raises(ValueError):
        lb.recall_at_k(ranked, [], 5)
    rows = [{"category": 4, "gold": ["D1:1"], "ranked": {"m": ["D1:1"]}},
            {"category": 4, "gold": ["D1:2"], "ranked": {"m": ["D9:9"] * 5 + ["D8:1", "D8:2", "D8:3",
                                                                             "D8:4", "D1:2"]}},
            {"category": 2, "gold": ["D2:1", "D2:2"], "ranked": {"m": ["D2:2"]}}]
    s = lb.summarise_recall(rows, ["m"])["m"]
    # distinct turns: D1:2 is 6th (the five D9:9 are one), so in the top 10 but not the top 5
    assert s["single_hop"] == {"n": 2, "recall@5": 0.5, "recall@10": 1.0}
    assert s["temporal"] == {"n": 1, "recall@5": 0.5, "recall@10": 0.5}
    assert s["overall"] == {"n": 3, "recall@5": 0.5, "recall@10": round(2.5 / 3, 4)}


def test_locomo_answer_f1_normalises_like_locomo() -> None:
    lb = _load_bench("bench_locomo")
    assert lb.normalize_answer("The Cat, and a Hat!") == "cat hat"
    assert lb.token_f1("7 May 2023", "7 May, 2023.") == 1.0
    assert lb.token_f1("", "anything") == 0.0
    assert abs(lb.token_f1("she went on 7 May", "7 May 2023") - 2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3)) < 1e-12
    # category 1: list answers, each gold part scored against its best predicted part
    assert lb.locomo_f1("painting, hiking", "hiking, painting", 1) == 1.0
    assert lb.locomo_f1("hiking", "hiking, painting", 1) == 0.5
    # category 3: only the first ';' part of the gold answer counts
    assert lb.locomo_f1("likely yes", "Likely yes; she said so", 3) == 1.0
    assert lb.is_decline("I don't have that in my notes.") and lb.is_decline("Sorry, I don't know.")
    assert not lb.is_decline("She went to the support group on 7 May.")


def test_locomo_splits_are_by_conversation_and_disjoint() -> None:
    from _datasets import locomo_turn_text, norm_dia_ids
    lb = _load_bench("bench_locomo")
    convs = [{"id": f"conv-{n}"} for n in (43, 26, 41, 30, 42)]
    fit = [c["id"] for c in lb.split_conversations(convs, "fit", 2)]
    report = [c["id"] for c in lb.split_conversations(convs, "report", 2)]
    assert fit == ["conv-26", "conv-30"] and report == ["conv-41", "conv-42", "conv-43"]
    assert len(lb.split_conversations(convs, "all", 2)) == 5
    assert norm_dia_ids(["D8:6; D9:17", "D30:05", "D:11:26", "D", "D8:6"]) == ["D8:6", "D9:17", "D30:5", "D11:26"]
    assert locomo_turn_text("Ann", "Look!", "a photo of a dog") == "Ann: Look! (shared a photo of a dog)"
    assert locomo_turn_text("Ann", "Hi", None) == "Ann: Hi"


def test_bench_locomo_skips_cleanly_without_the_data(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    out = tmp_path / "out.json"
    env = {**os.environ, "RUVLLM_EDGE_LOCOMO": str(tmp_path / "absent.json")}
    r = subprocess.run([sys.executable, str(BENCH / "bench_locomo.py"), "--qa", "0", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stdout and "absent.json" in r.stdout
    assert not out.exists()


def test_locomo_paired_bootstrap_interval_brackets_the_mean_difference() -> None:
    import pytest
    lb = _load_bench("bench_locomo")
    a = [1.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0]
    b = [0.0, 1.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0]
    ci = lb.paired_bootstrap_ci(a, b, n_boot=500, seed=1)
    assert ci["mean"] == 0.375 and ci["n"] == 8
    assert 0.0 <= ci["lo"] < ci["mean"] < ci["hi"] <= 1.0
    same = lb.paired_bootstrap_ci(a, a)
    assert same["mean"] == same["lo"] == same["hi"] == 0.0
    with pytest.raises(ValueError):
        lb.paired_bootstrap_ci([], [])
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
    if not path.is_file():
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
