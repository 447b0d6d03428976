"""Memory retrieval benchmark at 10K, 100K and 1M nodes: latency, recall@10, insert rate, size, RSS, start-up.

What it measures, per size N (default 10K, 100K and 1M):
- our KNN (in-RAM binary coarse pass over sign codes, then exact float
  rescoring of k * coarse_factor candidates read from SQLite): p50/p99 and
  recall@10 against exact brute force over every vector in the database, on
  two query sets: held-out REAL sentence embeddings and synthetic queries;
- the like-for-like baseline for the coarse pass, interleaved query by query
  with ours: sqlite-vec's own binary KNN (a vec0 ``bit[384]`` table holding
  vec_quantize_binary of the same float vectors, KNN by hamming distance) at
  the same candidate count, followed by the same exact float rescoring of its
  candidates read from the same SQLite table by primary key;
- sqlite-vec's exact float KNN (vec0 ``float[384]``; the old 47x figure) and
  numpy brute force in RAM, with few queries at 1M (one exact float query
  there scans 1.5 GB; the count is in ``baseline_sqlite_vec_queries``);
- the full retrieval pipeline (KNN + graph expansion + attention ranking);
- insert rate of pre-embedded nodes (one transaction per 1,000), the database
  size after a checkpoint, and in a fresh process: start-up time (open the
  database as the daemon does, with its quick_check, then load the in-RAM
  code index from the file) and the RSS that opening adds;
- recall of the same coarse pass on uniform random vectors: the worst case for
  sign codes, reported so nobody mistakes the clustered figure for a bound.

What the database is made of (``composition`` in the JSON), and why:
embedding a million real sentences with the int8 MiniLM is out of reach on
two shared cores (~20-160 sentences/s), so each database holds
- R real sentence embeddings: CPython's pydoc topics, the first paragraphs of
  the standard library's docstrings (read with ast, nothing imported) and the
  LoCoMo development turns (read at run time from outside the repository,
  skipped when absent), embedded once with the real int8 MiniLM and cached
  in benchmarks/.cache/ keyed by the model and corpus hash; R = min(all real
  sentences but the held-out queries, N/2);
- half of the rest: "real-like" vectors drawn from a Gaussian with the mean
  and covariance of the real embeddings, unit-normalised: background
  memories with the statistics of real sentences, which compete with the
  real neighbours in both the hamming and the cosine ranking;
- the other half: the clustered synthetic generator used before (N_c/100
  gaussian centres, noise 0.6/dim), the neighbourhood of the synthetic
  queries, so the synthetic figures stay comparable with earlier results.
The real queries are sentences held out of the database; their ground truth
is exact cosine over every vector in it, filler included
(``real_truth_filler_fraction`` says how much of it is filler).

Usage: python benchmarks/bench_memory.py [--sizes 10000 100000 1000000] [--queries 100]
Prints a summary and writes benchmarks/results/bench_memory.json.
``measure_size(n, ...)`` is importable (bench_e2e reuses it).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import gc
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sqlean as sqlite3  # noqa: E402
import sqlite_vec  # noqa: E402

from _common import save_results  # noqa: E402
from _datasets import CACHE, locomo_path, locomo_samples, python_doc_sentences  # noqa: E402
from ruvllm_edge import fsutil  # noqa: E402
from ruvllm_edge.config import MemoryConfig  # noqa: E402
from ruvllm_edge.embedding import Embedder  # noqa: E402
from ruvllm_edge.memory.bitindex import BitIndex, exact_knn, quantize, rescore  # noqa: E402
from ruvllm_edge.memory.db import Database  # noqa: E402
from ruvllm_edge.memory.nodes import chunks, marks  # noqa: E402
from ruvllm_edge.memory.retrieval import SEARCHABLE  # noqa: E402
from ruvllm_edge.memory.store import MemoryStore  # noqa: E402

MODELS = ROOT / "models"
MODEL = MODELS / "minilm-l6-int8.onnx"
TOKENIZER = MODELS / "minilm-l6-int8.tokenizer.json"
DIM = 384
K = 10
REAL_QUERIES = 200
EXTRA_COARSE_FACTOR = 40   # also measured: what doubling the default coarse pool (20) buys at each size


# ---------------------------------------------------------------------------
# Data


def clustered(n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points and n_queries fresh queries around n/100 gaussian centres (noise 0.6/dim), unit rows."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw(n), draw(n_queries)


def uniform(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def real_like(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n unit rows from a Gaussian with the mean and covariance of the real embeddings."""
    mean = real.mean(axis=0, dtype=np.float64)
    cov = np.cov(real.astype(np.float64), rowvar=False) + 1e-6 * np.eye(DIM)
    chol_t = np.linalg.cholesky(cov).T.astype(np.float32)
    mean32 = mean.astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        x = mean32 + rng.standard_normal((m, DIM), dtype=np.float32) @ chol_t
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def stdlib_docstring_sentences(limit: int) -> list[str]:
    """Sentences of 40-300 characters from the first paragraph of every stdlib docstring.

    Read with ast from the interpreter's own library (nothing is imported), in
    file order, so the list is the same for one Python version.
    """
    import re
    lib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    out: list[str] = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib).parts
        if rel[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in rel:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                para = re.sub(r"\s+", " ", doc.split("\n\n")[0]).strip()
                out += [x.strip() for x in re.split(r"(?<=[.!?])\s+", para)]
    out = [x for x in out if 40 <= len(x) <= 300 and not x.startswith((">>>", "..."))]
    return list(dict.fromkeys(out))[:limit]


def real_corpus(max_docstrings: int) -> tuple[list[str], dict[str, int]]:
    """(distinct sentences, count per source) of the real corpus, in a fixed order."""
    parts: dict[str, list[str]] = {"pydoc_data.topics": python_doc_sentences(10**6),
                                   "stdlib_docstrings": stdlib_docstring_sentences(max_docstrings)}
    path = locomo_path()
    if path.exists():
        parts["locomo_dev_turns"] = [t["text"] for s in locomo_samples(path) for t in s["turns"]
                                     if len(t["text"]) >= 20]
    texts = list(dict.fromkeys(x for p in parts.values() for x in p))
    return texts, {k: len(v) for k, v in parts.items()}


def real_embeddings(texts: Sequence[str], threads: int) -> np.ndarray:
    """(n, 384) int8-MiniLM embeddings of texts, cached in benchmarks/.cache by model + corpus hash."""
    h = hashlib.sha256(MODEL.read_bytes())
    h.update(TOKENIZER.read_bytes())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    path = CACHE / f"real_embeddings_{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    emb = Embedder(MODEL, TOKENIZER, threads=threads, batch_size=32)
    t = time.perf_counter()
    out = np.concatenate([emb.embed_batch(list(texts[s:s + 512])) for s in range(0, len(texts), 512)])
    print(f"embedded {len(texts)} real sentences in {time.perf_counter() - t:.0f} s", flush=True)
    buf = io.BytesIO()
    np.save(buf, out.astype(np.float32))
    fsutil.atomic_write(path, buf.getvalue())
    return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class RealSet:
    """The real sentences: those that may go into a database and the held-out queries."""
    texts: list[str]            # database candidates, in a fixed shuffled order
    vecs: np.ndarray            # (R_max, 384)
    query_vecs: np.ndarray      # (REAL_QUERIES, 384), never stored
    sources: dict[str, int]


def load_real(threads: int = 2, max_docstrings: int = 8000, n_queries: int = REAL_QUERIES) -> RealSet:
    texts, sources = real_corpus(max_docstrings)
    vecs = real_embeddings(texts, threads)
    perm = np.random.default_rng(0).permutation(len(texts))
    q, rest = perm[:n_queries], perm[n_queries:]
    return RealSet([texts[i] for i in rest], vecs[rest], vecs[q], sources)


def compose(n: int, real: RealSet, n_queries: int
            ) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, Any], np.ndarray]:
    """(vectors, texts, synthetic queries, composition, is-real row mask) of a database of n nodes.

    See the module doc for what goes in and why.
    """
    r = min(len(real.texts), n // 2)
    c = (n - r) // 2
    g = n - r - c
    syn, syn_q = clustered(c, n_queries, seed=n)
    data = np.concatenate([real.vecs[:r], real_like(real.vecs, g, seed=n + 3), syn])
    texts = real.texts[:r] + [f"background node {i}" for i in range(g)] + [f"synthetic node {i}" for i in range(c)]
    perm = np.random.default_rng(n + 5).permutation(n)     # mixed ids, as a real store would be
    comp = {"real_sentences": r, "real_like_gaussian": g, "clustered_synthetic": c,
            "clustered_centres": max(1, c // 100)}
    return np.ascontiguousarray(data[perm]), [texts[i] for i in perm], syn_q, comp, perm < r


# ---------------------------------------------------------------------------
# Measurement helpers


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def recall(got: Sequence[int], truth: Sequence[int]) -> float:
    return len(set(got) & set(truth)) / len(truth)


def truth_of(queries: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    """(m, k) rows of data nearest each query by exact cosine (blocks of 32 queries)."""
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 32):
        sims = data @ queries[s:s + 32].T                                 # (n, b)
        for j in range(sims.shape[1]):
            col = sims[:, j]
            top = np.argpartition(-col, k)[:k]
            out[s + j] = top[np.argsort(-col[top])]
    return out


def vec0_db(path: Path, column: str, data: np.ndarray, ids: np.ndarray) -> tuple[Any, float]:
    """A vec0 table over data (rowid = node id) in its own file; (connection, build seconds)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA cache_size = -32768")
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding {column})")
    value = "vec_quantize_binary(?)" if column.startswith("bit") else "?"
    t = time.perf_counter()
    for s in range(0, len(data), 10_000):
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO v(rowid, embedding) VALUES (?, {value})",
                         ((int(ids[i]), data[i].tobytes()) for i in range(s, min(len(data), s + 10_000))))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn, time.perf_counter() - t


def sqlite_vec_bit_knn(vconn: Any, db: Database, q: np.ndarray, kc: int, k: int) -> list[int]:
    """sqlite-vec's binary KNN for kc candidates, then the same exact rescoring ours does."""
    cand = [r[0] for r in vconn.execute("SELECT rowid FROM v WHERE embedding MATCH vec_quantize_binary(?) "
                                        "AND k = ?", (q.tobytes(), kc))]
    ids: list[int] = []
    blobs: list[bytes] = []
    for part in chunks(cand):   # the same read as Retriever.knn
        for nid, emb in db.read(f"SELECT v.id, v.embedding FROM node_vectors v JOIN nodes n ON n.id = v.id "
                                f"WHERE {SEARCHABLE} AND v.id IN ({marks(len(part))})", part):
            ids.append(nid)
            blobs.append(emb)
    vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), DIM)
    order, _ = rescore(q, vecs, k)
    return [ids[i] for i in order]


OPEN_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.index_sync import IndexSync
from ruvllm_edge.memory.bitindex import nearest_kernel
nearest_kernel(np.zeros((1, 6), np.uint64), np.zeros(6, np.uint64), 1, 1)   # numba cache load
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
before = rss()
t1 = time.perf_counter()
db = Database(sys.argv[1])
t2 = time.perf_counter()
sync = IndexSync(db)
sync.warm_up()
t3 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "db_open_s": t2 - t1, "index_load_s": t3 - t2,
                  "open_s": t3 - t1, "rss_before_open": before, "rss_after_open": rss(),
                  "index_nodes": len(sync.index)}))
