"""Coarse binary pass + exact rescoring: kernels, the RAM mirror and recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlean as sqlite3
import sqlite_vec

from ruvllm_edge.config import MemoryConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.retrieval import (BitIndex, as_words, drop_near_duplicates, exact_knn,
                                          hamming_kernel, hamming_reference, quantize, rescore,
                                          similarity_stats)
from ruvllm_edge.memory.store import MemoryStore



def clustered(n: int, d: int = 384, clusters: int | None = None, noise: float = 0.6,
              seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres (~100 per centre): closer to real
    embeddings than uniform noise, which is the worst case for sign codes."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(1, n // 100)
    c = rng.standard_normal((clusters, d)).astype(np.float32)
    x = c[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_quantize_matches_sqlite_vec() -> None:
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    for v in clustered(5, seed=3):
        ours = quantize(v)[0].tobytes()
        theirs = conn.execute("SELECT vec_quantize_binary(?)", (v.tobytes(),)).fetchone()[0]
        assert ours == theirs


def test_hamming_kernel_equals_reference() -> None:
    rng = np.random.default_rng(1)
    codes = as_words(rng.integers(0, 256, (300, 48), dtype=np.uint8))
    q = as_words(rng.integers(0, 256, (1, 48), dtype=np.uint8))[0]
    np.testing.assert_array_equal(hamming_kernel(codes, q, 300), hamming_reference(codes, q))
    assert hamming_kernel(codes, codes[7], 300)[7] == 0
    assert hamming_kernel(codes, ~codes[7], 300)[7] == 384


def test_bit_index_upsert_remove_search() -> None:
    x = clustered(2500, seed=2)
    idx = BitIndex(capacity=4)                       # forces growth
    idx.upsert(list(range(100, 2600)), quantize(x))
    assert len(idx) == 2500 and 100 in idx
    ids, dist = idx.search(quantize(x[0])[0], 5)
    assert ids[0] == 100 and dist[0] == 0 and np.all(np.diff(dist) >= 0)
    idx.remove([100, 101, 99999])                    # unknown ids are ignored
    assert len(idx) == 2498 and 100 not in idx
    assert 100 not in idx.search(quantize(x[0])[0], 50)[0]
    idx.upsert([2599], quantize(x[0]))               # overwrite moves the code
    assert idx.search(quantize(x[0])[0], 1)[0][0] == 2599
    assert sorted(idx.ids().tolist()) == sorted(set(range(102, 2600)))


def test_coarse_plus_rescore_recall_vs_brute_force() -> None:
    x = clustered(20_000, seed=4)
    rng = np.random.default_rng(5)
    queries = x[rng.integers(0, len(x), 40)] + 0.02 * rng.standard_normal((40, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    idx = BitIndex()
    idx.upsert(list(range(len(x))), quantize(x))
    recalls = []
    for q in queries:
        cand, _ = idx.search(quantize(q)[0], 200)
        order, _ = rescore(q, x[cand], 10)
        got = set(cand[order].tolist())
        truth = set(exact_knn(q, x, 10).tolist())
        recalls.append(len(got & truth) / 10)
    assert np.mean(recalls) >= 0.95


def test_rescore_and_stats() -> None:
    x = clustered(50, seed=6)
    order, sims = rescore(x[3], x, 4)
    assert order[0] == 3 and abs(sims[0] - 1) < 1e-5 and np.all(np.diff(sims) <= 0)
    s = similarity_stats(np.array([0.2, 0.4]))
    assert s["top_sim"] == 0.4 and abs(s["mean_sim"] - 0.3) < 1e-9 and abs(s["sim_std"] - 0.1) < 1e-9
    assert similarity_stats(np.zeros(0))["top_sim"] == 0.0


def test_drop_near_duplicates_keeps_the_better_ranked() -> None:
    x = clustered(3, seed=7)
    near = x[0] + 0.01 * x[1]
    near /= np.linalg.norm(near)
    rows = np.stack([x[0], x[1], near, x[2]])
    assert drop_near_duplicates(rows, 0.95) == [0, 1, 3]
    assert drop_near_duplicates(rows[::-1], 0.95) == [0, 1, 2]


# -- through the store (real SQLite file, real embedder) ---------------------

def test_store_knn_recall_and_index_sync(tmp_path: Path, emb: Embedder) -> None:
    db = Database(tmp_path / "memory.db")
    store = MemoryStore(db, MemoryConfig(), emb)
    try:
        x = clustered(3000, seed=8)
        ids = store.add_embedded([f"node {i}" for i in range(len(x))], x)
        rng = np.random.default_rng(9)
        recalls = []
        for qi in rng.integers(0, len(x), 20):
            got = {i for i, _ in store.knn(x[qi], 10)}
            truth = {ids[j] for j in exact_knn(x[qi], x, 10)}
            recalls.append(len(got & truth) / 10)
        assert np.mean(recalls) >= 0.95
        # archived and deleted nodes leave the search; unarchived come back
        top = store.knn(x[0], 1)[0][0]
        assert top == ids[0]
        store.archive([ids[0]])
        assert ids[0] not in {i for i, _ in store.knn(x[0], 10)}
        store.archive([ids[0]], archived=False)
        assert store.knn(x[0], 1)[0][0] == ids[0]
        store.delete(ids[0])
        assert ids[0] not in {i for i, _ in store.knn(x[0], 10)}
        # a write by another connection (another process) is picked up via vec_log
        other = Database(tmp_path / "memory.db")
        other_store = MemoryStore(other, MemoryConfig(), emb)
        new_id = other_store.add_embedded(["from elsewhere"], x[:1])[0]
        other_store.close()
        other.close()
        assert store.knn(x[0], 1)[0][0] == new_id
        # pruned log past what the mirror saw: full reload still finds everything
        reloads = store.stats()["index_reloads"]
        with db.atomic() as conn:
            conn.execute("INSERT INTO vec_log(node_id) VALUES (?)", (new_id,))
            conn.execute("DELETE FROM vec_log")
            conn.execute("INSERT INTO vec_log(node_id) VALUES (?)", (new_id,))
        store.delete(ids[1])
        with db.atomic() as conn:
            conn.execute("DELETE FROM vec_log WHERE seq < (SELECT max(seq) FROM vec_log)")
        assert ids[1] not in {i for i, _ in store.knn(x[1], 10)}
        assert store.stats()["index_reloads"] == reloads + 1
        assert len(store.index) == len(x) - 1
    finally:
        store.close()
        db.close()


def test_retrieve_expands_over_edges_and_reports_stats(tmp_path: Path, emb: Embedder) -> None:
    db = Database(tmp_path / "memory.db")
    store = MemoryStore(db, MemoryConfig(graph_hops=2, min_relevance=0.0), emb)
    try:
        a = store.add("The lighthouse keeper is called Maren Solberg.", kind="fact")[0]
        b = store.add("Maren's cat likes fish.", kind="document")[0]
        c = store.add("The harbour pier was rebuilt in 1998.", kind="document")[0]
        with db.atomic() as conn:
            conn.execute("INSERT INTO edges VALUES (?, ?, 'cites', 0.9, 0, 0)", (a, b))
            conn.execute("INSERT INTO edges VALUES (?, ?, 'same_topic', 0.8, 0, 0)", (b, c))
        q = "Who keeps the lighthouse?"
        r = store.retrieve(q, emb.embed(q), k=1)      # one KNN hit; the rest come from the graph
        assert [cand.id for cand in r.candidates][:1] == [a]
        r3 = store.retrieve(q, emb.embed(q), k=3)
        by_id = {cand.id: cand for cand in r3.candidates}
        assert by_id[a].hop == 0 and by_id[a].relation == "hit"
        assert r3.stats["n_hits"] == 3 and r3.stats["hits_by_kind"]["fact"] == 1
        assert set(r3.timings_ms) == {"knn", "expand", "rank"}
        # with k=1 hit, two hops reach b (cites) and then c (same_topic)
        store_cfg1 = MemoryStore(db, MemoryConfig(graph_hops=2, knn_k=1, min_relevance=0.0), emb)
        g = store_cfg1._gather(emb.embed(q), 1)
        hops = dict(zip(g.ids, g.hop.tolist()))
        rel = dict(zip(g.ids, g.relation))
        assert hops[a] == 0 and hops[b] == 1 and hops[c] == 2
        assert rel[b] == "cites" and rel[c] == "same_topic"
        assert g.path_weight[g.ids.index(c)] == pytest.approx(0.9 * 0.5 * 0.8 * 0.5)
        store_cfg1.close()
        assert 0.0 <= r3.stats["graph_density"] <= 1.0 and r3.stats["graph_density"] > 0
    finally:
        store.close()
        db.close()
