"""bench_e2e's pure helpers: percentiles, goal checks, the config it runs, its inputs.

Its figures come from running it (benchmarks/results/e2e.json); the fill of a
data dir and the pipelined client are tested against a real daemon in
tests/integration/test_bench_e2e_daemon.py.
"""

from __future__ import annotations

import tomllib
from types import ModuleType
from typing import Any

import pytest

from benchkit import load_bench
from ruvllm_edge import config as rconfig


def load_e2e() -> ModuleType:
    return load_bench("bench_e2e")


@pytest.fixture(scope="module")
def e2e() -> ModuleType:
    return load_e2e()


def test_latency_summary_is_in_ms_and_empty_is_none(e2e: ModuleType) -> None:
    s = e2e.lat_summary([0.001] * 99 + [0.101])
    assert s["n"] == 100 and s["p50_ms"] == 1.0
    assert 1.0 < s["p99_ms"] <= 101.0 and s["mean_ms"] == 2.0
    assert e2e.lat_summary([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    assert e2e.median_or_none([3.0, 1.0, 2.0]) == 2.0 and e2e.median_or_none([]) is None


def test_goal_check_direction_limits_and_unmeasured(e2e: ModuleType) -> None:
    g = e2e.goal_check({"start_warm_s": 2.0, "start_first_s": 3.5, "search_per_s": 300.0,
                        "memory_answers_per_s": 99.9, "knn_p50_1m_ms": None},
                       {"search_per_s": "sizes[100000].search_pipelined"})
    assert g["start_warm_s"]["met"] is True          # <= 2 s: the limit itself meets it
    assert g["start_first_s"]["met"] is False
    assert g["search_per_s"]["met"] is True and g["search_per_s"]["direction"] == ">="
    assert g["memory_answers_per_s"]["met"] is False
    assert g["knn_p50_1m_ms"]["met"] is None and g["rss_loaded_100k_mb"]["measured"] is None
    assert g["search_per_s"]["measured_against"] == "sizes[100000].search_pipelined"
    assert set(g) == {k for k, *_ in e2e.GOALS}
    limits = {k: (v["limit"], v["unit"]) for k, v in g.items()}
    assert limits["rss_loaded_100k_mb"] == (450.0, "MB") and limits["rss_idle_unloaded_mb"] == (250.0, "MB")
    assert limits["knn_p50_1m_ms"] == (20.0, "ms") and limits["start_first_s"] == (3.0, "s")


def test_goals_read_the_100k_and_1m_sizes_only(e2e: ModuleType) -> None:
    def size(n: int, per_s: float) -> dict[str, Any]:
        return {"nodes": n, "rss_loaded": {"rss_mb": 400.0}, "rss_idle_unloaded": {"rss_mb": 260.0},
                "search_pipelined": {"per_s": per_s}, "memory_answers": {"pipelined": {"per_s": 120.0}},
                "knn_in_process": {"p50_ms": 5.0}}
    res = {"sizes": [size(10_000, 900.0), size(100_000, 310.0)],
           "startup": {"reused_data_dir": {"healthy_s_median": 1.5}, "fresh_data_dir": {"healthy_s_median": 4.0}}}
    g = e2e.goals_from(res)
    assert g["search_per_s"]["measured"] == 310.0 and g["search_per_s"]["met"] is True
    assert g["rss_idle_unloaded_mb"]["met"] is False and g["rss_loaded_100k_mb"]["met"] is True
    assert g["start_warm_s"]["met"] is True and g["start_first_s"]["met"] is False
    assert g["knn_p50_1m_ms"]["met"] is None          # 1M not measured: not claimed either way


def test_bench_config_is_the_edge_profile_with_the_overrides(e2e: ModuleType) -> None:
    text = e2e.bench_config({"memory": {"max_nodes": 2_000_000}, "learning": {"idle_after_s": 86400.0}})
    raw = tomllib.loads(text)
    edge = tomllib.loads(e2e.EDGE_TOML.read_text())
    for table, keys in edge.items():                  # every shipped key kept, only overrides changed
        for k, v in keys.items():
            if (table, k) not in {("memory", "max_nodes"), ("learning", "idle_after_s")}:
                assert raw[table][k] == v, (table, k)
    assert raw["memory"]["max_nodes"] == 2_000_000 and raw["learning"]["idle_after_s"] == 86400.0
    cfg, errors = rconfig.parse(raw)
    assert errors == [] and cfg.memory.max_nodes == 2_000_000


def test_toml_text_round_trips_scalars_and_refuses_nesting(e2e: ModuleType) -> None:
    raw = {"a": {"s": 'say "hi"', "b": False, "i": 3, "f": 0.5, "l": [1, 2]}}
    assert tomllib.loads(e2e.toml_text(raw)) == raw
    with pytest.raises(TypeError):
        e2e.toml_text({"a": {"t": {"deep": 1}}})


def test_search_inputs_are_unique_and_synthetic_rows_are_unit_and_deterministic(e2e: ModuleType) -> None:
    qs = e2e.unique_queries(500, seed=1, tag="p")
    assert len(set(qs)) == 500
    whole = e2e.synthetic_texts(0, 2500, seed=3)       # a row's text does not depend on the batching
    assert whole == e2e.synthetic_texts(0, 700, seed=3) + e2e.synthetic_texts(700, 2500, seed=3)
    assert whole[1234].startswith("record 1234: ") and whole != e2e.synthetic_texts(0, 2500, seed=4)
    v = e2e.clustered_unit_vectors(300, seed=4)
    assert v.shape == (300, e2e.DIM) and abs(float((v * v).sum(axis=1).min()) - 1.0) < 1e-5


def test_readme_table_names_the_machine_every_size_and_every_goal(e2e: ModuleType) -> None:
    def size(n: int) -> dict[str, Any]:
        return {"nodes": n, "rss_loaded": {"rss_mb": 590.4}, "rss_idle_unloaded": {"rss_mb": 420.0},
                "search_sequential": {"p50_ms": 7.5, "p99_ms": 12.0}, "search_pipelined": {"per_s": 97.2},
                "memory_answers": {"pipelined": None}, "knn_in_process": None}
    res: dict[str, Any] = {
        "quick": True, "when": "2026-12-03 21:00:00 UTC", "commit": "abc1234",
        "machine": {"cpus_logical": 2, "machine": "x86_64", "mem_total_mb": 1024, "python": "3.11.7",
                    "load_average_start": {"1m": 1.5}, "load_average_end": {"1m": 2.5}},
        "baselines": {"llama_cpp_python": {"after_generation": {"rss_mb": 203.0}}},
        "startup": {"fresh_data_dir": {"healthy_s_median": 6.5}, "reused_data_dir": {"healthy_s_median": 2.8,
                                                                                      "runs": [{}, {}]}},
        "sizes": [size(0), size(100_000)]}
    res["goals"] = e2e.goals_from(res)
    table = e2e.markdown_table(res)
    assert "2 CPUs (x86_64" in table and "load average 1.5 → 2.5" in table and "abc1234" in table
    assert "| 100,000 | 420 | 590 | 7.5 / 12.0 | 97 | None |" in table
    assert "raw llama-cpp-python with the same model alone 203.0 MB" in table
    assert table.count("| no |") == 5 and table.count("| not measured |") == 2   # answers/s and 1M KNN
