"""Finding memories for a query: dense KNN + BM25, graph expansion, features, ranking.

The pipeline of one ``retrieve``:
1. Two candidate pools. Dense: a binary coarse pass over the in-RAM code
   mirror keeps ``k * coarse_factor`` ids; their float32 vectors are read
   from SQLite by primary key and rescored exactly (bitindex.py says why).
   Lexical: SQLite's FTS5 (BM25, porter stems) over the same nodes
   (migration 0006). Dense similarity alone ranks "the garage code" above
   "the front gate code" for a gate question; shared rare words do not.
2. Graph expansion (graph.expand) from the best seeds of both pools, fused
   by reciprocal rank, over edges whose other end is searchable: a note's
   neighbouring lines (``follows``), a conversation's neighbouring turns.
3. Edge and evidence features per candidate and graph-attention ranking
   (ranking.py), with its "none of these" sink so relevance means the same
   across queries; a model's answer is capped below the user's own record on
   the same subject (provenance).
4. Near-duplicates dropped, the relevance floor applied.

Split notes (memory/splitting.py) keep a parent node with the whole text
(metadata ``parts``); parents are never candidates - the lines are - and a
line inherits its note's first line as ``context``.

The ``Retriever`` does the reads (steps 1-2); ``features``, ``rank`` and
``retrieval_stats`` are plain functions of what it gathered. The ranking
parameters come in as plain data: feedback.py trains them.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .. import ranking
from ..answer.text import STOP, content_terms, stem, tokens
from ..config import MemoryConfig
from ..errors import BadRequest
from .bitindex import drop_near_duplicates, quantize, rescore, similarity_stats
from .db import Database
from .graph import SECONDS_PER_DAY, Reached, expand
from .index_sync import IndexSync
from .nodes import chunks, marks, read_vectors
from .types import DIM, NODE_KINDS, TRUSTED_FACT_MIN, Candidate, EdgeRow, Retrieval

__all__ = ["Retriever", "Gathered", "Candidate", "Retrieval", "Filters", "features", "rank",
           "search_rows", "fts_query", "cover"]

log = logging.getLogger(__name__)

PREVIEW_CHARS = 160
EXPAND_EDGE_LIMIT = 5000   # edges read per expansion step: a hub cannot stall a query
RRF_K = 60                 # reciprocal rank fusion constant (Cormack et al. 2009)
DF_CAP = 5000              # document frequencies are counted up to this (idf saturates)
LEXICAL_MAX_DF = 2000      # the BM25 pool leaves out words more records hold (fts_query)
# Split parents (the whole note) are never candidates: their lines are.
SEARCHABLE = "n.archived = 0 AND json_extract(n.metadata, '$.parts') IS NULL"
USER_TIER = ("user", "feedback")

# (ids, sims, vecs) of a KNN, best first: list[int], (n,) float64, (n, d) float32
Hits = tuple[list[int], np.ndarray, np.ndarray]
_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@dataclass(frozen=True)
class Filters:
    """``memory.search`` filters: node kinds, and metadata key = value (all must hold)."""

    kinds: tuple[str, ...] = ()
    metadata: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, kinds: Sequence[str] | None = None,
           metadata: Mapping[str, Any] | None = None) -> "Filters":
        ks = tuple(kinds or ())
        for k in ks:
            if k not in NODE_KINDS:
                raise BadRequest(f"kind must be one of {', '.join(NODE_KINDS)}, got {k!r}", field="kind")
        md = []
        for key, value in (metadata or {}).items():
            if not isinstance(key, str) or not _KEY.match(key):
                raise BadRequest("metadata filter keys are 1-64 letters, digits or _", field="metadata")
            if not isinstance(value, (str, int, float, bool)) or value is None:
                raise BadRequest(f"metadata filter {key!r} must be a str, int, num or bool",
                                 field=f"metadata.{key}")
            md.append((key, value))
        return cls(ks, tuple(md))

    def sql(self) -> tuple[str, list[Any]]:
        """An ``AND ...`` clause over alias ``n`` and its parameters."""
        parts: list[str] = []
        params: list[Any] = []
        if self.kinds:
            parts.append(f"n.kind IN ({marks(len(self.kinds))})")
            params.extend(self.kinds)
        for key, value in self.metadata:
            parts.append(f"json_extract(n.metadata, '$.{key}') = ?")
            params.append(int(value) if isinstance(value, bool) else value)
        return ("".join(f" AND {p}" for p in parts), params)


NO_FILTERS = Filters()


def fts_word(token: str) -> str:
    """A token made safe to quote in an FTS5 MATCH expression ("" when nothing is left)."""
    return re.sub(r'["*^:()]', "", token)


def fts_query(question: str, df: Mapping[str, int] | None = None,
              max_df: int = LEXICAL_MAX_DF) -> str | None:
    """An FTS5 MATCH expression: any of the question's content words, each quoted.

    With ``df`` (stem -> records holding it), words held by more than
    ``max_df`` records are left out, keeping at least the two rarest: FTS5
    scores every record a word matches before ``ORDER BY rank LIMIT``, so at
    100K records one common word cost ~10 ms a search and changed little in
    the top 40 (its idf is near zero). Below ``max_df`` records nothing is
    ever left out.
    """
    words = [t for t in dict.fromkeys(tokens(question)) if t not in STOP and len(t) > 1]
    if df:
        rare = [t for t in words if df.get(stem(t), 0) <= max_df]
        if len(rare) < min(2, len(words)):
            keep = set(sorted(words, key=lambda t: df.get(stem(t), 0))[:2])
            rare = [t for t in words if t in keep]
        words = rare
    words = [w for w in map(fts_word, words) if w]
    return " OR ".join(f'"{w}"' for w in words[:32]) or None


def cover(question: str, record: str, df: Mapping[str, int], n_docs: int) -> float:
    """Idf-weighted share of the question's content words found in the record (0..1)."""
    return float(covers(question, [record], df, n_docs)[0])


