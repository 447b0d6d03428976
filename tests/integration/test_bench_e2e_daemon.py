"""bench_e2e against a real daemon: a data dir it fills opens in the daemon, and its
pipelined client gets every request through a tight rate limit by honouring retry_after_ms."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from benchkit import load_bench
from ruvllm_edge import config as rconfig


def load_e2e() -> ModuleType:
    return load_bench("bench_e2e")


def test_a_filled_data_dir_serves_and_the_pipelined_client_honours_refusals(
        start_daemon: Any, tmp_path: Path) -> None:
    e2e = load_e2e()
    data = tmp_path / "filled"
    mem = rconfig.MemoryConfig()
    fill = e2e.fill_data_dir(data, 300, mem, seed=5, batch=128)   # three transactions
    assert fill["nodes"] == 300 and fill["db_mb"] > 0
    # A tight rate limit so the pipelined client meets rate_limited and must retry.
    d = start_daemon({"server": {"rate_limit_per_s": 20.0, "rate_limit_burst": 4}}, data_dir=data)
    c = d.client()
    texts = e2e.synthetic_texts(0, 300, seed=5)
    for node_id in (1, 150, 300):                      # the daemon reads what the fill wrote
        assert c.memory_get(node_id)["text"] == texts[node_id - 1]
    assert c.memory_stats()["nodes_by_kind"] == {"document": 300}

    queries = [{"query": q, "k": 5} for q in e2e.unique_queries(24, seed=2)]
    run = e2e.drive(c, "memory.search", queries, depth=8)
    assert run.ok == 24 and run.errors == {}
    assert run.refused.get("rate_limited", 0) > 0      # the limit was met, and every refusal retried
    assert all(r is not None and r["hits"] for r in run.results)
    assert all(h["id"] <= 300 for r in run.results for h in r["hits"])   # the filled nodes are searched
    s = run.summary()
    assert s["ok"] == 24 and s["in_flight"] == 8 and s["refused"] == run.refused

    rss = e2e.proc_rss(d.proc.pid)                     # psutil's RSS and the kernel's split agree
    assert rss["rss_mb"] > 50
    assert abs(rss["RssAnon_mb"] + rss["RssFile_mb"] + rss["RssShmem_mb"] - rss["rss_mb"]) < 8
