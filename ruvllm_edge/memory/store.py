"""The memory store: the I/O side of the memory graph.

This module owns every SQL statement on nodes, edges and vectors; the rules
live in the pure modules it calls (retrieval, graph, ranking, chunking,
context). The daemon builds one ``MemoryStore`` per process and shares it
between threads: reads use the Database's per-thread reader connections,
writes go through ``db.atomic()``.

Trust order (``trust`` column, also a ranking feature):
user correction (fact from feedback, 1.0) > user fact (0.9) > document (0.8)
> concept (0.6) > model answer / qa_pair (0.4) > agent_step (0.3) > query (0.2).

Decisions worth knowing when wiring this in:
- ``memory.add`` chunks long text by embedding tokens; chunk i -> chunk i+1
  get a ``follows`` edge and chunks 2..n have ``parent_id`` = the first chunk.
  Deleting the first id deletes the whole document; deleting a later chunk
  deletes only that chunk. Exact duplicates (same kind and text) are not
  inserted again: the existing id is returned.
- A correction becomes a ``fact`` (source ``feedback``) whose stored text is
  the correction and whose vector embeds "question + correction", so both a
  full-sentence correction ("The code is 7341") and a terse one ("No, 7341")
  are found by paraphrases of the question. The qa_pair it corrects gets a
  ``derived`` edge from it and is archived (kept, out of search): a wrong
  answer must not keep competing with its correction.
- Compression (loop C, rules in compress.py): ``add_concept`` writes a concept,
  its ``contains`` edges and the archiving of its old members in one
  transaction, and refuses (MembersChanged) if a member changed meanwhile.
  Archived members stay readable by ``get`` but never become retrieval
  candidates, also not through ``contains`` edges.
- ``apply_feedback`` must not be called inside an open ``db.atomic()`` block:
  it drains the writeback queue first (so the answer's qa_pair exists), and
  that thread needs the write lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import MemoryConfig
from ..embedding import Embedder
from ..errors import BadRequest, NotFound, StorageError, Timeout, TooLarge
from .. import ranking
from .chunking import chunk_text
from .compress import CLUSTER_EDGE_KINDS, COMPRESSIBLE_KINDS, CandidateSet, ConceptWrite, MembersChanged
from .db import Connection, Database
from .graph import (DECAYING_KINDS, NODE_KINDS, NODE_VALUE_SQL, SECONDS_PER_DAY, EdgeRow, Reached,
                    adjust_weight, expand, rating_target)
from .retrieval import (DIM, BitIndex, Candidate, Retrieval, drop_near_duplicates, quantize, rescore,
                        similarity_stats)
from .writeback import Interaction, WritebackQueue

__all__ = ["MemoryStore", "Candidate", "Retrieval", "Interaction", "default_trust", "qa_text"]

log = logging.getLogger(__name__)

SOURCES = ("user", "feedback", "model", "learning")
_DEFAULT_SOURCE = {"fact": "user", "document": "user", "concept": "learning", "qa_pair": "model",
                   "query": "user", "agent_step": "model"}
_TRUST = {"concept": 0.6, "qa_pair": 0.4, "agent_step": 0.3, "query": 0.2}
PROTECTED_KINDS = ("fact", "document")   # never evicted (corrections are facts)
# Facts the user vouched for (corrections 1.0, memory.add facts 0.9) count as
# "trusted" in the router's best_trusted_sim feature.
TRUSTED_FACT_MIN = 0.9
PREVIEW_CHARS = 160
VEC_LOG_KEEP = 20_000
# Feedback step sizes: a rating pulls the answer's own qa_pair half-way to the
# rating, the memories it used a fifth of the way, and moves the edges between
# them by up to EDGE_STEP.
QA_FEEDBACK_RATE = 0.5
USED_FEEDBACK_RATE = 0.2
EDGE_STEP = 0.2
ANSWERED_BY_WEIGHT = 0.5
SQL_CHUNK = 500
FEEDBACK_FLUSH_S = 5.0


def default_trust(kind: str, source: str) -> float:
    if kind == "fact":
        return 1.0 if source == "feedback" else 0.9
    if kind == "document":
        return 0.8
    return _TRUST[kind]


def qa_text(query: str, answer: str) -> str:
    """The text stored and embedded for an answered question."""
    return f"Q: {query.strip()}\nA: {answer.strip()}"


def _fact_embed_text(question: str, correction: str) -> str:
    return f"{question.strip()}\n{correction.strip()}" if question.strip() else correction.strip()


def _hash(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\x00{text.strip()}".encode("utf-8")).hexdigest()[:32]


def _chunks(seq: Sequence[Any], n: int = SQL_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _vec_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


@dataclass
class _Gathered:
    """Internal: everything ranking needs about one query's candidates."""

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


