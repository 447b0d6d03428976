"""Sign codes, the numba popcount kernel against its numpy reference, the code index, rescoring."""

from __future__ import annotations

import numpy as np
import sqlean as sqlite3
import sqlite_vec

from memkit import clustered
import pytest

from ruvllm_edge.memory.bitindex import (BitIndex, as_words, drop_near_duplicates, exact_knn,
                                         hamming_reference, nearest_kernel, nearest_reference, quantize, rescore,
                                         similarity_stats)


def test_quantize_matches_sqlite_vec() -> None:
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    for v in clustered(5, seed=3):
        ours = quantize(v)[0].tobytes()
        theirs = conn.execute("SELECT vec_quantize_binary(?)", (v.tobytes(),)).fetchone()[0]
        assert ours == theirs


def test_kernel_distances_equal_reference() -> None:
    rng = np.random.default_rng(1)
    codes = as_words(rng.integers(0, 256, (300, 48), dtype=np.uint8))
    q = as_words(rng.integers(0, 256, (1, 48), dtype=np.uint8))[0]
    rows, dist = nearest_kernel(codes, q, 300, 300)
    np.testing.assert_array_equal(dist, hamming_reference(codes, q)[rows])
    assert sorted(rows.tolist()) == list(range(300))
    rows, dist = nearest_kernel(codes, codes[7], 300, 1)
    assert rows.tolist() == [7] and dist.tolist() == [0]
    rows, dist = nearest_kernel(codes, ~codes[7], 300, 300)
    assert rows[-1] == 7 and dist[-1] == 384


@pytest.mark.parametrize("n,k", [(0, 5), (1, 1), (7, 20), (300, 1), (300, 10), (300, 299), (300, 300),
                                 (5000, 200)])
def test_nearest_kernel_equals_reference(n: int, k: int) -> None:
    """Same rows in the same (hamming, row) order, k > n included."""
    rng = np.random.default_rng(n + k)
    codes = as_words(rng.integers(0, 256, (max(n, 1) + 3, 48), dtype=np.uint8))   # capacity > n
    q = as_words(rng.integers(0, 256, (1, 48), dtype=np.uint8))[0]
    rows, dist = nearest_kernel(codes, q, n, k)
    ref_rows, ref_dist = nearest_reference(codes, q, n, k)
    assert len(rows) == min(n, k)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(dist, ref_dist)
    np.testing.assert_array_equal(dist, hamming_reference(codes[:n], q)[rows])


def test_nearest_kernel_ties_go_to_the_lower_row() -> None:
    """Many equal distances straddle the k-th place: the cut keeps the lowest rows."""
    rng = np.random.default_rng(9)
    base = rng.integers(0, 256, (1, 48), dtype=np.uint8)
    codes = np.repeat(base, 100, axis=0)
    codes[::3, 0] ^= 1                                   # rows 0, 3, ... at distance 1, the rest at 0
    w = as_words(codes)
    rows, dist = nearest_kernel(w, as_words(base)[0], 100, 70)
    zero_rows = [i for i in range(100) if i % 3]
    assert rows[:66].tolist() == zero_rows and dist[:66].tolist() == [0] * 66
    assert rows[66:].tolist() == [0, 3, 6, 9] and dist[66:].tolist() == [1] * 4
    np.testing.assert_array_equal(rows, nearest_reference(w, as_words(base)[0], 100, 70)[0])


def test_bit_index_empty_and_k_beyond_n() -> None:
    idx = BitIndex()
    ids, dist = idx.search(np.zeros(48, np.uint8), 10)
    assert ids.size == 0 and dist.size == 0
    x = clustered(5, seed=11)
    idx.upsert([10, 11, 12, 13, 14], quantize(x))
    ids, dist = idx.search(quantize(x[2])[0], 50)       # k > n: everything, nearest first
    assert sorted(ids.tolist()) == [10, 11, 12, 13, 14] and ids[0] == 12 and np.all(np.diff(dist) >= 0)
    assert idx.search(quantize(x[2])[0], 0)[0].size == 0
    idx.remove([10, 11, 12, 13, 14])
    assert len(idx) == 0 and idx.search(quantize(x[2])[0], 3)[0].size == 0


def test_bit_index_load_replaces_content_and_stays_writable() -> None:
    x = clustered(3000, seed=12)
    idx = BitIndex()
    idx.upsert([1, 2], quantize(x[:2]))
    idx.load(np.arange(1000, 4000), quantize(x))
    assert len(idx) == 3000 and 1 not in idx and 1000 in idx
    assert idx.nbytes() >= 56 * 3000 and 12 * 3000 <= idx.map_nbytes() < 20 * 3000   # docs/memory.md: per node
    assert idx.search(quantize(x[5])[0], 1)[0][0] == 1005
    idx.remove([1005])
    idx.upsert([9999], quantize(x[5]))
    ids, _ = idx.search(quantize(x[5])[0], 1)
    assert ids[0] == 9999 and 1005 not in idx and len(idx) == 3000
    # the search equals the numpy reference over the live rows after deletes (swap-remove moved rows)
    q = as_words(quantize(x[17]))[0]
    ids, dist = idx.search(q, 40)
    live = idx.ids()
    codes = {i: c for i, c in zip(range(1000, 4000), as_words(quantize(x)))}
    codes[9999] = as_words(quantize(x[5]))[0]
    live_codes = np.stack([codes[int(i)] for i in live])
    rows, ref_dist = nearest_reference(live_codes, q, len(live), 40)
    np.testing.assert_array_equal(ids, live[rows])
    np.testing.assert_array_equal(dist, ref_dist)
    with pytest.raises(ValueError):
        idx.load(np.array([1, 1]), quantize(x[:2]))           # ids must be distinct


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


def test_bit_index_follows_a_dict_model_through_many_changes() -> None:
    """Random upserts, overwrites and removes, enough to rebuild the id map's snapshot several times."""
    rng = np.random.default_rng(13)
    codes = as_words(rng.integers(0, 256, (400, 48), dtype=np.uint8))   # code pool
    idx = BitIndex(capacity=8)
    model: dict[int, int] = {}                                          # id -> code pool row
    for step in range(60):
        ids = rng.choice(3000, 80, replace=False)
        picks = rng.integers(0, 400, 80)
        idx.upsert([int(i) for i in ids], codes[picks])
        model.update({int(i): int(p) for i, p in zip(ids, picks)})
        gone = rng.choice(3000, 60, replace=False)
        idx.remove(gone)
        for g in gone:
            model.pop(int(g), None)
        assert len(idx) == len(model)
        assert sorted(idx.ids().tolist()) == sorted(model)
        probe = rng.integers(0, 3000, 20)
        assert [int(p) in idx for p in probe] == [int(p) in model for p in probe]
        if step % 10 == 9:
            live = idx.ids()
            q = codes[int(rng.integers(0, 400))]
            got_ids, got_d = idx.search(q, 25)
            rows, ref_d = nearest_reference(codes[[model[int(i)] for i in live]], q, len(live), 25)
            np.testing.assert_array_equal(got_ids, live[rows])
            np.testing.assert_array_equal(got_d, ref_d)
