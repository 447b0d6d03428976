"""The MemoryStore facade: what it adds on top of its rooms (stats, counters, writeback depth)."""

from __future__ import annotations

from memkit import inter, make_store as make
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory.db import Database


def test_stats_shape(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        store.add("one document")
        s = store.stats()
        assert s["nodes"] == 1 and s["nodes_by_kind"] == {"document": 1} and s["index_entries"] == 1
        assert s["db_bytes"] > 0 and s["writeback"]["queued"] == 0 and s["ranking"]["steps"] == 0
        assert s["tables"]["nodes"]["rows"] == 1 and s["tables"]["nodes"]["bytes"] >= 4096
        assert s["tables"]["requests"] == {"rows": 0, "bytes": s["tables"]["requests"]["bytes"]}
        assert store.counts_by_kind() == {"query": 0, "qa_pair": 0, "fact": 0, "document": 1, "concept": 0,
                                          "agent_step": 0}
        assert store.table_rows()["nodes"] == 1 and store.table_rows()["turns"] == 0
    finally:
        store.close()


def test_writeback_depth_counts_queued_interactions(db: Database, emb: Embedder) -> None:
    store = make(db, emb, writeback_batch=100, writeback_flush_ms=60_000)
    try:
        for i, (q, a) in enumerate([("Where is the spare key?", "Under the blue pot."),
                                    ("When is the bin collected?", "On Tuesday mornings."),
                                    ("What is the cat called?", "Her name is Milo.")]):
            store.record_interaction(inter(f"r{i}", q, a))
        assert store.writeback_depth() == 3            # the writer waits for a fuller batch
        assert store._wb.depth() == 3                  # the old name keeps working for the server
        store.flush()
        assert store.writeback_depth() == 0 and store.stats()["qa_written"] == 3
    finally:
        store.close()
