"""The vector kernels: sign codes, the in-RAM code index, exact rescoring.

Why this shape (measured on this machine, see bench_memory.py and docs/memory.md):
- sqlite-vec's exact float KNN costs ~70-170 ms at 100K nodes and ~1.1 s at
  1M; its own binary KNN (vec0 bit[384]) at the 200 candidates a coarse pass
  needs costs ~30-60 ms at 100K and ~0.3-0.55 s at 1M; vec0 point lookups of
  float vectors cost ~0.26 ms each. So the coarse pass runs over an in-RAM
  copy of the 48-byte sign codes: 56 bytes a node in arrays plus 12 for the
  id -> row map (IdMap; a dict cost ~106): ~7 MB at 100K, ~70 MB at 1M. One fused
  numba pass (popcount and a 385-bin histogram, then a selection pass) keeps
  the nearest codes in ~2-3 ms at 1M; only those survivors have their float32
  vectors read from SQLite by primary key for exact cosine rescoring. A
  float32 mirror in RAM would cost 1.5 KB a node (1.5 GB at 1M).
- The mirror is a cache of the database, never the other way round: it
  catches up from ``vec_log`` (appended by triggers in the same transaction as
  every vector change), so writes by any thread or process become visible and
  a rolled-back write never leaves a phantom.

Everything here works on plain numpy arrays; index_sync.py keeps the index in
step with the database and retrieval.py does the SQL of a search. The numba
popcount kernel stands beside its numpy reference, compared in the tests.
"""

from __future__ import annotations

import sys
import threading
from typing import Iterable, Sequence

import numpy as np
from numba import njit

from .types import DIM

CODE_WORDS = DIM // 64  # 6 uint64 words per 384-bit code
CODE_BYTES = DIM // 8


# ---------------------------------------------------------------------------
# Binary codes


def quantize(vecs: np.ndarray) -> np.ndarray:
    """Sign codes, bit i of row r set when vecs[r, i] > 0, packed LSB-first.

    (n, 384) float32 -> (n, 48) uint8; byte-identical to sqlite-vec's
    vec_quantize_binary, so the stored blobs work with its SQL functions.
    """
    v = np.atleast_2d(vecs)
    assert v.shape[1] == DIM, v.shape
    return np.packbits(v > 0, axis=1, bitorder="little")          # (n, 48) uint8


def as_words(codes: np.ndarray) -> np.ndarray:
    """(n, 48) uint8 -> (n, 6) uint64 view for the popcount kernel."""
    c = np.ascontiguousarray(np.atleast_2d(codes), dtype=np.uint8)
    assert c.shape[1] == CODE_BYTES, c.shape
    return c.view(np.uint64)                                      # (n, 6) uint64