class MemoryStore:
    """Nodes, edges and vectors in the one SQLite file, plus the writeback queue."""

    def __init__(self, db: Database, cfg: MemoryConfig, embedder: Embedder) -> None:
        self.db = db
        self.cfg = cfg
        self.embedder = embedder
        self.index = BitIndex()
        self._params_lock = threading.Lock()
        self._params = self._load_params()
        self._anchor = ranking.initial_params(cfg.attention_heads)
        self._last_qa: OrderedDict[str, int] = OrderedDict()
        self._counters = {"qa_written": 0, "qa_deduped": 0, "qa_gated": 0, "facts": 0,
                          "feedback": 0, "evicted": 0, "edges_decayed": 0, "index_reloads": 0}
        self._counters_lock = threading.Lock()
        self._reload_index()
        self._warm_up()
        self._wb = WritebackQueue(self._write_batch, batch=cfg.writeback_batch,
                                  flush_ms=cfg.writeback_flush_ms, max_queue=cfg.writeback_queue_max)

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernels now, not on the first query."""
        self.index.search(np.zeros(48, np.uint8), 1)
        from .retrieval import hamming_kernel
        hamming_kernel(np.zeros((1, 6), np.uint64), np.zeros(6, np.uint64), 1)
        ranking.forward(np.zeros(1), np.zeros((1, ranking.N_FEATURES)), np.ones(1, bool), self._params)

    # =====================================================================
    # Index mirror

    def _reload_index(self) -> None:
        """Rebuild the in-RAM code mirror from the database."""
        with self.index.lock:
            seq = int(self.db.read("SELECT coalesce(max(seq), 0) FROM vec_log").fetchone()[0])
            rows = self.db.read("SELECT v.id, v.bits FROM node_vectors v JOIN nodes n ON n.id = v.id "
                                "WHERE n.archived = 0").fetchall()
            self.index.clear()
            if rows:
                ids = [r[0] for r in rows]
                codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), -1)
                self.index.upsert(ids, codes)
            self.index.seq = seq
        self._count("index_reloads")

    def refresh_index(self) -> None:
        """Apply vector changes committed since the last look (any thread or process)."""
        with self.index.lock:
            log_rows = self.db.read("SELECT seq, node_id FROM vec_log WHERE seq > ? ORDER BY seq",
                                    (self.index.seq,)).fetchall()
            if not log_rows:
                return
            if log_rows[0][0] > self.index.seq + 1:
                # The log was pruned past what we have seen: start over.
                self._reload_index()
                return
            ids = sorted({r[1] for r in log_rows})
            present: dict[int, bytes] = {}
            for part in _chunks(ids):
                for nid, bits in self.db.read(
                        f"SELECT v.id, v.bits FROM node_vectors v JOIN nodes n ON n.id = v.id "
                        f"WHERE n.archived = 0 AND v.id IN ({_marks(len(part))})", part):
                    present[nid] = bits
            gone = [i for i in ids if i not in present]
            if present:
                codes = np.frombuffer(b"".join(present.values()), np.uint8).reshape(len(present), -1)
                self.index.upsert(list(present), codes)
            self.index.remove(gone)
            self.index.seq = int(log_rows[-1][0])

    def _knn(self, qvec: np.ndarray, k: int, exclude: Iterable[int] = ()) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(ids, sims, vecs) of the k most similar searchable nodes, best first."""
        assert qvec.shape == (DIM,), qvec.shape
        self.refresh_index()
        skip = set(exclude)
        kc = max(k, k * self.cfg.coarse_factor) + len(skip)
        coarse_ids, _ = self.index.search(quantize(qvec)[0], kc)
        coarse = [int(i) for i in coarse_ids if int(i) not in skip]
        if not coarse:
            return [], np.zeros(0), np.zeros((0, DIM), np.float32)
        ids: list[int] = []
        blobs: list[bytes] = []
        for part in _chunks(coarse):
            for nid, emb in self.db.read(
                    f"SELECT v.id, v.embedding FROM node_vectors v JOIN nodes n ON n.id = v.id "
                    f"WHERE n.archived = 0 AND v.id IN ({_marks(len(part))})", part):
                ids.append(nid)
                blobs.append(emb)
        if not ids:
            return [], np.zeros(0), np.zeros((0, DIM), np.float32)
        vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), DIM)     # (m, d)
        order, sims = rescore(qvec.astype(np.float32), vecs, k)
        return [ids[i] for i in order], sims.astype(np.float64), vecs[order]

    def knn(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Public KNN (coarse + exact rescoring): [(id, cosine)], best first."""
        ids, sims, _ = self._knn(qvec, k)
        return list(zip(ids, sims.tolist()))

    # =====================================================================
    # Retrieval

    def _neighbours(self, ids: Sequence[int]) -> list[EdgeRow]:
        """Edges from or to ``ids`` whose other end is searchable (not archived).

        Archived nodes (compressed members, corrected answers) must neither
        become candidates nor bridge a second hop or use up expansion room.
        """
        out: list[EdgeRow] = []
        for part in _chunks(list(ids)):
            m = _marks(len(part))
            out.extend(self.db.read(
                f"SELECT e.src, e.dst, e.kind, e.weight FROM edges e JOIN nodes n "
                f"ON n.id = e.dst AND n.archived = 0 WHERE e.src IN ({m}) "
                f"UNION ALL SELECT e.src, e.dst, e.kind, e.weight FROM edges e JOIN nodes n "
                f"ON n.id = e.src AND n.archived = 0 WHERE e.dst IN ({m}) LIMIT 5000",
                [*part, *part]).fetchall())
        return out

    def _node_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        rows: dict[int, tuple] = {}
        for part in _chunks(list(ids)):
            for r in self.db.read(
                    f"SELECT id, kind, source, text, metadata, created_at, quality, trust FROM nodes "
                    f"WHERE archived = 0 AND id IN ({_marks(len(part))})", part):
                rows[r[0]] = r[1:]
        return rows

    def _vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for part in _chunks(list(ids)):
            for nid, emb in self.db.read(
                    f"SELECT id, embedding FROM node_vectors WHERE id IN ({_marks(len(part))})", part):
                out[nid] = np.frombuffer(emb, dtype="<f4")
        return out

    def _gather(self, qvec: np.ndarray, k: int, force_ids: Sequence[int] = ()) -> _Gathered:
        t0 = time.perf_counter()
        hit_ids, hit_sims, hit_vecs = self._knn(qvec, k)
        t1 = time.perf_counter()
        hits = dict(zip(hit_ids, hit_sims.tolist()))
        edges: list[EdgeRow] = []

        def neighbours(ids: Sequence[int]) -> list[EdgeRow]:
            rows = self._neighbours(ids)
            edges.extend(rows)
            return rows

        room = max(0, self.cfg.max_candidates - len(hits))
        reached: dict[int, Reached] = (expand(hits, neighbours, self.cfg.graph_hops, self.cfg.hop_decay, room)
                                       if self.cfg.graph_hops > 0 and hits and room else {})
        forced = [i for i in force_ids if i not in hits and i not in reached]
        extra = list(reached) + forced
        rows = self._node_rows(hit_ids + extra)
        extra = [i for i in extra if i in rows]
        extra_vecs = self._vectors(extra)
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
        relation = [f[0] for f in feats]
        hop = [f[1] for f in feats]
        pw = [f[2] for f in feats]
        prop = [f[3] for f in feats]
        t2 = time.perf_counter()
        return _Gathered(ids, rows, sims, vecs, relation, np.array(hop, np.int64), np.array(pw),
                         np.array(prop), n_hits, edges, t1 - t0, t2 - t1)

    def _features(self, g: _Gathered, now: float) -> np.ndarray:
        n = len(g.ids)
        if n == 0:
            return np.zeros((0, ranking.N_FEATURES), np.float32)
        rows = [g.rows[i] for i in g.ids]
        age = np.array([(now - r[4]) / SECONDS_PER_DAY for r in rows])
        return ranking.edge_features(g.relation, g.path_weight, age, g.hop,
                                     np.array([r[6] for r in rows]), np.array([r[5] for r in rows]),
                                     g.prop_sim)

    def retrieve(self, query: str, query_vec: np.ndarray, k: int, *,
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
        now = time.time()
        g = self._gather(qvec, k)
        t0 = time.perf_counter()
        E = self._features(g, now)
        params = self._params
        mask = np.ones(len(g.ids), bool)
        if g.ids:
            attn, rel = ranking.forward(g.sims, E, mask, params)
            sink_mass = float(params.pi() @ attn[:, 0])
        else:
            rel, sink_mass = np.zeros(0), 1.0
        order = sorted(range(len(g.ids)), key=lambda j: (-rel[j], -g.sims[j]))
        kept = [order[j] for j in drop_near_duplicates(g.vecs[order], self.cfg.dedup_cosine)] if order else []
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
        t1 = time.perf_counter()
        stats = self._stats_for(g, cands, sink_mass)
        timings = {"knn": g.t_knn * 1e3, "expand": g.t_expand * 1e3, "rank": (t1 - t0) * 1e3}
        log.debug("memory retrieval", extra={"hits": g.n_hits, "candidates": len(cands),
                                             "query_chars": len(query), **{f"ms_{k_}": v for k_, v in timings.items()}})
        return Retrieval(cands, stats, timings)

    def _stats_for(self, g: _Gathered, cands: list[Candidate], sink_mass: float) -> dict[str, Any]:
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
            "attention_sink": sink_mass, "index_size": len(self.index),
        }

    def search(self, query: str, k: int = 10) -> list[dict[str, Any]]:
        """memory.search: the retrieval pipeline without the relevance floor."""
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("query must be a non-empty string")
        r = self.retrieve(query, self.embedder.embed(query), k, min_relevance=0.0)
        return [{"id": c.id, "kind": c.kind, "preview": c.text[:PREVIEW_CHARS],
                 "relevance": round(c.relevance, 4), "similarity": round(c.similarity, 4),
                 "trust": c.trust, "source": c.source, "hop": c.hop} for c in r.candidates]

    # =====================================================================
    # Writes: add / delete / archive

    def _insert_node(self, conn: Connection, *, kind: str, source: str, text: str,
                     metadata: Mapping[str, Any], vec: np.ndarray, now: float, quality: float,
                     trust: float, session_id: str | None = None, request_id: str | None = None,
                     parent_id: int | None = None) -> int:
        cur = conn.execute(
            "INSERT INTO nodes(kind, source, text, metadata, text_hash, created_at, last_access_at, "
            "quality, trust, session_id, request_id, parent_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (kind, source, text, json.dumps(dict(metadata), ensure_ascii=False), _hash(kind, text), now,
             now, float(min(1.0, max(0.0, quality))), trust, session_id, request_id, parent_id))
        assert cur.lastrowid is not None
        nid = int(cur.lastrowid)
        conn.execute("INSERT INTO node_vectors(id, embedding, bits) VALUES (?,?,?)",
                     (nid, _vec_blob(vec), quantize(vec)[0].tobytes()))
        return nid

    @staticmethod
    def _upsert_edge(conn: Connection, src: int, dst: int, kind: str, weight: float, now: float) -> None:
        """Insert an edge or raise its weight; silently skips if an end no longer exists."""
        if src == dst:
            return
        conn.execute(
            "INSERT INTO edges(src, dst, kind, weight, created_at, updated_at) "
            "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?) "
            "AND EXISTS (SELECT 1 FROM nodes WHERE id = ?) "
            "ON CONFLICT(src, dst, kind) DO UPDATE SET weight = max(weight, excluded.weight), "
            "updated_at = excluded.updated_at",
            (src, dst, kind, float(min(1.0, max(0.0, weight))), now, now, src, dst))

    def _check_text(self, text: Any, what: str = "text") -> str:
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(f"{what} must be a non-empty string")
        size = len(text.encode("utf-8"))
        if size > self.cfg.max_text_bytes:
            raise TooLarge(f"{what} is {size} bytes, the limit is memory.max_text_bytes = "
                           f"{self.cfg.max_text_bytes}", limit_bytes=self.cfg.max_text_bytes,
                           size_bytes=size)
        return text

    def add(self, text: str, kind: str = "document", metadata: dict | None = None,
            session_id: str | None = None, *, source: str | None = None,
            trust: float | None = None, quality: float = 1.0) -> list[int]:
        """Store text (chunked when long); returns node ids in text order."""
        self._check_text(text)
        if kind not in NODE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(NODE_KINDS)}, got {kind!r}")
        source = source or _DEFAULT_SOURCE[kind]
        if source not in SOURCES:
            raise BadRequest(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        md = dict(metadata or {})
        try:
            json.dumps(md)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"metadata must be JSON-serialisable: {exc}") from None
        tr = default_trust(kind, source) if trust is None else float(trust)
        if not 0.0 <= tr <= 1.0 or not 0.0 <= quality <= 1.0:
            raise BadRequest("trust and quality must be in [0, 1]")
        chunks = chunk_text(text, self.cfg.chunk_tokens, self.embedder.token_offsets)
        vecs = self.embedder.embed_batch(chunks)                                   # (c, d)
        now = time.time()
        ids: list[int] = []
        with self.db.atomic() as conn:
            for i, (chunk, vec) in enumerate(zip(chunks, vecs)):
                row = conn.execute("SELECT id FROM nodes WHERE text_hash = ? AND kind = ? AND archived = 0 "
                                   "ORDER BY id LIMIT 1", (_hash(kind, chunk), kind)).fetchone()
                if row:
                    conn.execute("UPDATE nodes SET last_access_at = ? WHERE id = ?", (now, row[0]))
                    ids.append(int(row[0]))
                    continue
                cmd = dict(md)
                if len(chunks) > 1:
                    cmd.update(chunk=i, chunks=len(chunks))
                ids.append(self._insert_node(
                    conn, kind=kind, source=source, text=chunk, metadata=cmd, vec=vec, now=now,
                    quality=quality, trust=tr, session_id=session_id,
                    parent_id=ids[0] if i > 0 else None))
            for a, b in zip(ids, ids[1:]):
                self._upsert_edge(conn, a, b, "follows", 1.0, now)
        log.info("memory added", extra={"kind": kind, "chunks": len(chunks), "ids": ids[:8]})
        self._maybe_evict()
        return ids

    def add_embedded(self, texts: Sequence[str], vecs: np.ndarray, kind: str = "document", *,
                     source: str | None = None, quality: float = 1.0,
                     metadata: Mapping[str, Any] | None = None) -> list[int]:
        """Insert already-embedded texts in one transaction (imports, benchmarks).

        vecs: (n, 384) float32 unit rows. No chunking and no dedup: the caller
        vouches for the input.
        """
        vecs = np.asarray(vecs, dtype=np.float32)
        if kind not in NODE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(NODE_KINDS)}, got {kind!r}")
        if vecs.shape != (len(texts), DIM) or not np.all(np.isfinite(vecs)):
            raise BadRequest(f"vecs must be finite ({len(texts)}, {DIM}), got {vecs.shape}")
        norms = np.linalg.norm(vecs, axis=1)
        if len(texts) and not np.allclose(norms, 1.0, atol=1e-3):
            raise BadRequest("vecs must have unit L2 norm")
        source = source or _DEFAULT_SOURCE[kind]
        trust = default_trust(kind, source)
        now = time.time()
        md = dict(metadata or {})
        with self.db.atomic() as conn:
            ids = [self._insert_node(conn, kind=kind, source=source, text=self._check_text(t), metadata=md,
                                     vec=v, now=now, quality=quality, trust=trust)
                   for t, v in zip(texts, vecs)]
        self._maybe_evict()
        return ids

    def delete(self, node_id: int) -> bool:
        """Delete a node with its vector and edges (and chunks, for a document's first id)."""
        with self.db.atomic() as conn:
            n = conn.execute("DELETE FROM nodes WHERE id = ?", (int(node_id),)).rowcount
        return n > 0

    def archive(self, node_ids: Sequence[int], archived: bool = True) -> int:
        """Move nodes to (or back from) cold storage: kept, out of default search."""
        n = 0
        with self.db.atomic() as conn:
            for part in _chunks([int(i) for i in node_ids]):
                n += conn.execute(f"UPDATE nodes SET archived = ? WHERE archived != ? AND id IN "
                                  f"({_marks(len(part))})", (int(archived), int(archived), *part)).rowcount
        return n

    # =====================================================================
    # Reads: get / vectors / stats / export

    _NODE_COLS = ("id", "kind", "source", "text", "metadata", "created_at", "last_access_at",
                  "access_count", "quality", "trust", "session_id", "request_id", "parent_id", "archived")

    def _row_dict(self, r: Sequence[Any]) -> dict[str, Any]:
        d = dict(zip(self._NODE_COLS, r))
        d["metadata"] = json.loads(d["metadata"])
        d["archived"] = bool(d["archived"])
        return d

    def get(self, node_id: int) -> dict[str, Any] | None:
        r = self.db.read(f"SELECT {', '.join(self._NODE_COLS)} FROM nodes WHERE id = ?",
                         (int(node_id),)).fetchone()
        if r is None:
            return None
        d = self._row_dict(r)
        d["edges"] = [{"src": s, "dst": t, "kind": k, "weight": w, "updated_at": u} for s, t, k, w, u in
                      self.db.read("SELECT src, dst, kind, weight, updated_at FROM edges WHERE src = ? "
                                   "UNION ALL SELECT src, dst, kind, weight, updated_at FROM edges "
                                   "WHERE dst = ?", (int(node_id), int(node_id)))]
        d["chunk_ids"] = [i for (i,) in self.db.read("SELECT id FROM nodes WHERE parent_id = ? ORDER BY id",
                                                     (int(node_id),))]
        return d

    def vectors(self, node_ids: Sequence[int]) -> np.ndarray:
        """(n, 384) float32 stored vectors, in the order given (compression jobs)."""
        got = self._vectors(node_ids)
        missing = [i for i in node_ids if i not in got]
        if missing:
            raise BadRequest(f"no vector for node(s) {missing[:10]}")
        return np.stack([got[i] for i in node_ids]) if node_ids else np.zeros((0, DIM), np.float32)

    def stats(self) -> dict[str, Any]:
        self.refresh_index()
        by_kind = dict(self.db.read("SELECT kind, count(*) FROM nodes GROUP BY kind").fetchall())
        archived = self.db.read("SELECT count(*) FROM nodes WHERE archived = 1").fetchone()[0]
        edges = dict(self.db.read("SELECT kind, count(*) FROM edges GROUP BY kind").fetchall())
        corrections = self.db.read("SELECT count(*) FROM nodes WHERE kind = 'fact' AND source = 'feedback'"
                                   ).fetchone()[0]
        size = sum(p.stat().st_size for p in (self.db.path, self.db.path.with_name(self.db.path.name + "-wal"))
                   if p.exists())
        with self._counters_lock:
            counters = dict(self._counters)
        return {
            "nodes": int(sum(by_kind.values())), "nodes_by_kind": by_kind, "archived": int(archived),
            "corrections": int(corrections), "edges": int(sum(edges.values())), "edges_by_kind": edges,
            "max_nodes": self.cfg.max_nodes, "index_entries": len(self.index),
            "index_bytes": self.index.nbytes(), "db_bytes": int(size),
            "writeback": {"queued": self._wb.depth(), **self._wb.counters},
            "ranking": {"steps": self._params.steps}, "embedding_cache": self.embedder.cache_info(),
            **counters,
        }

    def export(self, after_id: int = 0, limit: int = 1000,
               include_archived: bool = True) -> tuple[list[dict[str, Any]], int]:
        """One page of nodes (with their outgoing edges) after ``after_id``; next id or 0 when done."""
        if limit < 1:
            raise BadRequest("limit must be >= 1")
        where = "" if include_archived else " AND archived = 0"
        rows = [self._row_dict(r) for r in self.db.read(
            f"SELECT {', '.join(self._NODE_COLS)} FROM nodes WHERE id > ?{where} ORDER BY id LIMIT ?",
            (int(after_id), int(limit)))]
        ids = [r["id"] for r in rows]
        out_edges: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for part in _chunks(ids):
            for s, t, k, w in self.db.read(f"SELECT src, dst, kind, weight FROM edges WHERE src IN "
                                           f"({_marks(len(part))})", part):
                out_edges[s].append({"dst": t, "kind": k, "weight": w})
        for r in rows:
            r["edges"] = out_edges[r["id"]]
        return rows, (ids[-1] if len(rows) == limit else 0)

    # =====================================================================
    # Writeback (learning loop A)

    def record_interaction(self, it: Interaction) -> None:
        """Queue an answered interaction for writeback; never blocks.

        ``it.query_vec`` is not needed here (writeback embeds "Q: ... A: ..."
        itself); it is part of the record for the router.
        """
        if not isinstance(it, Interaction):
            raise BadRequest(f"expected an Interaction, got {type(it).__name__}")
        self._wb.put(it)

    def flush(self, timeout_s: float = 10.0) -> None:
        self._wb.flush(timeout_s)

    def _write_batch(self, items: Sequence[Interaction]) -> None:
        cfg = self.cfg
        gated = [it for it in items if it.quality >= cfg.writeback_quality_threshold]
        self._count("qa_gated", len(items) - len(gated))
        vecs = self.embedder.embed_batch([qa_text(it.query, it.answer) for it in gated]) if gated \
            else np.zeros((0, DIM), np.float32)
        kn = max(cfg.same_topic_max_edges, 1) + 1
        neigh = [self._knn(v, kn) for v in vecs]
        kinds = self._kinds({i for ids, _, _ in neigh for i in ids})
        now = time.time()
        session_last: dict[str, int] = {}
        with self.db.atomic() as conn:
            uses = Counter(int(u) for it in items for u in it.used_node_ids)
            conn.executemany("UPDATE nodes SET access_count = access_count + ?, last_access_at = ? WHERE id = ?",
                             [(n, now, nid) for nid, n in sorted(uses.items())])
            fresh: list[tuple[int, np.ndarray]] = []      # written earlier in this batch
            for it, v, (nb_ids, nb_sims, _) in zip(gated, vecs, neigh):
                text = qa_text(it.query, it.answer)
                dup = next((i for i, s in zip(nb_ids, nb_sims) if kinds.get(i) == "qa_pair"
                            and s >= cfg.dedup_cosine), None)
                if dup is None:
                    dup = next((i for i, fv in fresh if float(fv @ v) >= cfg.dedup_cosine), None)
                nid = self._merge_qa(conn, dup, it, text, v, now) if dup is not None else None
                if nid is None:
                    nid = self._insert_node(conn, kind="qa_pair", source="model", text=text, metadata={},
                                            vec=v, now=now, quality=it.quality, trust=default_trust("qa_pair", "model"),
                                            session_id=it.session_id, request_id=it.request_id)
                    fresh.append((nid, v))
                    self._count("qa_written")
                else:
                    self._count("qa_deduped")
                if it.session_id:
                    prev = session_last.get(it.session_id) or self._previous_in_session(conn, it.session_id, nid)
                    if prev is not None:
                        self._upsert_edge(conn, prev, nid, "follows", 1.0, now)
                    session_last[it.session_id] = nid
                topical = [(i, float(s)) for i, s in zip(nb_ids, nb_sims)]
                topical += [(i, float(fv @ v)) for i, fv in fresh]
                topical = [(i, s) for i, s in topical if i != nid and s >= cfg.same_topic_cosine]
                for oid, s in sorted(topical, key=lambda t: -t[1])[:cfg.same_topic_max_edges]:
                    self._upsert_edge(conn, nid, oid, "same_topic", s, now)
                for u in it.used_node_ids:
                    self._upsert_edge(conn, int(u), nid, "answered_by", ANSWERED_BY_WEIGHT, now)
        for sid, nid in session_last.items():
            self._last_qa[sid] = nid
            self._last_qa.move_to_end(sid)
            while len(self._last_qa) > 10_000:
                self._last_qa.popitem(last=False)
        self._maybe_evict()

    def _merge_qa(self, conn: Connection, dup: int, it: Interaction, text: str, v: np.ndarray,
                  now: float) -> int | None:
        """Near-duplicate: the better answer wins; returns the id, or None if it vanished."""
        row = conn.execute("SELECT quality FROM nodes WHERE id = ? AND archived = 0", (dup,)).fetchone()
        if row is None:
            return None
        if it.quality > row[0]:
            conn.execute("UPDATE nodes SET text = ?, text_hash = ?, quality = ?, request_id = ?, "
                         "last_access_at = ?, access_count = access_count + 1 WHERE id = ?",
                         (text, _hash("qa_pair", text), it.quality, it.request_id, now, dup))
            conn.execute("UPDATE node_vectors SET embedding = ?, bits = ? WHERE id = ?",
                         (_vec_blob(v), quantize(v)[0].tobytes(), dup))
        else:
            conn.execute("UPDATE nodes SET last_access_at = ?, access_count = access_count + 1 WHERE id = ?",
                         (now, dup))
        return dup

    def _previous_in_session(self, conn: Connection, session_id: str, nid: int) -> int | None:
        prev = self._last_qa.get(session_id)
        if prev is not None and prev != nid and conn.execute(
                "SELECT 1 FROM nodes WHERE id = ?", (prev,)).fetchone():
            return prev
        row = conn.execute("SELECT id FROM nodes WHERE session_id = ? AND kind = 'qa_pair' AND id != ? "
                           "ORDER BY id DESC LIMIT 1", (session_id, nid)).fetchone()
        return int(row[0]) if row else None

    def _kinds(self, ids: Iterable[int]) -> dict[int, str]:
        ids = list(ids)
        out: dict[int, str] = {}
        for part in _chunks(ids):
            out.update(self.db.read(f"SELECT id, kind FROM nodes WHERE id IN ({_marks(len(part))})", part))
        return out

    # =====================================================================
    # Feedback

    def apply_feedback(self, request_id: str, used_node_ids: list[int], rating: int | None,
                       correction: str | None, query: str, answer: str,
                       session_id: str | None) -> dict[str, Any]:
        """Apply a rating and/or correction durably; returns what changed.

        Rating: the request's qa_pair and the used memories move towards the
        rating, the edges among them strengthen (4-5) or weaken (1-2).
        Correction: a trusted fact (see module docstring). Then one ranking
        training step. Do not call inside an open db.atomic() block.
        """
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)
                                   or not 1 <= rating <= 5):
            raise BadRequest(f"rating must be an integer 1-5, got {rating!r}")
        if correction is not None:
            self._check_text(correction, "correction")
            correction = correction.strip()
        if rating is None and correction is None:
            raise BadRequest("feedback needs a rating, a correction or both")
        try:
            self.flush(FEEDBACK_FLUSH_S)
        except Timeout:
            # The answer's qa_pair may be unwritten; the near-duplicate lookup below
            # still finds an earlier copy, and the rating/correction are applied anyway.
            log.warning("writeback not drained before feedback", extra={"request_id": request_id})
        query = query or ""
        qvec = self.embedder.embed(query) if query.strip() else None
        fact_vec = self.embedder.embed(_fact_embed_text(query, correction)) if correction else None
        qa_vec = self.embedder.embed(qa_text(query, answer)) if query.strip() and answer else None
        # Candidates for the lookups are found on the committed state, outside the write lock.
        qa_guess = self._knn(qa_vec, 3)[0:2] if qa_vec is not None else ([], np.zeros(0))
        fact_guess = self._knn(fact_vec, 3)[0:2] if fact_vec is not None else ([], np.zeros(0))
        now = time.time()
        out: dict[str, Any] = {"qa_node_id": None, "fact_id": None, "nodes_updated": 0, "edges_updated": 0}
        with self.db.atomic() as conn:
            row = conn.execute("SELECT id FROM nodes WHERE request_id = ? AND kind = 'qa_pair' "
                               "ORDER BY id DESC LIMIT 1", (request_id,)).fetchone()
            qa_id = int(row[0]) if row else None
            if qa_id is None:
                qa_id = self._first_of_kind(conn, *qa_guess, kind="qa_pair", source=None)
            out["qa_node_id"] = qa_id
            used = [int(u) for u in used_node_ids
                    if conn.execute("SELECT 1 FROM nodes WHERE id = ?", (int(u),)).fetchone()]
            if rating is not None:
                tgt = rating_target(rating)
                if qa_id is not None:
                    conn.execute("UPDATE nodes SET quality = quality + ? * (? - quality) WHERE id = ?",
                                 (QA_FEEDBACK_RATE, tgt, qa_id))
                    out["nodes_updated"] += 1
                for u in used:
                    out["nodes_updated"] += conn.execute(
                        "UPDATE nodes SET quality = quality + ? * (? - quality) WHERE id = ? "
                        "AND source != 'feedback'", (USED_FEEDBACK_RATE, tgt, u)).rowcount
                group = sorted(set(used) | ({qa_id} if qa_id is not None else set()))
                if len(group) > 1:
                    m = _marks(len(group))
                    for s, d, k, w in conn.execute(f"SELECT src, dst, kind, weight FROM edges WHERE src IN ({m}) "
                                                   f"AND dst IN ({m})", (*group, *group)).fetchall():
                        conn.execute("UPDATE edges SET weight = ?, updated_at = ? WHERE src = ? AND dst = ? "
                                     "AND kind = ?", (adjust_weight(w, rating, EDGE_STEP), now, s, d, k))
                        out["edges_updated"] += 1
            if correction:
                assert fact_vec is not None
                fact_id = self._store_correction(conn, correction, query, request_id, session_id,
                                                 fact_vec, fact_guess, now)
                out["fact_id"] = fact_id
                if qa_id is not None:
                    self._upsert_edge(conn, fact_id, qa_id, "derived", 1.0, now)
                    conn.execute("UPDATE nodes SET archived = 1, quality = 0.0, metadata = "
                                 "json_set(metadata, '$.superseded_by', ?) WHERE id = ?", (fact_id, qa_id))
                    out["edges_updated"] += 1
        self._count("feedback")
        if qvec is not None:
            out["ranking_loss"] = self._train_ranking(qvec, rating, out["fact_id"], used, qa_id)
        log.info("feedback applied", extra={"request_id": request_id, "rating": rating,
                                            "correction": correction is not None,
                                            "fact_id": out["fact_id"], "qa_node_id": qa_id})
        return out

    @staticmethod
    def _first_of_kind(conn: Connection, ids: Sequence[int], sims: np.ndarray, *, kind: str,
                       source: str | None, min_sim: float = 0.95) -> int | None:
        for i, s in zip(ids, sims):
            if s < min_sim:
                break
            r = conn.execute("SELECT kind, source FROM nodes WHERE id = ? AND archived = 0", (i,)).fetchone()
            if r and r[0] == kind and (source is None or r[1] == source):
                return int(i)
        return None

    def _store_correction(self, conn: Connection, correction: str, question: str, request_id: str,
                          session_id: str | None, vec: np.ndarray, guess: tuple, now: float) -> int:
        """Exact or near-duplicate corrections update the existing fact: the newest wins."""
        md = {"question": question.strip()[:2000], "request_id": request_id}
        row = conn.execute("SELECT id FROM nodes WHERE text_hash = ? AND kind = 'fact' AND source = 'feedback' "
                           "AND archived = 0 ORDER BY id LIMIT 1", (_hash("fact", correction),)).fetchone()
        fid = int(row[0]) if row else self._first_of_kind(conn, *guess, kind="fact", source="feedback",
                                                           min_sim=self.cfg.dedup_cosine)
        if fid is not None:
            conn.execute("UPDATE nodes SET text = ?, text_hash = ?, metadata = ?, request_id = ?, "
                         "last_access_at = ?, quality = 1.0 WHERE id = ?",
                         (correction, _hash("fact", correction), json.dumps(md, ensure_ascii=False),
                          request_id, now, fid))
            conn.execute("UPDATE node_vectors SET embedding = ?, bits = ? WHERE id = ?",
                         (_vec_blob(vec), quantize(vec)[0].tobytes(), fid))
            return fid
        self._count("facts")
        return self._insert_node(conn, kind="fact", source="feedback", text=correction, metadata=md, vec=vec,
                                 now=now, quality=1.0, trust=default_trust("fact", "feedback"),
                                 session_id=session_id, request_id=request_id)

    # =====================================================================
    # Ranking parameters

    def _load_params(self) -> ranking.RankingParams:
        row = self.db.read("SELECT value FROM memory_meta WHERE key = 'ranking_params'").fetchone()
        if row is None:
            return ranking.initial_params(self.cfg.attention_heads)
        try:
            return ranking.RankingParams.from_json(row[0], self.cfg.attention_heads)
        except (ValueError, KeyError, TypeError):
            log.warning("stored ranking parameters unreadable, using initial ones")
            return ranking.initial_params(self.cfg.attention_heads)

    @property
    def ranking_params(self) -> ranking.RankingParams:
        return self._params

    def _train_ranking(self, qvec: np.ndarray, rating: int | None, fact_id: int | None,
                       used: list[int], qa_id: int | None) -> float | None:
        """One listwise step: towards the correction, the used memories (good rating) or the sink."""
        if fact_id is not None:
            positive, weight = [fact_id], 1.0
        elif rating is not None and rating != 3:
            positive, weight = (used if rating > 3 else []), abs(rating - 3) / 2.0
        else:
            return None
        g = self._gather(qvec, self.cfg.knn_k, force_ids=positive)
        if not g.ids:
            return None
        mask = np.array([i != qa_id for i in g.ids], bool)   # the answer being rated is not evidence
        pos_idx = [j for j, i in enumerate(g.ids) if i in set(positive)]
        if positive and not pos_idx:
            return None
        target = ranking.target_for(mask, pos_idx)
        E = self._features(g, time.time())
        with self._params_lock:
            new, loss = ranking.train_step(self._params, g.sims, E, mask, target,
                                           lr=self.cfg.ranking_learning_rate, l2=self.cfg.ranking_l2,
                                           anchor=self._anchor, weight=weight)
            with self.db.atomic() as conn:
                conn.execute("INSERT INTO memory_meta(key, value, updated_at) VALUES ('ranking_params', ?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                             "updated_at = excluded.updated_at", (new.to_json(), time.time()))
            self._params = new
        return loss

    # =====================================================================
    # Maintenance jobs

    def decay_edges(self, now: float | None = None) -> int:
        """Idle job: decay learned edges by their idle time; drop those below min weight.

        Returns the number of edges removed. Also trims the vector change log.
        """
        now = time.time() if now is None else now
        kinds = _marks(len(DECAYING_KINDS))
        with self.db.atomic() as conn:
            conn.execute(f"UPDATE edges SET weight = weight * pow(0.5, (? - updated_at) / ?), updated_at = ? "
                         f"WHERE kind IN ({kinds}) AND updated_at < ? - 3600",
                         (now, self.cfg.edge_half_life_days * SECONDS_PER_DAY, now, *DECAYING_KINDS, now))
            removed = conn.execute(f"DELETE FROM edges WHERE kind IN ({kinds}) AND weight < ?",
                                   (*DECAYING_KINDS, self.cfg.edge_min_weight)).rowcount
            conn.execute("DELETE FROM vec_log WHERE seq <= (SELECT max(seq) FROM vec_log) - ?", (VEC_LOG_KEEP,))
        self._count("edges_decayed", removed)
        return removed

    def node_count(self) -> int:
        return int(self.db.read("SELECT count(*) FROM nodes").fetchone()[0])

    def _maybe_evict(self) -> None:
        try:
            if self.node_count() > self.cfg.max_nodes:
                self.evict()
        except StorageError:
            log.warning("eviction failed, will retry on the next write")

    def evict(self) -> int:
        """Capacity job: past max_nodes, delete the lowest quality x recency x use.

        Facts (user corrections included) and documents are never evicted. Runs
        down to ``evict_low_water_fraction`` of max_nodes. Returns nodes deleted.
        """
        with self.db.atomic() as conn:
            total = int(conn.execute("SELECT count(*) FROM nodes").fetchone()[0])
            if total <= self.cfg.max_nodes:
                return 0
            need = total - int(self.cfg.max_nodes * self.cfg.evict_low_water_fraction)
            victims = self._victims(conn, need)
            for part in _chunks(victims):
                conn.execute(f"DELETE FROM nodes WHERE id IN ({_marks(len(part))})", part)
        if len(victims) < need:
            log.warning("memory over capacity but only protected nodes remain",
                        extra={"nodes": total - len(victims), "max_nodes": self.cfg.max_nodes})
        self._count("evicted", len(victims))
        log.info("memory evicted", extra={"evicted": len(victims), "nodes_before": total})
        return len(victims)

    def _victims(self, conn: Connection, need: int) -> list[int]:
        params: dict[str, Any] = {f"k{i}": k for i, k in enumerate(PROTECTED_KINDS)}
        params.update(now=time.time(), half_life_days=self.cfg.evict_recency_half_life_days, need=need)
        kinds = ",".join(f":k{i}" for i in range(len(PROTECTED_KINDS)))
        return [int(r[0]) for r in conn.execute(
            f"SELECT id FROM nodes WHERE kind NOT IN ({kinds}) AND source != 'feedback' "
            f"ORDER BY {NODE_VALUE_SQL} ASC, id ASC LIMIT :need", params)]

    # =====================================================================
    # Compression (learning loop C; the rules are in compress.py)

    def meta_get(self, key: str) -> str | None:
        """A small persistent value of the memory subsystem (memory_meta)."""
        row = self.db.read("SELECT value FROM memory_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        with self.db.atomic() as conn:
            conn.execute("INSERT INTO memory_meta(key, value, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                         "updated_at = excluded.updated_at", (key, value, time.time()))

    def compression_candidates(self, *, created_before: float, min_edge_weight: float, limit: int,
                               after_id: int = 0) -> CandidateSet:
        """Eligible nodes with their vectors and the qualifying links among them.

        Eligible: a compressible kind, not archived, created before
        ``created_before``, not already in a concept, with at least one
        qualifying link (cluster edge kinds, weight >= ``min_edge_weight``) to
        another eligible node. At most ``limit`` of them, by id after
        ``after_id``; ``next_after_id`` continues the scan (0 = start over), so
        a window that never clusters cannot stall compression.
        """
        if limit < 1:
            raise BadRequest("limit must be >= 1")
        params: dict[str, Any] = {f"k{i}": k for i, k in enumerate(COMPRESSIBLE_KINDS)}
        params.update({f"e{i}": k for i, k in enumerate(CLUSTER_EDGE_KINDS)})
        params.update(before=float(created_before), w=float(min_edge_weight), after=int(after_id),
                      limit=int(limit))
        kinds = ",".join(f":k{i}" for i in range(len(COMPRESSIBLE_KINDS)))
        ekinds = ",".join(f":e{i}" for i in range(len(CLUSTER_EDGE_KINDS)))
        eligible = (f"SELECT n.id FROM nodes n WHERE n.kind IN ({kinds}) AND n.archived = 0 "
                    f"AND n.created_at < :before AND NOT EXISTS (SELECT 1 FROM edges c "
                    f"WHERE c.dst = n.id AND c.kind = 'contains')")
        linked = (f"WITH elig AS MATERIALIZED ({eligible}), "
                  f"pairs AS (SELECT e.src AS a, e.dst AS b FROM edges e JOIN elig x ON x.id = e.src "
                  f"JOIN elig y ON y.id = e.dst WHERE e.kind IN ({ekinds}) AND e.weight >= :w) "
                  f"SELECT DISTINCT id FROM (SELECT a AS id FROM pairs UNION SELECT b FROM pairs) "
                  f"WHERE id > :after ORDER BY id LIMIT :limit")
        ids = [int(r[0]) for r in self.db.read(linked, params)]
        nxt = ids[-1] if len(ids) == limit else 0
        edges: list[EdgeRow] = []
        for part in _chunks(ids):
            m = _marks(len(part))
            edges.extend((int(a), int(b), k, float(w)) for a, b, k, w in self.db.read(
                f"SELECT src, dst, kind, weight FROM edges WHERE src IN ({m}) AND kind IN "
                f"({_marks(len(CLUSTER_EDGE_KINDS))}) AND weight >= ?",
                (*part, *CLUSTER_EDGE_KINDS, float(min_edge_weight))))
        known = set(ids)
        edges = [e for e in edges if e[1] in known]
        vecs = self.vectors(ids)                                                  # (n, d)
        return CandidateSet(ids, vecs, edges, nxt)

    def node_texts(self, node_ids: Sequence[int]) -> dict[int, str]:
        """id -> text of the given nodes that exist and are not archived."""
        out: dict[int, str] = {}
        for part in _chunks([int(i) for i in node_ids]):
            out.update((int(i), t) for i, t in self.db.read(
                f"SELECT id, text FROM nodes WHERE archived = 0 AND id IN ({_marks(len(part))})", part))
        return out

    def add_concept(self, text: str, vec: np.ndarray, member_ids: Sequence[int], *,
                    archive_before: float | None = None,
                    metadata: Mapping[str, Any] | None = None) -> ConceptWrite:
        """Write a concept over ``member_ids`` in ONE transaction.

        Inserts the concept node (kind concept, source learning, trust 0.6,
        quality = the members' mean), a ``contains`` edge concept -> each member
        (weight = cosine of the member with the concept, floored at 0), and
        archives the members whose last access is before ``archive_before``
        (None: archive none). Only qa_pair/query/agent_step members that are not
        corrections are ever archived; other kinds are linked but stay
        searchable. Raises MembersChanged, writing nothing, when a member is
        gone, archived, or already in a concept.
        """
        self._check_text(text, "concept text")
        v = np.asarray(vec, dtype=np.float32)
        if v.shape != (DIM,) or not np.all(np.isfinite(v)) or abs(float(np.linalg.norm(v)) - 1.0) > 1e-3:
            raise BadRequest(f"concept vector must be a finite unit ({DIM},) vector")
        members = [int(i) for i in member_ids]
        if not members or len(set(members)) != len(members):
            raise BadRequest("a concept needs at least one member and no repeated ids")
        md = dict(metadata or {})
        md["members"] = len(members)
        try:
            json.dumps(md)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"metadata must be JSON-serialisable: {exc}") from None
        now = time.time()
        with self.db.atomic() as conn:
            rows: dict[int, tuple] = {}
            for part in _chunks(members):
                m = _marks(len(part))
                for r in conn.execute(
                        f"SELECT n.id, n.kind, n.source, n.archived, n.last_access_at, n.quality, v.embedding, "
                        f"EXISTS (SELECT 1 FROM edges c WHERE c.dst = n.id AND c.kind = 'contains') "
                        f"FROM nodes n JOIN node_vectors v ON v.id = n.id WHERE n.id IN ({m})", part):
                    rows[int(r[0])] = r[1:]
            bad = {i: ("missing" if i not in rows else "archived" if rows[i][2] else "in a concept")
                   for i in members if i not in rows or rows[i][2] or rows[i][6]}
            if bad:
                raise MembersChanged(f"{len(bad)} member(s) changed since the cluster was read",
                                     members={str(k): why for k, why in list(bad.items())[:10]})
            quality = float(np.mean([rows[i][4] for i in members]))
            cid = self._insert_node(conn, kind="concept", source="learning", text=text.strip(), metadata=md,
                                    vec=v, now=now, quality=quality, trust=default_trust("concept", "learning"))
            for i in members:
                mv = np.frombuffer(rows[i][5], dtype="<f4")
                self._upsert_edge(conn, cid, i, "contains", max(0.0, float(mv @ v)), now)
            archive = [i for i in members if archive_before is not None and rows[i][0] in COMPRESSIBLE_KINDS
                       and rows[i][1] != "feedback" and rows[i][3] < archive_before]
            for part in _chunks(archive):
                conn.execute(f"UPDATE nodes SET archived = 1, metadata = json_set(metadata, '$.compressed_into', ?) "
                             f"WHERE id IN ({_marks(len(part))})", (cid, *part))
        self._count("concepts_written")
        self._count("compressed_archived", len(archive))
        return ConceptWrite(cid, tuple(members), tuple(archive))

    def archive_compressed(self, before: float) -> int:
        """Archive members of existing concepts whose last access is before ``before``.

        Members too recently used when their concept was written stay
        searchable until they, too, go unused this long. Same kind rules as
        ``add_concept``. Returns the number archived.
        """
        params: dict[str, Any] = {f"k{i}": k for i, k in enumerate(COMPRESSIBLE_KINDS)}
        params["before"] = float(before)
        kinds = ",".join(f":k{i}" for i in range(len(COMPRESSIBLE_KINDS)))
        with self.db.atomic() as conn:
            n = conn.execute(
                f"UPDATE nodes SET archived = 1, metadata = json_set(metadata, '$.compressed_into', "
                f"(SELECT min(c.src) FROM edges c WHERE c.dst = nodes.id AND c.kind = 'contains')) "
                f"WHERE archived = 0 AND kind IN ({kinds}) AND source != 'feedback' "
                f"AND last_access_at < :before AND id IN (SELECT dst FROM edges WHERE kind = 'contains')",
                params).rowcount
        self._count("compressed_archived", n)
        return int(n)

    def undo_concept(self, concept_id: int) -> int:
        """Undo one compression: bring its archived members back into search and delete the concept.

        Returns the number of members restored. NotFound for an unknown id,
        BadRequest for a node that is not a concept.
        """
        with self.db.atomic() as conn:
            row = conn.execute("SELECT kind FROM nodes WHERE id = ?", (int(concept_id),)).fetchone()
            if row is None:
                raise NotFound(f"no memory node {concept_id}", id=int(concept_id))
            if row[0] != "concept":
                raise BadRequest(f"node {concept_id} is a {row[0]}, not a concept")
            n = conn.execute(
                "UPDATE nodes SET archived = 0, metadata = json_remove(metadata, '$.compressed_into') "
                "WHERE archived = 1 AND json_extract(metadata, '$.compressed_into') = ? AND id IN "
                "(SELECT dst FROM edges WHERE src = ? AND kind = 'contains')",
                (int(concept_id), int(concept_id))).rowcount
            conn.execute("DELETE FROM nodes WHERE id = ?", (int(concept_id),))
        return int(n)

    # =====================================================================

    def _count(self, key: str, n: int = 1) -> None:
        with self._counters_lock:
            self._counters[key] = self._counters.get(key, 0) + n

    def close(self) -> None:
        """Drain the writeback queue and stop its thread (the Database stays open)."""
        self._wb.close()
