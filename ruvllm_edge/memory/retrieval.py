"""Finding memories for a query: KNN, graph expansion, features, ranking.

The pipeline of one ``retrieve``:
1. KNN: a binary coarse pass over the in-RAM code mirror keeps
   ``k * coarse_factor`` ids; their float32 vectors are read from SQLite by
   primary key and rescored exactly (bitindex.py says why this shape).
2. Graph expansion (graph.expand) over edges whose other end is searchable,
   1-2 hops, up to ``max_candidates``.
3. Edge features per candidate and graph-attention ranking (ranking.py), with
   its "none of these" sink so relevance means the same across queries.
4. Near-duplicates dropped, the relevance floor applied.

The ``Retriever`` does the reads (steps 1-2); ``features``, ``rank`` and
``retrieval_stats`` are plain functions of what it gathered. The ranking
parameters come in as plain data: feedback.py trains them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from .. import ranking
from ..config import MemoryConfig
from ..errors import BadRequest
from .bitindex import drop_near_duplicates, quantize, rescore, similarity_stats
from .db import Database
from .graph import SECONDS_PER_DAY, Reached, expand
from .index_sync import IndexSync
from .nodes import chunks, marks, read_vectors
from .types import DIM, TRUSTED_FACT_MIN, Candidate, EdgeRow, Retrieval

__all__ = ["Retriever", "Gathered", "Candidate", "Retrieval", "features", "rank", "search_rows"]

log = logging.getLogger(__name__)

PREVIEW_CHARS = 160
EXPAND_EDGE_LIMIT = 5000   # edges read per expansion step: a hub cannot stall a query

# (ids, sims, vecs) of a KNN, best first: list[int], (n,) float64, (n, d) float32
Hits = tuple[list[int], np.ndarray, np.ndarray]


@dataclass
class Gathered:
    """Everything ranking needs about one query's candidates."""

    ids: list[int]
    rows: dict[int, tuple]          # id -> (kind, source, text, metadata, created_at, quality, trust)
    sims: np.ndarray                # (n,) float64
    vecs: np.ndarray                # (n, d) float32
    relation: list[str]
    hop: np.ndarray                 # (n,) int
    path_weight: np.ndarray         # (n,)
    prop_sim: np.ndarray            # (n,)
    n_hits: int
    edges: list[EdgeRow]
    t_knn: float
    t_expand: float


def _no_hits() -> Hits:
    return [], np.zeros(0), np.zeros((0, DIM), np.float32)