def hamming_reference(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pure numpy hamming distances: (n, 6) uint64, (6,) uint64 -> (n,) int32."""
    x = np.bitwise_xor(codes, q[None, :])                          # (n, 6) uint64
    return np.unpackbits(x.view(np.uint8), axis=1).sum(axis=1).astype(np.int32)


def nearest_reference(codes: np.ndarray, q: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pure numpy reference of ``nearest_kernel``: the k rows nearest q, by (hamming, row).

    codes: (cap, 6) uint64 (first n rows used), q: (6,) uint64 -> rows (k',) int64, dist (k',) int32.
    Ties on distance go to the lower row, so the kernel's output must equal this one exactly.
    """
    dist = hamming_reference(codes[:n], q)                                 # (n,) int32
    order = np.lexsort((np.arange(n), dist))[:max(0, min(k, n))]
    return order.astype(np.int64), dist[order]


@njit(cache=True, nogil=True)
def nearest_kernel(codes: np.ndarray, q: np.ndarray, n: int,  # pragma: no cover - numba
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k rows nearest q by (hamming, row), in that order: one fused pass, no full sort.

    Why: at 1M codes a popcount pass is ~2 ms but ``argpartition`` over the 1M
    distances cost another 2-14 ms. Distances are integers in 0..384, so a
    385-bin histogram built during the popcount pass gives the k-th distance
    t; a second pass over the (n,) uint16 distances picks every row nearer
    than t and the lowest rows at t. Only the k survivors are sorted.
    """
    kk = min(k, n)
    dist = np.empty(n, np.uint16)
    hist = np.zeros(DIM + 1, np.int64)
    m1 = np.uint64(0x5555555555555555)
    m2 = np.uint64(0x3333333333333333)
    m4 = np.uint64(0x0F0F0F0F0F0F0F0F)
    h01 = np.uint64(0x0101010101010101)
    one, two, four, s56 = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)
    w = codes.shape[1]
    for i in range(n):
        s = np.int64(0)
        for j in range(w):
            x = codes[i, j] ^ q[j]
            x = x - ((x >> one) & m1)
            x = (x & m2) + ((x >> two) & m2)
            x = (x + (x >> four)) & m4
            s += np.int64((x * h01) >> s56)
        dist[i] = s
        hist[s] += 1
    rows = np.empty(kk, np.int64)
    out_d = np.empty(kk, np.int32)
    if kk == 0:
        return rows, out_d
    below = 0                      # rows strictly nearer than t
    t = 0
    while below + hist[t] < kk:
        below += hist[t]
        t += 1
    at_t = kk - below              # rows taken at distance t, lowest rows first
    keys = np.empty(kk, np.int64)  # dist * 2^32 + row: one sort gives (dist, row) order
    m = 0
    for i in range(n):
        d = np.int64(dist[i])
        if d < t or (d == t and at_t > 0):
            if d == t:
                at_t -= 1
            keys[m] = (d << np.int64(32)) | np.int64(i)
            m += 1
            if m == kk and at_t == 0:
                break
    keys.sort()
    for j in range(kk):
        rows[j] = keys[j] & np.int64(0xFFFFFFFF)
        out_d[j] = np.int32(keys[j] >> np.int64(32))
    return rows, out_d


def smallest_k(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest distances, in no particular order."""
    n = dist.shape[0]
    if k >= n:
        return np.arange(n)
    return np.argpartition(dist, k - 1)[:k]


class IdMap:
    """Node id -> row of the code arrays in ~12-20 bytes an entry (a dict costs ~100).

    A sorted snapshot (ids int64, rows int32) plus a small dict of the changes
    since it was taken (the new row, or -1 for removed). The owner rebuilds
    the snapshot from its arrays (``reset``) once the changes pass a fraction
    of the entries, so a lookup is a dict probe and a binary search, and the
    rebuild's sort is amortised over many changes. At 1M nodes the dict map
    cost ~106 MB; this one ~12 MB.
    """

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)        # (m,) sorted
        self._rows = np.zeros(0, np.int32)        # (m,)
        self._delta: dict[int, int] = {}

    def get(self, key: int) -> int | None:
        r = self._delta.get(key)
        if r is not None:
            return None if r < 0 else r
        i = int(np.searchsorted(self._keys, key))
        if i < self._keys.shape[0] and int(self._keys[i]) == key:
            return int(self._rows[i])
        return None

    def set(self, key: int, row: int) -> None:
        self._delta[key] = row

    def discard(self, key: int) -> None:
        self._delta[key] = -1

    def changes(self) -> int:
        return len(self._delta)

    def reset(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Replace everything by keys (m,) distinct -> rows (m,)."""
        order = np.argsort(keys, kind="stable")
        k = np.ascontiguousarray(keys[order], dtype=np.int64)
        if k.shape[0] > 1 and bool(np.any(k[1:] == k[:-1])):
            raise ValueError("ids must be distinct")
        self._keys, self._rows, self._delta = k, np.ascontiguousarray(rows[order], dtype=np.int32), {}

    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._rows.nbytes + sys.getsizeof(self._delta) + 64 * len(self._delta))


class BitIndex:
    """In-RAM mirror of the sign codes of every searchable (non-archived) node.

    Thread-safe: one lock guards the arrays; a scan holds it for ~1 ms at 100K.
    ``seq`` is the last ``vec_log`` sequence number applied.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._ids = np.zeros(capacity, dtype=np.int64)                   # (cap,)
        self._codes = np.zeros((capacity, CODE_WORDS), dtype=np.uint64)  # (cap, 6)
        self._pos = IdMap()
        self.n = 0
        self.seq = 0
        self.lock = threading.RLock()

    def __len__(self) -> int:
        return self.n

    def __contains__(self, node_id: int) -> bool:
        with self.lock:
            return self._pos.get(int(node_id)) is not None

    def upsert(self, ids: Sequence[int], codes: np.ndarray) -> None:
        """Insert or overwrite rows. codes: (m, 48) uint8 or (m, 6) uint64."""
        words = codes if codes.dtype == np.uint64 else as_words(codes)
        assert words.shape == (len(ids), CODE_WORDS), words.shape
        with self.lock:
            for node_id, w in zip(ids, words):
                node_id = int(node_id)
                p = self._pos.get(node_id)
                if p is None:
                    if self.n == self._ids.shape[0]:
                        self._grow()
                    p = self.n
                    self._pos.set(node_id, p)
                    self._ids[p] = node_id
                    self.n += 1
                self._codes[p] = w
            self._maybe_compact()

    def load(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Replace the whole content in bulk (start-up): ids (n,) distinct, codes (n, 48) uint8 or (n, 6) uint64.

        Why: ``upsert`` walks rows in Python (~0.6 s per 1M); this copies the
        arrays once and builds the position map with one sort.
        """
        words = codes if codes.dtype == np.uint64 else as_words(codes)
        ids = np.asarray(ids, dtype=np.int64)
        n = ids.shape[0]
        assert words.shape == (n, CODE_WORDS), words.shape
        cap = max(1024, n + n // 8)
        new_ids = np.zeros(cap, dtype=np.int64)
        new_codes = np.zeros((cap, CODE_WORDS), dtype=np.uint64)
        new_ids[:n] = ids
        new_codes[:n] = words
        pos = IdMap()
        pos.reset(ids, np.arange(n, dtype=np.int32))       # raises on duplicate ids
        with self.lock:
            self._ids, self._codes, self._pos, self.n = new_ids, new_codes, pos, n

    def remove(self, ids: Iterable[int]) -> None:
        """Drop rows by swapping the last row into the hole."""
        with self.lock:
            for node_id in ids:
                node_id = int(node_id)
                p = self._pos.get(node_id)
                if p is None:
                    continue
                self._pos.discard(node_id)
                last = self.n - 1
                if p != last:
                    moved = int(self._ids[last])
                    self._ids[p] = moved
                    self._codes[p] = self._codes[last]
                    self._pos.set(moved, p)
                self.n = last
            self._maybe_compact()

    def search(self, q_code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, hamming) of up to k nearest codes, nearest first.

        q_code: (48,) uint8 or (6,) uint64.
        """
        q = q_code if q_code.dtype == np.uint64 else as_words(q_code)[0]
        with self.lock:
            n = self.n
            if n == 0 or k <= 0:
                return np.zeros(0, np.int64), np.zeros(0, np.int32)
            rows, dist = nearest_kernel(self._codes, q, n, k)               # (k',) int64, int32
            return self._ids[rows], dist

    def ids(self) -> np.ndarray:
        with self.lock:
            return self._ids[:self.n].copy()

    def nbytes(self) -> int:
        """Bytes of the id and code arrays (56 per slot, capacity included)."""
        return int(self._ids.nbytes + self._codes.nbytes)

    def map_nbytes(self) -> int:
        """Approximate bytes of the id -> row map (12 a node plus the pending changes)."""
        return self._pos.nbytes()

    def _maybe_compact(self) -> None:
        """Fold the map's pending changes into a fresh sorted snapshot once they pass n/16."""
        if self._pos.changes() > max(1024, self.n // 16):
            self._pos.reset(self._ids[:self.n], np.arange(self.n, dtype=np.int32))

    def _grow(self) -> None:
        cap = max(1024, 2 * self._ids.shape[0])
        ids = np.zeros(cap, dtype=np.int64)
        codes = np.zeros((cap, CODE_WORDS), dtype=np.uint64)
        ids[:self.n] = self._ids[:self.n]
        codes[:self.n] = self._codes[:self.n]
        self._ids, self._codes = ids, codes


# ---------------------------------------------------------------------------
# Rescoring and post-processing


def rescore(query: np.ndarray, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine of unit vectors; (order, sims) of the best k, best first.

    query: (d,) float32, vecs: (m, d) float32 -> (k',) int, (k',) float32.
    """
    if vecs.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    sims = vecs @ query                                                   # (m,)
    top = smallest_k(-sims, k)
    top = top[np.argsort(-sims[top], kind="stable")]
    return top, sims[top]


def drop_near_duplicates(vecs: np.ndarray, threshold: float) -> list[int]:
    """Greedy keep-list over rows already in rank order.

    A row is dropped when its cosine with an already kept row is >= threshold,
    so the better-ranked of two near-identical memories survives.
    vecs: (n, d) float32 unit rows -> indices kept, in order.
    """
    kept: list[int] = []
    for i in range(vecs.shape[0]):
        if kept and float(np.max(vecs[kept] @ vecs[i])) >= threshold:
            continue
        kept.append(i)
    return kept


def similarity_stats(sims: np.ndarray) -> dict[str, float]:
    """Summary of the KNN hit similarities for router features."""
    if sims.size == 0:
        return {"top_sim": 0.0, "mean_sim": 0.0, "sim_std": 0.0}
    return {"top_sim": float(np.max(sims)), "mean_sim": float(np.mean(sims)),
            "sim_std": float(np.std(sims))}


def exact_knn(query: np.ndarray, vecs: np.ndarray, k: int) -> np.ndarray:
    """Brute-force ground truth: indices of the k most similar rows, best first."""
    order, _ = rescore(query, vecs, k)
    return order
