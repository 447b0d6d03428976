"""Memory retrieval benchmark: latency, recall@10, insert throughput, DB size.

What it measures, per size N (default 10K and 100K):
- our KNN (in-RAM binary coarse pass over sign codes, then exact float
  rescoring of k * coarse_factor candidates read from SQLite): p50/p99 and
  recall@10 against exact brute force over the same vectors;
- the full retrieval pipeline (KNN + graph expansion + attention ranking);
- baselines measured in the same run: sqlite-vec exact float KNN (a vec0
  float[384] table over the same vectors) and numpy brute force in RAM;
- insert throughput of pre-embedded nodes (one transaction per 1,000) and the
  database size after a checkpoint;
- recall of the same coarse pass on uniform random vectors: the worst case for
  sign codes, reported so nobody mistakes the clustered figure for a bound.

Synthetic vectors: unit vectors around N/100 random centres (noise 0.6 per
dimension relative to unit-variance centres), queries drawn fresh from the
same centres. A real-embedding check runs on sentences from the Python
documentation bundled with CPython (pydoc_data), embedded with the real int8
MiniLM: recall@10 at several coarse factors, embedding throughput, and
end-to-end add() throughput (embedding + commit per call).

Usage: python benchmarks/bench_memory.py [--sizes 10000 100000] [--queries 100]
Prints a summary and writes benchmarks/results/bench_memory.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlean as sqlite3  # noqa: E402
import sqlite_vec  # noqa: E402

from _common import save_results  # noqa: E402
from _datasets import python_doc_sentences  # noqa: E402
from ruvllm_edge.config import MemoryConfig  # noqa: E402
from ruvllm_edge.embedding import Embedder  # noqa: E402
from ruvllm_edge.memory.db import Database  # noqa: E402
from ruvllm_edge.memory.bitindex import BitIndex, exact_knn, quantize, rescore  # noqa: E402
from ruvllm_edge.memory.store import MemoryStore  # noqa: E402

MODELS = ROOT / "models"
DIM = 384
K = 10


def clustered(n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(n_queries)


def uniform(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def recall(got: list[int], truth: list[int]) -> float:
    return len(set(got) & set(truth)) / len(truth)


def bench_size(n: int, n_queries: int, emb: Embedder, workdir: Path, baseline_queries: int) -> dict[str, Any]:
    data, queries = clustered(n, n_queries, seed=n)
    cfg = MemoryConfig(max_nodes=max(n * 2, 100))
    db = Database(workdir / f"mem_{n}.db")
    store = MemoryStore(db, cfg, emb)
    # -- insert
    t = time.perf_counter()
    ids: list[int] = []
    for s in range(0, n, 1000):
        ids += store.add_embedded([f"synthetic node {i}" for i in range(s, min(n, s + 1000))], data[s:s + 1000])
    insert_s = time.perf_counter() - t
    store.refresh_index()
    db.checkpoint()
    db_bytes = db.path.stat().st_size
    id_arr = np.asarray(ids)
    truth = [id_arr[exact_knn(q, data, K)].tolist() for q in queries]
    # -- our KNN, back to back
    lat, rec = [], []
    store.knn(queries[0], K)  # warm caches
    for q, tr in zip(queries, truth):
        t = time.perf_counter()
        got = [i for i, _ in store.knn(q, K)]
        lat.append(time.perf_counter() - t)
        rec.append(recall(got, tr))
    # -- our KNN with cold CPU caches: a brute-force pass over all vectors before each query
    cold = []
    for q in queries:
        float((data @ q).max())
        t = time.perf_counter()
        store.knn(q, K)
        cold.append(time.perf_counter() - t)
    index_bytes = store.index.nbytes()
    # -- full pipeline
    full = []
    for q in queries:
        t = time.perf_counter()
        store.retrieve("bench", q, K, min_relevance=0.0)
        full.append(time.perf_counter() - t)
    # -- numpy brute force baseline (float32 matrix in RAM)
    npl = []
    for q in queries:
        t = time.perf_counter()
        s = data @ q
        top = np.argpartition(-s, K)[:K]
        top[np.argsort(-s[top])]
        npl.append(time.perf_counter() - t)
    store.close()
    db.close()
    # -- sqlite-vec exact float KNN baseline (vec0 float[384], same vectors)
    conn = sqlite3.connect(str(workdir / f"vec0_{n}.db"), isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA cache_size = -32768")
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}])")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i + 1, data[i].tobytes()) for i in range(n)))
    conn.execute("COMMIT")
    vl, vrec = [], []
    for q in queries[:baseline_queries]:
        t = time.perf_counter()
        rows = conn.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = ?", (q.tobytes(), K)).fetchall()
        vl.append(time.perf_counter() - t)
        vrec.append(recall([r[0] - 1 for r in rows], exact_knn(q, data, K).tolist()))
    conn.close()
    # -- worst case: uniform random vectors through the same coarse pass
    u = uniform(n, seed=n + 1)
    uq = uniform(min(n_queries, 50), seed=n + 2)
    idx = BitIndex()
    idx.upsert(list(range(n)), quantize(u))
    urec = []
    for q in uq:
        cand, _ = idx.search(quantize(q)[0], K * cfg.coarse_factor)
        order, _ = rescore(q, u[cand], K)
        urec.append(recall(cand[order].tolist(), exact_knn(q, u, K).tolist()))
    ours_p50 = pct(lat, 50)
    return {
        "nodes": n, "queries": n_queries,
        "knn_p50_ms": ours_p50, "knn_p99_ms": pct(lat, 99), "recall_at_10": float(np.mean(rec)),
        "knn_cache_cold_p50_ms": pct(cold, 50), "knn_cache_cold_p99_ms": pct(cold, 99),
        "retrieve_p50_ms": pct(full, 50), "retrieve_p99_ms": pct(full, 99),
        "insert_nodes_per_s": n / insert_s, "db_bytes": db_bytes, "db_bytes_per_node": db_bytes / n,
        "index_ram_bytes": index_bytes,
        "baseline_sqlite_vec_float_p50_ms": pct(vl, 50), "baseline_sqlite_vec_float_recall": float(np.mean(vrec)),
        "baseline_sqlite_vec_queries": len(vl),
        "baseline_numpy_bruteforce_p50_ms": pct(npl, 50),
        "speedup_vs_sqlite_vec_float": pct(vl, 50) / ours_p50,
        "uniform_random_recall_at_10": float(np.mean(urec)),
    }


def bench_real(emb: Embedder, workdir: Path, n_sent: int, n_add: int) -> dict[str, Any]:
    sents = python_doc_sentences(n_sent)
    t = time.perf_counter()
    vecs = emb.embed_batch(sents)
    embed_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    qi = rng.choice(len(sents), min(100, len(sents) // 5), replace=False)
    keep = np.setdiff1d(np.arange(len(sents)), qi)
    db = Database(workdir / "real.db")
    store = MemoryStore(db, MemoryConfig(), emb)
    ids = np.asarray(store.add_embedded([sents[i] for i in keep], vecs[keep]))
    out: dict[str, Any] = {"source": "CPython pydoc_data.topics sentences", "sentences": len(sents),
                           "embed_sentences_per_s": len(sents) / embed_s, "queries": len(qi)}
    for cf in (5, 10, 20):
        s2 = MemoryStore(db, dataclasses.replace(MemoryConfig(), coarse_factor=cf), emb)
        r = [recall([i for i, _ in s2.knn(vecs[q], K)], ids[exact_knn(vecs[q], vecs[keep], K)].tolist())
             for q in qi]
        s2.close()
        out[f"recall_at_10_coarse_factor_{cf}"] = float(np.mean(r))
    # end-to-end add(): embed + one commit per call, on sentences not seen by the cache
    fresh = python_doc_sentences(n_sent + n_add)[n_sent:]
    t = time.perf_counter()
    for s in fresh:
        store.add(s)
    out["add_with_embedding_nodes_per_s"] = len(fresh) / (time.perf_counter() - t) if fresh else None
    store.close()
    db.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--baseline-queries", type=int, default=20,
                    help="queries for the slow sqlite-vec float baseline")
    ap.add_argument("--real-sentences", type=int, default=1200)
    ap.add_argument("--real-adds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="embedding threads")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_memory.json")
    args = ap.parse_args(argv)
    emb = Embedder(MODELS / "minilm-l6-int8.onnx", MODELS / "minilm-l6-int8.tokenizer.json",
                   threads=args.threads, batch_size=8)
    cfg = MemoryConfig()
    results: dict[str, Any] = {
        "benchmark": "bench_memory", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "sqlite": sqlite3.sqlite_version},
        "config": {"k": K, "coarse_factor": cfg.coarse_factor, "graph_hops": cfg.graph_hops,
                   "max_candidates": cfg.max_candidates},
        "synthetic_data": "clustered: N/100 gaussian centres, noise 0.6/dim, unit-normalised; fresh queries",
        "goals": {"knn_p50_ms_at_100k": 10.0, "recall_at_10_at_100k": 0.95},
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            r = bench_size(n, args.queries, emb, work, args.baseline_queries)
            results["sizes"][str(n)] = r
            print(f"N={n:>7}: knn p50 {r['knn_p50_ms']:.2f} ms p99 {r['knn_p99_ms']:.2f} ms "
                  f"recall@10 {r['recall_at_10']:.3f} | cold-cache knn p50 {r['knn_cache_cold_p50_ms']:.2f} ms | "
                  f"retrieve p50 {r['retrieve_p50_ms']:.2f} ms "
                  f"p99 {r['retrieve_p99_ms']:.2f} ms | sqlite-vec float p50 "
                  f"{r['baseline_sqlite_vec_float_p50_ms']:.1f} ms (x{r['speedup_vs_sqlite_vec_float']:.1f} "
                  f"slower than ours) | numpy brute p50 {r['baseline_numpy_bruteforce_p50_ms']:.2f} ms | "
                  f"insert {r['insert_nodes_per_s']:.0f} nodes/s | db {r['db_bytes'] / 1e6:.1f} MB | "
                  f"uniform-random recall@10 {r['uniform_random_recall_at_10']:.3f}", flush=True)
        if args.real_sentences > 0:
            real = bench_real(emb, work, args.real_sentences, args.real_adds)
            results["real"] = real
            print("real sentences: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in real.items()), flush=True)
    save_results(results, args.out, echo=False)   # the summary lines above say it all
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