class Retriever:
    """The reads of a search: KNN over the synced index and graph expansion."""

    def __init__(self, db: Database, sync: IndexSync, cfg: MemoryConfig) -> None:
        self.db = db
        self.sync = sync
        self.cfg = cfg

    def knn(self, qvec: np.ndarray, k: int, exclude: Iterable[int] = ()) -> Hits:
        """(ids, sims, vecs) of the k most similar searchable nodes, best first."""
        assert qvec.shape == (DIM,), qvec.shape
        self.sync.refresh()
        skip = set(exclude)
        kc = max(k, k * self.cfg.coarse_factor) + len(skip)
        coarse_ids, _ = self.sync.index.search(quantize(qvec)[0], kc)
        coarse = [int(i) for i in coarse_ids if int(i) not in skip]
        if not coarse:
            return _no_hits()
        ids: list[int] = []
        blobs: list[bytes] = []
        for part in chunks(coarse):
            for nid, emb in self.db.read(
                    f"SELECT v.id, v.embedding FROM node_vectors v JOIN nodes n ON n.id = v.id "
                    f"WHERE n.archived = 0 AND v.id IN ({marks(len(part))})", part):
                ids.append(nid)
                blobs.append(emb)
        if not ids:
            return _no_hits()
        vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), DIM)     # (m, d)
        order, sims = rescore(qvec.astype(np.float32), vecs, k)
        return [ids[i] for i in order], sims.astype(np.float64), vecs[order]

    def neighbours(self, ids: Sequence[int]) -> list[EdgeRow]:
        """Edges from or to ``ids`` whose other end is searchable (not archived).

        Archived nodes (compressed members, corrected answers) must neither
        become candidates nor bridge a second hop or use up expansion room.
        """
        out: list[EdgeRow] = []
        for part in chunks(list(ids)):
            m = marks(len(part))
            out.extend(self.db.read(
                f"SELECT e.src, e.dst, e.kind, e.weight FROM edges e JOIN nodes n "
                f"ON n.id = e.dst AND n.archived = 0 WHERE e.src IN ({m}) "
                f"UNION ALL SELECT e.src, e.dst, e.kind, e.weight FROM edges e JOIN nodes n "
                f"ON n.id = e.src AND n.archived = 0 WHERE e.dst IN ({m}) LIMIT {EXPAND_EDGE_LIMIT}",
                [*part, *part]).fetchall())
        return out

    def node_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        rows: dict[int, tuple] = {}
        for part in chunks(list(ids)):
            for r in self.db.read(
                    f"SELECT id, kind, source, text, metadata, created_at, quality, trust FROM nodes "
                    f"WHERE archived = 0 AND id IN ({marks(len(part))})", part):
                rows[r[0]] = r[1:]
        return rows

    def gather(self, qvec: np.ndarray, k: int, force_ids: Sequence[int] = ()) -> Gathered:
        """KNN hits, then the nodes graph expansion reaches, then ``force_ids`` (training)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        hit_ids, hit_sims, hit_vecs = self.knn(qvec, k)
        t1 = time.perf_counter()
        hits = dict(zip(hit_ids, hit_sims.tolist()))
        edges: list[EdgeRow] = []

        def neighbours(ids: Sequence[int]) -> list[EdgeRow]:
            rows = self.neighbours(ids)
            edges.extend(rows)
            return rows

        room = max(0, cfg.max_candidates - len(hits))
        reached: dict[int, Reached] = (expand(hits, neighbours, cfg.graph_hops, cfg.hop_decay, room)
                                       if cfg.graph_hops > 0 and hits and room else {})
        forced = [i for i in force_ids if i not in hits and i not in reached]
        extra = list(reached) + forced
        rows = self.node_rows(hit_ids + extra)
        extra = [i for i in extra if i in rows]
        extra_vecs = read_vectors(self.db, extra)
        extra = [i for i in extra if i in extra_vecs]
        ids = [i for i in hit_ids if i in rows] + extra
        vec_list = [hit_vecs[j] for j, i in enumerate(hit_ids) if i in rows] + [extra_vecs[i] for i in extra]
        vecs = np.stack(vec_list).astype(np.float32) if vec_list else np.zeros((0, DIM), np.float32)
        sims = (vecs @ qvec.astype(np.float32)).astype(np.float64) if len(ids) else np.zeros(0)
        n_hits = sum(1 for i in hit_ids if i in rows)
        # (relation, hop, path weight, propagated similarity) per candidate
        feats: list[tuple[str, int, float, float]] = []
        for j, i in enumerate(ids):
            r = reached.get(i)
            if j < n_hits or r is None:
                feats.append(("hit", 0, 1.0, float(sims[j])))
            else:
                feats.append((r.relation, r.hop, r.path_weight, r.parent_sim * r.path_weight))
        t2 = time.perf_counter()
        return Gathered(ids, rows, sims, vecs, [f[0] for f in feats], np.array([f[1] for f in feats], np.int64),
                        np.array([f[2] for f in feats]), np.array([f[3] for f in feats]), n_hits, edges,
                        t1 - t0, t2 - t1)

    def retrieve(self, query: str, query_vec: np.ndarray, k: int, params: ranking.RankingParams, *,
                 min_relevance: float | None = None) -> Retrieval:
        """KNN -> graph expansion -> attention ranking -> near-duplicate drop.

        Returns at most k candidates with relevance >= min_relevance (the
        config's by default), best first. ``query`` is only used for logs.
        """
        if k < 1:
            raise BadRequest(f"k must be >= 1, got {k}")
        qvec = np.asarray(query_vec, dtype=np.float32)
        if qvec.shape != (DIM,) or not np.all(np.isfinite(qvec)):
            raise BadRequest(f"query_vec must be a finite ({DIM},) vector, got shape {qvec.shape}")
        floor = self.cfg.min_relevance if min_relevance is None else min_relevance
        g = self.gather(qvec, k)
        t0 = time.perf_counter()
        cands, sink_mass = rank(g, params, k, floor, self.cfg.dedup_cosine, time.time())
        t1 = time.perf_counter()
        stats = retrieval_stats(g, cands, sink_mass, len(self.sync.index))
        timings = {"knn": g.t_knn * 1e3, "expand": g.t_expand * 1e3, "rank": (t1 - t0) * 1e3}
        log.debug("memory retrieval", extra={"hits": g.n_hits, "candidates": len(cands),
                                             "query_chars": len(query),
                                             **{f"ms_{k_}": v for k_, v in timings.items()}})
        return Retrieval(cands, stats, timings)


# ---------------------------------------------------------------------------
# Plain functions of what was gathered


def features(g: Gathered, now: float) -> np.ndarray:
    """(n, N_FEATURES) float32 edge features of the gathered candidates."""
    if not g.ids:
        return np.zeros((0, ranking.N_FEATURES), np.float32)
    rows = [g.rows[i] for i in g.ids]
    age = np.array([(now - r[4]) / SECONDS_PER_DAY for r in rows])
    return ranking.edge_features(g.relation, g.path_weight, age, g.hop,
                                 np.array([r[6] for r in rows]), np.array([r[5] for r in rows]),
                                 g.prop_sim)


def rank(g: Gathered, params: ranking.RankingParams, k: int, floor: float, dedup_cosine: float,
         now: float) -> tuple[list[Candidate], float]:
    """The best k candidates at or above ``floor``, near-duplicates dropped; and the sink's mass."""
    E = features(g, now)
    mask = np.ones(len(g.ids), bool)
    if g.ids:
        attn, rel = ranking.forward(g.sims, E, mask, params)
        sink_mass = float(params.pi() @ attn[:, 0])
    else:
        rel, sink_mass = np.zeros(0), 1.0
    order = sorted(range(len(g.ids)), key=lambda j: (-rel[j], -g.sims[j]))
    kept = [order[j] for j in drop_near_duplicates(g.vecs[order], dedup_cosine)] if order else []
    cands: list[Candidate] = []
    for j in kept:
        if rel[j] < floor or len(cands) >= k:
            continue
        nid = g.ids[j]
        kind, source, text, md, created, quality, trust = g.rows[nid]
        cands.append(Candidate(
            id=nid, kind=kind, text=text, trust=float(trust), quality=float(quality),
            similarity=float(g.sims[j]), relevance=float(rel[j]), hop=int(g.hop[j]),
            created_at=float(created), source=source, relation=g.relation[j],
            metadata=json.loads(md)))
    return cands, sink_mass


def retrieval_stats(g: Gathered, cands: list[Candidate], sink_mass: float, index_size: int) -> dict[str, Any]:
    """What the router's features read about a retrieval."""
    hit_sims = g.sims[:g.n_hits]
    by_kind: dict[str, int] = {}
    for i in g.ids[:g.n_hits]:
        by_kind[g.rows[i][0]] = by_kind.get(g.rows[i][0], 0) + 1
    trusted = [g.sims[j] for j, i in enumerate(g.ids)
               if g.rows[i][0] == "fact" and g.rows[i][6] >= TRUSTED_FACT_MIN]
    final = {c.id for c in cands}
    pairs = {(min(s, d), max(s, d)) for s, d, _, _ in g.edges if s in final and d in final}
    n = len(final)
    return {
        "n_hits": int(g.n_hits), **similarity_stats(hit_sims), "hits_by_kind": by_kind,
        "best_trusted_sim": float(max(trusted)) if trusted else 0.0,
        "graph_density": (len(pairs) / (n * (n - 1) / 2)) if n > 1 else 0.0,
        "n_expanded": len(g.ids) - g.n_hits, "n_candidates": n,
        "attention_sink": sink_mass, "index_size": index_size,
    }


def search_rows(r: Retrieval) -> list[dict[str, Any]]:
    """The ``memory.search`` reply rows: previews, not whole texts."""
    return [{"id": c.id, "kind": c.kind, "preview": c.text[:PREVIEW_CHARS],
             "relevance": round(c.relevance, 4), "similarity": round(c.similarity, 4),
             "trust": c.trust, "source": c.source, "hop": c.hop} for c in r.candidates]


def warm_up(params: ranking.RankingParams) -> None:
    """Compile (or load from numba's cache) the ranking kernel now, not on the first query."""
    ranking.forward(np.zeros(1), np.zeros((1, ranking.N_FEATURES)), np.ones(1, bool), params)
