"""Sign codes, the numba popcount kernel against its numpy reference, the code index, rescoring."""

from __future__ import annotations

import numpy as np
import sqlean as sqlite3
import sqlite_vec

from memkit import clustered
from ruvllm_edge.memory.bitindex import (BitIndex, as_words, drop_near_duplicates, exact_knn, hamming_kernel,
                                         hamming_reference, quantize, rescore, similarity_stats)


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