def covers(question: str, records: Sequence[str], df: Mapping[str, int], n_docs: int) -> np.ndarray:
    """``cover`` of many records: (n,) float64; the question's idf is computed once."""
    qt = list(dict.fromkeys(content_terms(question)))
    if not qt:
        return np.zeros(len(records))
    idf = {t: math.log(1.0 + (n_docs + 1.0) / (df.get(t, 0) + 0.5)) for t in qt}
    total = sum(idf.values()) or 1.0
    out = np.zeros(len(records))
    for j, r in enumerate(records):
        rt = set(content_terms(r))
        out[j] = sum(v for t, v in idf.items() if t in rt) / total
    return out


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
    lexical: np.ndarray = field(default_factory=lambda: np.zeros(0))   # (n,) 1 = in the BM25 pool
    cover: np.ndarray = field(default_factory=lambda: np.zeros(0))     # (n,)
    context: dict[int, str] = field(default_factory=dict)             # id -> its note's first line
    df: dict[str, int] = field(default_factory=dict)
    n_docs: int = 0


def _no_hits() -> Hits:
    return [], np.zeros(0), np.zeros((0, DIM), np.float32)


class Retriever:
    """The reads of a search: both candidate pools and graph expansion."""

    def __init__(self, db: Database, sync: IndexSync, cfg: MemoryConfig) -> None:
        self.db = db
        self.sync = sync
        self.cfg = cfg

    def knn(self, qvec: np.ndarray, k: int, exclude: Iterable[int] = (),
            filters: Filters = NO_FILTERS, coarse: int | None = None) -> Hits:
        """(ids, sims, vecs) of the k most similar searchable nodes, best first.

        ``coarse`` overrides how many ids the binary pass keeps for rescoring
        (k * coarse_factor by default).
        """
        assert qvec.shape == (DIM,), qvec.shape
        self.sync.refresh()
        skip = set(exclude)
        kc = (coarse or max(k, k * self.cfg.coarse_factor)) + len(skip)
        if filters != NO_FILTERS:
            kc *= 4                       # filters drop part of the coarse pool
        coarse_ids, _ = self.sync.index.search(quantize(qvec)[0], kc)
        coarse = [int(i) for i in coarse_ids if int(i) not in skip]
        if not coarse:
            return _no_hits()
        where, fparams = filters.sql()
        ids: list[int] = []
        blobs: list[bytes] = []
        for part in chunks(coarse):
            for nid, emb in self.db.read(
                    f"SELECT v.id, v.embedding FROM node_vectors v JOIN nodes n ON n.id = v.id "
                    f"WHERE {SEARCHABLE}{where} AND v.id IN ({marks(len(part))})", [*fparams, *part]):
                ids.append(nid)
                blobs.append(emb)
        if not ids:
            return _no_hits()
        vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), DIM)     # (m, d)
        order, sims = rescore(qvec.astype(np.float32), vecs, k)
        return [ids[i] for i in order], sims.astype(np.float64), vecs[order]

    def lexical(self, query: str, n: int, filters: Filters = NO_FILTERS,
                df: Mapping[str, int] | None = None) -> list[int]:
        """Ids of the n best BM25 matches among searchable nodes, best first
        (``df``: document_frequencies' counts, to leave out the commonest words)."""
        q = fts_query(query, df)
        if not q or n < 1:
            return []
        where, fparams = filters.sql()
        try:
            rows = self.db.read(
                f"SELECT f.rowid FROM nodes_fts f JOIN nodes n ON n.id = f.rowid "
                f"WHERE nodes_fts MATCH ? AND {SEARCHABLE}{where} ORDER BY f.rank LIMIT ?",
                [q, *fparams, n]).fetchall()
        except Exception as e:  # noqa: BLE001 - a query FTS cannot parse finds nothing lexically
            log.debug("fts query failed", extra={"error": type(e).__name__})
            return []
        return [int(r[0]) for r in rows]

    def document_frequencies(self, query: str) -> tuple[dict[str, int], int]:
        """(stem -> records holding it, number of records) for the question's words."""
        n_docs = int(self.db.read("SELECT coalesce(sum(n), 0) FROM node_counts WHERE archived = 0"
                                  ).fetchone()[0])
        df: dict[str, int] = {}
        wanted = set(content_terms(query))
        for t in dict.fromkeys(tokens(query)):
            s = stem(t)
            if s not in wanted or s in df:
                continue
            w = fts_word(t)
            if not w:
                continue
            try:
                df[s] = int(self.db.read(
                    "SELECT count(*) FROM (SELECT 1 FROM nodes_fts WHERE nodes_fts MATCH ? LIMIT ?)",
                    (f'"{w}"', DF_CAP)).fetchone()[0])
            except Exception:  # noqa: BLE001
                df[s] = 0
        return df, max(n_docs, max(df.values(), default=0))

    def neighbours(self, ids: Sequence[int]) -> list[EdgeRow]:
        """Edges from or to ``ids`` whose other end is searchable.

        Archived nodes (compressed members, corrected answers) and split
        parents must neither become candidates nor bridge a second hop.
        """
        out: list[EdgeRow] = []
        for part in chunks(list(ids)):
            m = marks(len(part))
            out.extend(self.db.read(
                f"SELECT e.src, e.dst, e.kind, e.weight FROM edges e JOIN nodes n "
                f"ON n.id = e.dst AND {SEARCHABLE} WHERE e.src IN ({m}) "
                f"UNION ALL SELECT e.src, e.dst, e.kind, e.weight FROM edges e JOIN nodes n "
                f"ON n.id = e.src AND {SEARCHABLE} WHERE e.dst IN ({m}) LIMIT {EXPAND_EDGE_LIMIT}",
                [*part, *part]).fetchall())
        return out

    def node_rows(self, ids: Sequence[int], filters: Filters = NO_FILTERS) -> dict[int, tuple]:
        where, fparams = filters.sql()
        rows: dict[int, tuple] = {}
        for part in chunks(list(ids)):
            for r in self.db.read(
                    f"SELECT n.id, n.kind, n.source, n.text, n.metadata, n.created_at, n.quality, n.trust "
                    f"FROM nodes n WHERE {SEARCHABLE}{where} AND n.id IN ({marks(len(part))})",
                    [*fparams, *part]):
                rows[r[0]] = r[1:]
        return rows

    def contexts(self, rows: Mapping[int, tuple]) -> dict[int, str]:
        """id -> text a record inherits: the first line of the note a line was
        split from (its title), or the question a correction answered."""
        parents: dict[int, int] = {}
        out: dict[int, str] = {}
        for nid, r in rows.items():
            md = json.loads(r[3])
            pid = md.get("parent_id")
            if isinstance(pid, int):
                parents[nid] = pid
            elif r[1] == "feedback" and isinstance(md.get("question"), str):
                out[nid] = md["question"][:200]
        if not parents:
            return out
        first: dict[int, str] = {}
        for part in chunks(list(set(parents.values()))):
            for pid, text in self.db.read(f"SELECT id, text FROM nodes WHERE id IN ({marks(len(part))})",
                                          part):
                first[pid] = text.strip().splitlines()[0][:200] if text.strip() else ""
        out.update({nid: first.get(pid, "") for nid, pid in parents.items()})
        return out

    def gather(self, qvec: np.ndarray, k: int, force_ids: Sequence[int] = (), *, query: str = "",
               filters: Filters = NO_FILTERS) -> Gathered:
        """Dense and BM25 hits, then what graph expansion reaches, then ``force_ids`` (training)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        # The dense pool's tail only needs to be roughly right (the ranking and the
        # BM25 pool decide), so its coarse pass keeps 5 per pool slot, at least
        # k * coarse_factor: the top k stay exact (recall@10 0.98-1.0, docs/memory.md).
        n_dense = max(k, cfg.dense_candidates)
        hit_ids, hit_sims, hit_vecs = self.knn(qvec, n_dense, filters=filters,
                                               coarse=max(k * cfg.coarse_factor, 5 * n_dense))
        df, n_docs = self.document_frequencies(query) if query else ({}, 0)
        lex_ids = self.lexical(query, cfg.lexical_candidates, filters, df) if query else []
        t1 = time.perf_counter()
        # Reciprocal rank fusion orders the seeds of the graph step.
        rrf: dict[int, float] = {}
        for ranked in (hit_ids, lex_ids):
            for r, i in enumerate(ranked):
                rrf[i] = rrf.get(i, 0.0) + 1.0 / (RRF_K + r + 1)
        pool = list(dict.fromkeys([*hit_ids, *lex_ids]))
        edges: list[EdgeRow] = []

        def neighbours(ids: Sequence[int]) -> list[EdgeRow]:
            rows = self.neighbours(ids)
            edges.extend(rows)
            return rows

        dense_sim = dict(zip(hit_ids, hit_sims.tolist()))
        seeds = sorted(pool, key=lambda i: -rrf[i])[:cfg.expand_seeds]
        reached: dict[int, Reached] = {}
        if cfg.graph_hops > 0 and seeds and cfg.max_candidates:
            # A lexical-only seed's similarity is read below; until then it
            # propagates the weakest dense hit's (a neutral prior).
            floor = min(dense_sim.values()) if dense_sim else 0.0
            reached = expand({i: dense_sim.get(i, floor) for i in seeds}, neighbours,
                             cfg.graph_hops, cfg.hop_decay, cfg.max_candidates)
            reached = {i: r for i, r in reached.items() if i not in rrf}
        forced = [i for i in force_ids if i not in rrf and i not in reached]
        rows = self.node_rows(pool + list(reached) + forced, filters)
        extra = [i for i in [*lex_ids, *reached, *forced] if i in rows and i not in dense_sim]
        extra = list(dict.fromkeys(extra))
        extra_vecs = read_vectors(self.db, extra)
        extra = [i for i in extra if i in extra_vecs]
        hits_kept = [(j, i) for j, i in enumerate(hit_ids) if i in rows]
        ids = [i for _, i in hits_kept] + extra
        vec_list = [hit_vecs[j] for j, _ in hits_kept] + [extra_vecs[i] for i in extra]
        vecs = np.stack(vec_list).astype(np.float32) if vec_list else np.zeros((0, DIM), np.float32)
        sims = (vecs @ qvec.astype(np.float32)).astype(np.float64) if len(ids) else np.zeros(0)
        lex_set = set(lex_ids)
        n_hits = sum(1 for i in ids if i in rrf)
        # Hits first (dense, then lexical-only), then expansion, then forced.
        order = sorted(range(len(ids)), key=lambda j: (ids[j] not in rrf, -rrf.get(ids[j], 0.0)))
        ids = [ids[j] for j in order]
        vecs = vecs[order] if len(ids) else vecs
        sims = sims[order] if len(ids) else sims
        sim_of = dict(zip(ids, sims.tolist()))
        feats: list[tuple[str, int, float, float]] = []
        for i in ids:
            r = reached.get(i)
            if i in rrf or r is None:
                feats.append(("hit", 0, 1.0, sim_of[i]))
            else:
                parent = sim_of.get(r.via, r.parent_sim)
                feats.append((r.relation, r.hop, r.path_weight, parent * r.path_weight))
        context = self.contexts(rows)
        cov = (covers(query, [rows[i][2] + ("\n" + context[i] if i in context else "") for i in ids],
                      df, n_docs) if query else np.zeros(len(ids)))
        t2 = time.perf_counter()
        return Gathered(ids, rows, sims, vecs, [f[0] for f in feats], np.array([f[1] for f in feats], np.int64),
                        np.array([f[2] for f in feats]), np.array([f[3] for f in feats]), n_hits, edges,
                        t1 - t0, t2 - t1, np.array([1.0 if i in lex_set else 0.0 for i in ids]), cov,
                        context, df, n_docs)

    def retrieve(self, query: str, query_vec: np.ndarray, k: int, params: ranking.RankingParams, *,
                 min_relevance: float | None = None, filters: Filters = NO_FILTERS) -> Retrieval:
        """Both pools -> graph expansion -> attention ranking -> near-duplicate drop.

        Returns at most k candidates with relevance >= min_relevance (the
        config's by default), best first. ``query`` feeds the BM25 pool and
        the evidence features; it is never logged.
        """
        if k < 1:
            raise BadRequest(f"k must be >= 1, got {k}")
        qvec = np.asarray(query_vec, dtype=np.float32)
        if qvec.shape != (DIM,) or not np.all(np.isfinite(qvec)):
            raise BadRequest(f"query_vec must be a finite ({DIM},) vector, got shape {qvec.shape}")
        floor = self.cfg.min_relevance if min_relevance is None else min_relevance
        g = self.gather(qvec, k, query=query, filters=filters)
        t0 = time.perf_counter()
        cands, sink_mass = rank(g, params, k, floor, self.cfg.dedup_cosine, time.time(),
                                self.cfg.same_topic_cosine)
        t1 = time.perf_counter()
        stats = retrieval_stats(g, cands, sink_mass, len(self.sync.index))
        timings = {"knn": g.t_knn * 1e3, "expand": g.t_expand * 1e3, "rank": (t1 - t0) * 1e3}
        log.debug("memory retrieval", extra={"hits": g.n_hits, "candidates": len(cands),
                                             "query_chars": len(query),
                                             **{f"ms_{k_}": v for k_, v in timings.items()}})
        return Retrieval(cands, stats, timings, g.df, g.n_docs)


# ---------------------------------------------------------------------------
# Plain functions of what was gathered


def features(g: Gathered, now: float) -> np.ndarray:
    """(n, N_FEATURES) float32 edge and evidence features of the gathered candidates."""
    if not g.ids:
        return np.zeros((0, ranking.N_FEATURES), np.float32)
    rows = [g.rows[i] for i in g.ids]
    age = np.array([(now - r[4]) / SECONDS_PER_DAY for r in rows])
    n = len(g.ids)
    lexical = g.lexical if len(g.lexical) == n else np.zeros(n)
    cov = g.cover if len(g.cover) == n else np.zeros(n)
    return ranking.edge_features(g.relation, g.path_weight, age, g.hop,
                                 np.array([r[6] for r in rows]), np.array([r[5] for r in rows]),
                                 g.prop_sim, lexical, cov)


def provenance_cap(rel: np.ndarray, vecs: np.ndarray, sources: Sequence[str],
                   confirmed: Sequence[bool], same_topic_cosine: float) -> np.ndarray:
    """A model's (unconfirmed) answer never outranks the user's record on the same subject.

    rel (n,), vecs (n, d). "Same subject" = cosine >= same_topic_cosine. The
    answer keeps its place relative to everything else.
    """
    out = rel.copy()
    user = [j for j, s in enumerate(sources) if s in USER_TIER]
    if not user:
        return out
    for j, s in enumerate(sources):
        if s in USER_TIER or confirmed[j]:
            continue
        for u in user:
            if float(vecs[j] @ vecs[u]) >= same_topic_cosine and out[j] >= rel[u]:
                out[j] = rel[u] * 0.999
    return out


def rank(g: Gathered, params: ranking.RankingParams, k: int, floor: float, dedup_cosine: float,
         now: float, same_topic_cosine: float = 0.6) -> tuple[list[Candidate], float]:
    """The best k candidates at or above ``floor``, near-duplicates dropped; and the sink's mass."""
    E = features(g, now)
    mask = np.ones(len(g.ids), bool)
    if g.ids:
        attn, rel = ranking.forward(g.sims, E, mask, params)
        sink_mass = float(params.pi() @ attn[:, 0])
        metas = [json.loads(g.rows[i][3]) for i in g.ids]
        rel = provenance_cap(rel, g.vecs, [g.rows[i][1] for i in g.ids],
                             [bool(m.get("confirmed")) for m in metas], same_topic_cosine)
    else:
        rel, sink_mass, metas = np.zeros(0), 1.0, []
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
            metadata=metas[j], context=g.context.get(nid, ""),
            lexical=bool(len(g.lexical) and g.lexical[j] > 0),
            cover=float(g.cover[j]) if len(g.cover) else 0.0))
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
    """The ``memory.search`` reply rows: previews, not whole texts.

    ``relevance`` is the ranking's calibrated probability that the record
    answers the query (0..1, comparable across queries; docs/memory.md).
    """
    return [{"id": c.id, "kind": c.kind, "preview": c.text[:PREVIEW_CHARS],
             "relevance": round(c.relevance, 4), "similarity": round(c.similarity, 4),
             "trust": c.trust, "source": c.source, "hop": c.hop, "metadata": dict(c.metadata),
             **({"parent_id": c.metadata["parent_id"]} if "parent_id" in c.metadata else {})}
            for c in r.candidates]


def warm_up(params: ranking.RankingParams) -> None:
    """Compile (or load from numba's cache) the ranking kernel now, not on the first query."""
    ranking.forward(np.zeros(1), np.zeros((1, ranking.N_FEATURES)), np.ones(1, bool), params)
