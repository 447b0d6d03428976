"""Keeping the file bounded: eviction order and protection, edge decay."""

from __future__ import annotations

import time

import numpy as np
import pytest

from memkit import DAY, make_store as make
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory import graph
from ruvllm_edge.memory.db import Database


def test_eviction_protects_facts_and_documents(db: Database, emb: Embedder) -> None:
    store = make(db, emb, max_nodes=100, evict_low_water_fraction=0.9)
    try:
        rng = np.random.default_rng(0)
        v = rng.standard_normal((132, 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        docs = store.add_embedded([f"doc {i}" for i in range(30)], v[:30], kind="document")
        facts = store.add_embedded([f"fact {i}" for i in range(10)], v[30:40], kind="fact")
        corr = store.add_embedded(["correction"], v[40:41], kind="fact", source="feedback")
        qas = store.add_embedded([f"qa {i}" for i in range(80)], v[41:121], kind="qa_pair", quality=0.8)
        # writes past capacity evict down to the low-water mark (90 nodes)
        assert store.node_count() == 90
        alive = {r[0] for r in db.read("SELECT id FROM nodes")}
        assert set(docs) | set(facts) | set(corr) <= alive
        # the order is quality x recency x use: a low-quality, stale, unused qa goes first
        qa_alive = sorted(set(qas) & alive)
        now = time.time()
        with db.atomic() as conn:
            conn.execute("UPDATE nodes SET quality = 0.1 WHERE id = ?", (qa_alive[-1],))
            conn.execute("UPDATE nodes SET last_access_at = ? WHERE id = ?", (now - 400 * DAY, qa_alive[-2]))
            conn.execute("UPDATE nodes SET access_count = 50 WHERE id = ?", (qa_alive[0],))
        store.add_embedded([f"more {i}" for i in range(11)], v[121:132], kind="qa_pair", quality=0.8)
        assert store.node_count() == 90
        alive = {r[0] for r in db.read("SELECT id FROM nodes")}
        assert qa_alive[-1] not in alive and qa_alive[-2] not in alive and qa_alive[0] in alive
        # only protected nodes left: nothing more can go
        store2 = make(db, emb, max_nodes=45, evict_low_water_fraction=0.5)
        assert store2.evict() == 90 - 41
        assert set(docs) | set(facts) | set(corr) == {r[0] for r in db.read("SELECT id FROM nodes")}
        store2.close()
    finally:
        store.close()


def test_node_value_sql_equals_python(db: Database) -> None:
    now = 1_000_000.0
    rows = [(0.9, now - 3 * DAY, 0), (0.5, now, 7), (0.2, now - 90 * DAY, 100)]
    sql = graph.NODE_VALUE_SQL
    for q, last, n in rows:
        got = db.read(f"SELECT {sql} FROM (SELECT :q AS quality, :last AS last_access_at, :n AS access_count)",
                      {"now": now, "half_life_days": 30.0, "q": q, "last": last, "n": n})
        assert got.fetchone()[0] == pytest.approx(graph.node_value(q, now - last, n, 30.0))


def test_edge_decay_drops_weak_learned_edges_only(db: Database, emb: Embedder) -> None:
    store = make(db, emb, edge_half_life_days=10.0, edge_min_weight=0.1)
    try:
        a, = store.add("first node")
        b, = store.add("second node")
        c, = store.add("third node")
        t0 = 1_000_000.0
        with db.atomic() as conn:
            for src, dst, kind, w in [(a, b, "same_topic", 0.8), (b, c, "answered_by", 0.3),
                                      (a, c, "contains", 0.3), (c, a, "derived", 0.3)]:
                conn.execute("INSERT INTO edges VALUES (?, ?, ?, ?, ?, ?)", (src, dst, kind, w, t0, t0))
        assert store.decay_edges(now=t0 + 20 * DAY) == 1          # 0.3 -> 0.075 < 0.1: dropped
        w = dict(((s, d, k), w) for s, d, k, w in db.read("SELECT src, dst, kind, weight FROM edges"))
        assert w[(a, b, "same_topic")] == pytest.approx(0.2)       # two half-lives
        assert w[(a, c, "contains")] == 0.3 and w[(c, a, "derived")] == 0.3   # structure does not decay
        assert (b, c, "answered_by") not in w
        # decay is memoryless: two runs equal one run over the same span
        store.decay_edges(now=t0 + 30 * DAY)
        w2 = db.read("SELECT weight FROM edges WHERE kind = 'same_topic'").fetchone()[0]
        assert w2 == pytest.approx(0.1)
    finally:
        store.close()
