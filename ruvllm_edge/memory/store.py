"""The memory store: one facade over the memory graph's rooms.

The daemon builds one ``MemoryStore`` per process and shares it between
threads: reads use the Database's per-thread reader connections, writes go
through ``db.atomic()``. Like sqlite-utils' ``Table``, this class holds the
shared parts and delegates each operation to the one module that owns it:

    nodes.py        add, add_many, update, history, add_embedded, get, delete, archive,
                    export, stats, meta (splitting.py: how a note becomes units)
    index_sync.py   the in-RAM code mirror, kept in step through vec_log
    retrieval.py    knn, retrieve, search (KNN -> graph expansion -> ranking)
    writeback.py    record_interaction, flush (queue + batch writer)
    feedback.py     apply_feedback and the ranking training step
    maintenance.py  decay_edges, evict, table_rows (and the log retention job)
    concepts.py     compression_candidates, add_concept, archive_compressed, undo_concept

The rules those rooms apply (graph.py, bitindex.py, ranking.py, chunking.py,
compress.py) take and return plain data; the trust order and node kinds are
in types.py.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import ranking
from ..config import MemoryConfig
from ..embedding import Embedder
from ..errors import BadRequest
from . import concepts, maintenance, nodes, retrieval
from .db import Database
from .feedback import Feedback
from .index_sync import IndexSync
from .types import Candidate, CandidateSet, ConceptWrite, Interaction, Retrieval, default_trust
from .writeback import BatchWriter, WritebackQueue, qa_text

__all__ = ["MemoryStore", "Candidate", "Retrieval", "Interaction", "default_trust", "qa_text"]


class MemoryStore:
    """Nodes, edges and vectors in the one SQLite file, plus the writeback queue."""

    def __init__(self, db: Database, cfg: MemoryConfig, embedder: Embedder) -> None:
        self.db = db
        self.cfg = cfg
        self.embedder = embedder
        self._counters = {"qa_written": 0, "qa_deduped": 0, "qa_gated": 0, "facts": 0,
                          "feedback": 0, "evicted": 0, "edges_decayed": 0}
        self._counters_lock = threading.Lock()
        self._sync = IndexSync(db)
        self.index = self._sync.index
        self._retriever = retrieval.Retriever(db, self._sync, cfg)
        self._feedback = Feedback(db, cfg, embedder, self._retriever, self.flush, self._count)
        self._sync.warm_up()
        retrieval.warm_up(self.ranking_params)
        self._writer = BatchWriter(db, cfg, embedder, self._retriever.knn, self._count)
        self._wb = WritebackQueue(self._write_batch, batch=cfg.writeback_batch,
                                  flush_ms=cfg.writeback_flush_ms, max_queue=cfg.writeback_queue_max)

    # -- nodes ---------------------------------------------------------------

    def add(self, text: str, kind: str = "document", metadata: dict | None = None,
            session_id: str | None = None, *, source: str | None = None,
            trust: float | None = None, quality: float = 1.0) -> list[int]:
        """Store text (chunked when long); returns node ids in text order."""
        ids = nodes.add(self.db, self.cfg, self.embedder, text, kind, metadata, session_id,
                        source=source, trust=trust, quality=quality)
        self._maybe_evict()
        return ids

    def add_many(self, items: Sequence[Mapping[str, Any]], *, link: bool = False,
                 session_id: str | None = None) -> list[list[int]]:
        """Store items ({text, kind?, metadata?}) in one embedding batch and one transaction.

        Returns each item's ids as ``add`` does; ``link`` chains consecutive
        items with ``follows`` edges (conversation turns in order).
        """
        ids = nodes.add_many(self.db, self.cfg, self.embedder, items, link=link, session_id=session_id)
        self._maybe_evict()
        return ids

    def update(self, node_id: int, text: str, metadata: Mapping[str, Any] | None = None, *,
               source: str = "user") -> dict[str, Any]:
        """Replace a node's text keeping its id; the old text goes to its history (nodes.update)."""
        return nodes.update(self.db, self.cfg, self.embedder, node_id, text, metadata, source=source)

    def history(self, node_id: int) -> list[dict[str, Any]] | None:
        """A node's past texts and why each changed, oldest first; None for an unknown id."""
        return nodes.history(self.db, node_id)

    def add_embedded(self, texts: Sequence[str], vecs: np.ndarray, kind: str = "document", *,
                     source: str | None = None, quality: float = 1.0,
                     metadata: Mapping[str, Any] | None = None) -> list[int]:
        """Insert already-embedded (n, 384) unit rows in one transaction; no chunking, no dedup."""
        ids = nodes.add_embedded(self.db, self.cfg, texts, vecs, kind, source=source, quality=quality,
                                 metadata=metadata)
        self._maybe_evict()
        return ids

    def get(self, node_id: int) -> dict[str, Any] | None:
        return nodes.get(self.db, node_id)

    def delete(self, node_id: int) -> bool:
        return nodes.delete(self.db, node_id)

    def archive(self, node_ids: Sequence[int], archived: bool = True) -> int:
        return nodes.archive(self.db, node_ids, archived)

    def vectors(self, node_ids: Sequence[int]) -> np.ndarray:
        return nodes.vectors(self.db, node_ids)

    def node_texts(self, node_ids: Sequence[int]) -> dict[int, str]:
        return nodes.node_texts(self.db, node_ids)

    def node_count(self) -> int:
        return nodes.node_count(self.db)

    def export(self, after_id: int = 0, limit: int = 1000,
               include_archived: bool = True) -> tuple[list[dict[str, Any]], int]:
        return nodes.export(self.db, after_id, limit, include_archived)

    def meta_get(self, key: str) -> str | None:
        return nodes.meta_get(self.db, key)

    def meta_set(self, key: str, value: str) -> None:
        nodes.meta_set(self.db, key, value)

    def counts_by_kind(self) -> dict[str, int]:
        """Nodes per kind, archived included, from trigger-kept counters: O(1), for metrics."""
        return nodes.counts_by_kind(self.db)

    def table_rows(self) -> dict[str, int]:
        """Rows of the pruned logs and of nodes, from trigger-kept counters: O(1), for metrics."""
        return maintenance.table_rows(self.db)

    def stats(self) -> dict[str, Any]:
        """memory.stats: counts, sizes per table, index, writeback and counters."""
        self.refresh_index()
        with self._counters_lock:
            counters = dict(self._counters)
        return {
            **nodes.stats(self.db), "max_nodes": self.cfg.max_nodes, "index_entries": len(self.index),
            "index_bytes": self.index.nbytes(),
            "writeback": {"queued": self._wb.depth(), **self._wb.counters},
            "ranking": {"steps": self.ranking_params.steps}, "embedding_cache": self.embedder.cache_info(),
            "index_reloads": self._sync.reloads, "tables": maintenance.table_sizes(self.db), **counters,
        }

    # -- search --------------------------------------------------------------

    def refresh_index(self) -> None:
        """Apply vector changes committed since the last look (any thread or process)."""
        self._sync.refresh()

    def knn(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Coarse + exact KNN: [(id, cosine)], best first."""
        ids, sims, _ = self._retriever.knn(qvec, k)
        return list(zip(ids, sims.tolist()))

    def retrieve(self, query: str, query_vec: np.ndarray, k: int, *,
                 min_relevance: float | None = None,
                 filters: retrieval.Filters = retrieval.NO_FILTERS) -> Retrieval:
        """At most k candidates with relevance >= min_relevance (the config's by default), best first."""
        return self._retriever.retrieve(query, query_vec, k, self.ranking_params,
                                        min_relevance=min_relevance, filters=filters)

    def search(self, query: str, k: int = 10, *, kinds: Sequence[str] | None = None,
               metadata: Mapping[str, Any] | None = None,
               embed: Callable[[str], np.ndarray] | None = None) -> list[dict[str, Any]]:
        """memory.search: the retrieval pipeline without the relevance floor, optionally filtered.

        ``embed`` replaces ``embedder.embed`` (the server's batching one, embed_batch.py).
        """
        if not isinstance(query, str) or not query.strip():
            raise BadRequest("query must be a non-empty string", field="query")
        filters = retrieval.Filters.of(kinds, metadata)
        qvec = (embed or self.embedder.embed)(query)
        return retrieval.search_rows(self.retrieve(query, qvec, k,
                                                   min_relevance=0.0, filters=filters))

    @property
    def ranking_params(self) -> ranking.RankingParams:
        return self._feedback.ranking.params

    # -- learning loop A: writeback and feedback -----------------------------

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

    def writeback_depth(self) -> int:
        """Interactions queued or being written (health and metrics)."""
        return self._wb.depth()

    def _write_batch(self, items: Sequence[Interaction]) -> None:
        self._writer.write(items)
        self._maybe_evict()

    def apply_feedback(self, request_id: str, used_node_ids: list[int], rating: int | None,
                       correction: str | None, query: str, answer: str,
                       session_id: str | None, *, finish_reason: str | None = None) -> dict[str, Any]:
        """Apply a rating and/or correction durably; returns what changed (see feedback.py).

        Do not call inside an open db.atomic() block.
        """
        return self._feedback.apply(request_id, used_node_ids, rating, correction, query, answer,
                                    session_id, finish_reason=finish_reason)

    # -- maintenance ---------------------------------------------------------

    def decay_edges(self, now: float | None = None) -> int:
        """Idle job: decay learned edges; returns the number removed."""
        removed = maintenance.decay_edges(self.db, self.cfg, now)
        self._count("edges_decayed", removed)
        return removed

    def evict(self) -> int:
        """Capacity job: past max_nodes, delete the lowest quality x recency x use."""
        n = maintenance.evict(self.db, self.cfg)
        self._count("evicted", n)
        return n

    def _maybe_evict(self) -> None:
        self._count("evicted", maintenance.maybe_evict(self.db, self.cfg))

    # -- compression (learning loop C; the rules are in compress.py) ---------

    def compression_candidates(self, *, created_before: float, min_edge_weight: float, limit: int,
                               after_id: int = 0) -> CandidateSet:
        return concepts.compression_candidates(self.db, created_before=created_before,
                                               min_edge_weight=min_edge_weight, limit=limit, after_id=after_id)

    def add_concept(self, text: str, vec: np.ndarray, member_ids: Sequence[int], *,
                    archive_before: float | None = None,
                    metadata: Mapping[str, Any] | None = None) -> ConceptWrite:
        written = concepts.add_concept(self.db, self.cfg.max_text_bytes, text, vec, member_ids,
                                       archive_before=archive_before, metadata=metadata)
        self._count("concepts_written")
        self._count("compressed_archived", len(written.archived_ids))
        return written

    def archive_compressed(self, before: float) -> int:
        n = concepts.archive_compressed(self.db, before)
        self._count("compressed_archived", n)
        return n

    def undo_concept(self, concept_id: int) -> int:
        return concepts.undo_concept(self.db, concept_id)

    # ------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._counters_lock:
            self._counters[key] = self._counters.get(key, 0) + n

    def close(self) -> None:
        """Drain the writeback queue and stop its thread (the Database stays open)."""
        self._wb.close()