"""


def open_probe(path: Path, runs: int = 3) -> dict[str, Any]:
    """Start-up in fresh processes (median of runs; the file is in the page cache, as after a restart)."""
    res = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", OPEN_PROBE, str(path)], capture_output=True, text=True,
                             cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        res.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: float(np.median([r[k] for r in res])) for k in res[0]}
    return {"open_s": med["open_s"], "db_open_s": med["db_open_s"], "index_load_s": med["index_load_s"],
            "rss_before_open_bytes": int(med["rss_before_open"]), "rss_after_open_bytes": int(med["rss_after_open"]),
            "rss_added_by_open_bytes": int(med["rss_after_open"] - med["rss_before_open"]),
            "open_runs": runs}


# ---------------------------------------------------------------------------
# One size


def measure_size(n: int, *, real: RealSet | None = None, queries: int = 100, real_queries: int | None = None,
                 bit_baseline_queries: int | None = None, float_baseline_queries: int = 20,
                 workdir: Path | None = None, emb: Embedder | None = None, uniform_check: bool = True,
                 pipeline: bool = True) -> dict[str, Any]:
    """Every figure of one database size (see the module doc); temp files are removed on return.

    real: the real-sentence set (load_real()); queries: synthetic queries;
    real_queries: held-out real queries used (default all); bit/float baseline
    queries: how many queries the sqlite-vec baselines run (bit: default all).
    """
    real = real or load_real()
    emb = emb or Embedder(MODEL, TOKENIZER, threads=1, batch_size=8)
    rq = real.query_vecs[:real_queries or len(real.query_vecs)]
    with tempfile.TemporaryDirectory(prefix="bench_memory_", dir=workdir) as tmp:
        return _measure(n, real, rq, queries, bit_baseline_queries, float_baseline_queries, Path(tmp), emb,
                        uniform_check, pipeline)


def _measure(n: int, real: RealSet, rq: np.ndarray, n_queries: int, bit_q: int | None, float_q: int,
             work: Path, emb: Embedder, uniform_check: bool, pipeline: bool) -> dict[str, Any]:
    data, texts, sq, comp, is_real = compose(n, real, n_queries)
    cfg = MemoryConfig(max_nodes=max(n * 2, 100))
    kc = K * cfg.coarse_factor
    db = Database(work / f"mem_{n}.db")
    store = MemoryStore(db, cfg, emb)
    # -- insert, one transaction per 1,000 pre-embedded nodes
    t = time.perf_counter()
    ids: list[int] = []
    for s in range(0, n, 1000):
        ids += store.add_embedded(texts[s:s + 1000], data[s:s + 1000])
    insert_s = time.perf_counter() - t
    del texts
    store.refresh_index()
    db.checkpoint()
    db_bytes = db.path.stat().st_size
    id_arr = np.asarray(ids, np.int64)
    sets = {"real": rq, "synthetic": sq}
    truth = {name: id_arr[truth_of(qs, data, K)] for name, qs in sets.items()}
    is_filler = np.ones(int(id_arr.max()) + 1, bool)
    is_filler[id_arr[is_real]] = False
    # -- the sqlite-vec bit[384] table (same vectors, rowid = our node id)
    vb, vb_build_s = vec0_db(work / f"vec0_bit_{n}.db", f"bit[{DIM}]", data, id_arr)
    vb_bytes = (work / f"vec0_bit_{n}.db").stat().st_size
    store.knn(rq[0], K)                                                   # warm caches
    sqlite_vec_bit_knn(vb, db, rq[0], kc, K)
    out: dict[str, Any] = {"nodes": n, "composition": comp, "coarse_candidates": kc}
    for name, qs in sets.items():
        lat, rec, blat, brec = [], [], [], []
        nb = len(qs) if bit_q is None else min(bit_q, len(qs))
        for i, (q, tr) in enumerate(zip(qs, truth[name])):               # interleaved: ours, then theirs
            t = time.perf_counter()
            got = [j for j, _ in store.knn(q, K)]
            lat.append(time.perf_counter() - t)
            rec.append(recall(got, tr))
            if i < nb:
                t = time.perf_counter()
                got = sqlite_vec_bit_knn(vb, db, q, kc, K)
                blat.append(time.perf_counter() - t)
                brec.append(recall(got, tr))
        pre = "" if name == "synthetic" else "real_"
        out.update({f"{pre}queries": len(qs), f"{pre}knn_p50_ms": pct(lat, 50), f"{pre}knn_p99_ms": pct(lat, 99),
                    f"{pre}recall_at_10": float(np.mean(rec)),
                    f"{pre}baseline_sqlite_vec_bit_queries": nb,
                    f"{pre}baseline_sqlite_vec_bit_p50_ms": pct(blat, 50),
                    f"{pre}baseline_sqlite_vec_bit_p99_ms": pct(blat, 99),
                    f"{pre}baseline_sqlite_vec_bit_recall": float(np.mean(brec)),
                    f"{pre}speedup_vs_sqlite_vec_bit": pct(blat, 50) / pct(lat, 50)})
    out["real_truth_filler_fraction"] = float(np.mean(is_filler[truth["real"]]))
    # -- the same real queries with a larger coarse pool (memory.coarse_factor), interleaved with the default
    s2 = MemoryStore(db, dataclasses.replace(cfg, coarse_factor=EXTRA_COARSE_FACTOR), emb)
    lat, lat2, rec2 = [], [], []
    for q, tr in zip(rq, truth["real"]):
        t = time.perf_counter()
        store.knn(q, K)
        lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = [j for j, _ in s2.knn(q, K)]
        lat2.append(time.perf_counter() - t)
        rec2.append(recall(got, tr))
    s2.close()
    cf2 = EXTRA_COARSE_FACTOR
    out.update({f"real_knn_p50_ms_coarse_factor_{cf2}": pct(lat2, 50),
                f"real_knn_p99_ms_coarse_factor_{cf2}": pct(lat2, 99),
                f"real_recall_at_10_coarse_factor_{cf2}": float(np.mean(rec2)),
                f"real_knn_p50_ms_default_same_loop": pct(lat, 50)})
    vb.close()
    os.unlink(work / f"vec0_bit_{n}.db")
    # -- our KNN with cold CPU caches: a brute-force pass over all vectors before each query
    cold = []
    for q in sq:
        float((data @ q).max())
        t = time.perf_counter()
        store.knn(q, K)
        cold.append(time.perf_counter() - t)
    # -- full pipeline
    full = []
    if pipeline:
        for q in sq:
            t = time.perf_counter()
            store.retrieve("bench", q, K, min_relevance=0.0)
            full.append(time.perf_counter() - t)
    # -- numpy brute force baseline (float32 matrix in RAM)
    npl = []
    for q in sq:
        t = time.perf_counter()
        s = data @ q
        top = np.argpartition(-s, K)[:K]
        top[np.argsort(-s[top])]
        npl.append(time.perf_counter() - t)
    index = store.index
    out.update({"index_ram_bytes": index.nbytes(), "index_ram_bytes_per_node": index.nbytes() / n,
                "index_code_bytes_per_node": 48 + 8, "index_id_map_bytes": index.map_nbytes(),
                "index_total_bytes_per_node": (index.nbytes() + index.map_nbytes()) / n})
    store.close()
    db.close()
    del store, db
    gc.collect()
    out.update({"knn_cache_cold_p50_ms": pct(cold, 50), "knn_cache_cold_p99_ms": pct(cold, 99),
                "retrieve_p50_ms": pct(full, 50) if full else None, "retrieve_p99_ms": pct(full, 99) if full else None,
                "insert_nodes_per_s": n / insert_s, "db_bytes": db_bytes, "db_bytes_per_node": db_bytes / n,
                "baseline_sqlite_vec_bit_build_s": vb_build_s, "baseline_sqlite_vec_bit_db_bytes": vb_bytes,
                "baseline_numpy_bruteforce_p50_ms": pct(npl, 50)})
    # -- start-up and RSS in fresh processes
    out.update(open_probe(work / f"mem_{n}.db"))
    os.unlink(work / f"mem_{n}.db")
    # -- sqlite-vec exact float KNN baseline (vec0 float[384], same vectors); few queries at 1M
    vf, vf_build_s = vec0_db(work / f"vec0_{n}.db", f"float[{DIM}]", data, id_arr)
    vl, vrec = [], []
    for q, tr in list(zip(rq, truth["real"]))[:float_q]:
        t = time.perf_counter()
        rows = vf.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = ?", (q.tobytes(), K)).fetchall()
        vl.append(time.perf_counter() - t)
        vrec.append(recall([r[0] for r in rows], tr))
    vf.close()
    os.unlink(work / f"vec0_{n}.db")
    out.update({"baseline_sqlite_vec_float_p50_ms": pct(vl, 50),
                "baseline_sqlite_vec_float_recall": float(np.mean(vrec)),
                "baseline_sqlite_vec_queries": len(vl), "baseline_sqlite_vec_float_build_s": vf_build_s,
                "speedup_vs_sqlite_vec_float": pct(vl, 50) / out["real_knn_p50_ms"]})
    # -- worst case: uniform random vectors through the same coarse pass
    if uniform_check:
        del data
        u = uniform(n, seed=n + 1)
        uq = uniform(50, seed=n + 2)
        idx = BitIndex()
        idx.load(np.arange(n), quantize(u))
        urec = []
        for q, tr in zip(uq, truth_of(uq, u, K)):
            cand, _ = idx.search(quantize(q)[0], kc)
            order, _ = rescore(q, u[cand], K)
            urec.append(recall(cand[order].tolist(), tr.tolist()))
        out["uniform_random_recall_at_10"] = float(np.mean(urec))
    return out


def bench_real(emb: Embedder, workdir: Path, n_sent: int, n_add: int, threads: int) -> dict[str, Any]:
    """Recall on a database of real sentences only, at several coarse factors; add() with embedding."""
    sents = python_doc_sentences(n_sent)
    vecs = real_embeddings(sents, threads)
    rng = np.random.default_rng(0)
    qi = rng.choice(len(sents), min(100, len(sents) // 5), replace=False)
    keep = np.setdiff1d(np.arange(len(sents)), qi)
    db = Database(workdir / "real.db")
    store = MemoryStore(db, MemoryConfig(), emb)
    ids = np.asarray(store.add_embedded([sents[i] for i in keep], vecs[keep]))
    out: dict[str, Any] = {"source": "CPython pydoc_data.topics sentences", "sentences": len(sents),
                           "queries": len(qi)}
    for cf in (5, 10, 20):
        s2 = MemoryStore(db, dataclasses.replace(MemoryConfig(), coarse_factor=cf), emb)
        r = [recall([i for i, _ in s2.knn(vecs[q], K)], ids[exact_knn(vecs[q], vecs[keep], K)].tolist())
             for q in qi]
        s2.close()
        out[f"recall_at_10_coarse_factor_{cf}"] = float(np.mean(r))
    # embedding throughput and end-to-end add(): embed + one commit per call, on unseen sentences
    fresh = python_doc_sentences(n_sent + n_add)[n_sent:]
    t = time.perf_counter()
    emb.embed_batch(fresh)
    out["embed_sentences_per_s"] = len(fresh) / (time.perf_counter() - t) if fresh else None
    emb2 = Embedder(MODEL, TOKENIZER, threads=1, batch_size=8)          # cold embedding cache
    s3 = MemoryStore(db, MemoryConfig(), emb2)
    t = time.perf_counter()
    for s in fresh:
        s3.add(s)
    out["add_with_embedding_nodes_per_s"] = len(fresh) / (time.perf_counter() - t) if fresh else None
    s3.close()
    store.close()
    db.close()
    return out


def summary(r: dict[str, Any]) -> str:
    return (f"N={r['nodes']:>7}: REAL knn p50 {r['real_knn_p50_ms']:.2f} ms p99 {r['real_knn_p99_ms']:.2f} ms "
            f"recall@10 {r['real_recall_at_10']:.3f} | sqlite-vec bit+rescore p50 "
            f"{r['real_baseline_sqlite_vec_bit_p50_ms']:.2f} ms p99 {r['real_baseline_sqlite_vec_bit_p99_ms']:.2f} ms "
            f"recall {r['real_baseline_sqlite_vec_bit_recall']:.3f} (x{r['real_speedup_vs_sqlite_vec_bit']:.1f}) | "
            f"synthetic knn p50 {r['knn_p50_ms']:.2f} p99 {r['knn_p99_ms']:.2f} recall {r['recall_at_10']:.3f} "
            f"(bit baseline p50 {r['baseline_sqlite_vec_bit_p50_ms']:.2f} recall "
            f"{r['baseline_sqlite_vec_bit_recall']:.3f}) | sqlite-vec float p50 "
            f"{r['baseline_sqlite_vec_float_p50_ms']:.1f} ms over {r['baseline_sqlite_vec_queries']} q "
            f"(x{r['speedup_vs_sqlite_vec_float']:.0f}) | cold {r['knn_cache_cold_p50_ms']:.2f} ms | "
            f"retrieve p50 {r['retrieve_p50_ms'] or float('nan'):.2f} ms | insert {r['insert_nodes_per_s']:.0f}/s | "
            f"db {r['db_bytes'] / 1e6:.0f} MB | open {r['open_s']:.2f} s (db {r['db_open_s']:.2f} + index "
            f"{r['index_load_s']:.2f}) rss +{r['rss_added_by_open_bytes'] / 2**20:.0f} MB | "
            f"real truth filler {r['real_truth_filler_fraction']:.2f} | coarse factor {EXTRA_COARSE_FACTOR}: real p50 "
            f"{r[f'real_knn_p50_ms_coarse_factor_{EXTRA_COARSE_FACTOR}']:.2f} ms recall "
            f"{r[f'real_recall_at_10_coarse_factor_{EXTRA_COARSE_FACTOR}']:.3f} | "
            f"uniform recall {r.get('uniform_random_recall_at_10', float('nan')):.3f}")


def growth(sizes: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Ratio of each figure between consecutive sizes (e.g. "100000/10000")."""
    keys = ["real_knn_p50_ms", "real_knn_p99_ms", f"real_knn_p50_ms_coarse_factor_{EXTRA_COARSE_FACTOR}",
            "knn_p50_ms", "real_baseline_sqlite_vec_bit_p50_ms",
            "baseline_sqlite_vec_float_p50_ms", "insert_nodes_per_s", "db_bytes", "open_s", "index_load_s",
            "db_open_s", "rss_added_by_open_bytes", "retrieve_p50_ms"]
    ns = sorted(sizes, key=int)
    out = {}
    for a, b in zip(ns, ns[1:]):
        ra, rb = sizes[a], sizes[b]
        out[f"{b}/{a}"] = {"nodes": int(b) / int(a),
                           **{k: rb[k] / ra[k] for k in keys if ra.get(k) and rb.get(k)}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=100, help="synthetic queries per size")
    ap.add_argument("--real-queries", type=int, default=REAL_QUERIES, help="held-out real queries per size")
    ap.add_argument("--bit-baseline-queries-1m", type=int, default=60,
                    help="queries per set for sqlite-vec's bit KNN at >= 1M nodes (all at smaller sizes)")
    ap.add_argument("--baseline-queries", type=int, default=20,
                    help="queries for the slow sqlite-vec exact float baseline below 1M")
    ap.add_argument("--baseline-queries-1m", type=int, default=3,
                    help="queries for the sqlite-vec exact float baseline at >= 1M nodes")
    ap.add_argument("--max-docstrings", type=int, default=8000)
    ap.add_argument("--real-sentences", type=int, default=1200)
    ap.add_argument("--real-adds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="embedding threads for the real corpus")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_memory.json")
    args = ap.parse_args(argv)
    real = load_real(args.threads, args.max_docstrings, args.real_queries)
    emb = Embedder(MODEL, TOKENIZER, threads=1, batch_size=8)
    cfg = MemoryConfig()
    results: dict[str, Any] = {
        "benchmark": "bench_memory", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
                    "sqlite_vec": sqlite_vec.__version__ if hasattr(sqlite_vec, "__version__") else None,
                    "load_avg_at_start": os.getloadavg()},
        "config": {"k": K, "coarse_factor": cfg.coarse_factor, "graph_hops": cfg.graph_hops,
                   "max_candidates": cfg.max_candidates},
        "data": {"real_sources": real.sources, "real_in_db_max": len(real.texts),
                 "real_queries_held_out": len(real.query_vecs),
                 "embedder": "int8 MiniLM-L6 (models/minilm-l6-int8.onnx)",
                 "composition": "R = min(real, N/2) real sentence embeddings; half the rest real-like Gaussian "
                                "(mean+covariance of the real embeddings); half clustered synthetic (N_c/100 "
                                "centres, noise 0.6/dim); ids shuffled",
                 "synthetic_queries": "fresh draws from the clustered centres"},
        "goals": {"knn_p50_ms_at_100k": 10.0, "recall_at_10_at_100k": 0.95,
                  "knn_p50_ms_at_1m": 20.0, "real_recall_at_10_at_1m": 0.95},
        "sizes": {},
    }
    work = args.workdir
    for n in args.sizes:
        big = n >= 1_000_000
        r = measure_size(n, real=real, queries=args.queries,
                         bit_baseline_queries=args.bit_baseline_queries_1m if big else None,
                         float_baseline_queries=args.baseline_queries_1m if big else args.baseline_queries,
                         workdir=work, emb=emb)
        results["sizes"][str(n)] = r
        print(summary(r), flush=True)
    results["growth"] = growth(results["sizes"])
    for k, v in results["growth"].items():
        print(f"growth {k}: " + ", ".join(f"{a} x{b:.2f}" for a, b in v.items()), flush=True)
    if args.real_sentences > 0:
        with tempfile.TemporaryDirectory(prefix="bench_memory_", dir=work) as tmp:
            results["real"] = bench_real(emb, Path(tmp), args.real_sentences, args.real_adds, args.threads)
        print("real sentences: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in results["real"].items()), flush=True)
    save_results(results, args.out, echo=False)   # the summary lines above say it all
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
