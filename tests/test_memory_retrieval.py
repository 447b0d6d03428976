"""Retrieval on a real SQLite file: KNN recall, graph expansion, ranking output, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from memkit import clustered, make_store
from ruvllm_edge.config import MemoryConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import BadRequest
from ruvllm_edge.memory.bitindex import exact_knn
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.index_sync import IndexSync
from ruvllm_edge.memory.retrieval import Retriever


def test_knn_recall_against_brute_force(db: Database, emb: Embedder) -> None:
    store = make_store(db, emb)
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
        assert store.knn(x[0], 1)[0][0] == ids[0]
        # exclude keeps ids out without shrinking the result
        r = Retriever(db, IndexSync(db), store.cfg)
        got, sims, vecs = r.knn(x[0], 5, exclude=[ids[0]])
        assert ids[0] not in got and len(got) == 5 and vecs.shape == (5, 384)
        assert np.all(np.diff(sims) <= 0)
    finally:
        store.close()


def test_retrieve_expands_over_edges_and_reports_stats(db: Database, emb: Embedder) -> None:
    store = make_store(db, emb, graph_hops=2, min_relevance=0.0)
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
        one_hit = Retriever(db, IndexSync(db), MemoryConfig(graph_hops=2, knn_k=1, min_relevance=0.0,
                                                     dense_candidates=1, lexical_candidates=0))
        g = one_hit.gather(emb.embed(q), 1)
        hops = dict(zip(g.ids, g.hop.tolist()))
        rel = dict(zip(g.ids, g.relation))
        assert hops[a] == 0 and hops[b] == 1 and hops[c] == 2
        assert rel[b] == "cites" and rel[c] == "same_topic"
        assert g.path_weight[g.ids.index(c)] == pytest.approx(0.9 * 0.5 * 0.8 * 0.5)
        assert 0.0 <= r3.stats["graph_density"] <= 1.0 and r3.stats["graph_density"] > 0
    finally:
        store.close()


def test_retrieve_rejects_bad_vectors(db: Database, emb: Embedder) -> None:
    store = make_store(db, emb)
    try:
        with pytest.raises(BadRequest):
            store.retrieve("q", np.zeros(10, np.float32), 5)
        with pytest.raises(BadRequest):
            store.retrieve("q", np.full(384, np.nan, np.float32), 5)
        with pytest.raises(BadRequest):
            store.retrieve("q", emb.embed("q"), 0)
        assert store.retrieve("q", emb.embed("q"), 5).candidates == []     # empty memory is fine
    finally:
        store.close()


def test_a_model_answer_never_outranks_the_users_record_on_its_subject() -> None:
    from ruvllm_edge.memory.retrieval import provenance_cap
    v = np.eye(3, dtype=np.float32)
    vecs = np.stack([v[0], v[0] * 0.9 + v[1] * 0.1, v[2]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rel = np.array([0.6, 0.97, 0.9])
    out = provenance_cap(rel, vecs, ["user", "model", "model"], [False, False, False], 0.6)
    assert out[1] < out[0] and out[2] == 0.9            # same subject capped; another subject untouched
    confirmed = provenance_cap(rel, vecs, ["user", "model", "model"], [False, True, False], 0.6)
    assert confirmed[1] == 0.97                          # a confirmed answer keeps its place


def test_fts_query_cover_and_filters() -> None:
    from ruvllm_edge.errors import BadRequest
    from ruvllm_edge.memory.retrieval import Filters, cover, fts_query
    assert fts_query('What is the "code" for the gate?') == '"code" OR "gate"'
    assert fts_query("what is it?") is None
    from ruvllm_edge.answer.text import stem as st
    many = {st("code"): 9000, st("gate"): 3000, st("shed"): 12, st("key"): 40}
    # Words more than LEXICAL_MAX_DF (2000) records hold leave the BM25 pool...
    assert fts_query("the code for the shed key", many) == '"shed" OR "key"'
    # ...but the two rarest words always stay, and below the cap nothing is left out.
    assert fts_query("the code for the shed gate", many) == '"shed" OR "gate"'
    assert fts_query("the code for the gate", many) == '"code" OR "gate"'
    assert fts_query("the code for the gate", {st("code"): 1999}) == '"code" OR "gate"'
    from ruvllm_edge.answer.text import stem
    df = {stem("gate"): 1, stem("code"): 5}              # keyed by the policy's stems
    assert cover("the gate code", "The gate code is 4821.", df, 10) == pytest.approx(1.0)
    part = cover("the gate code", "The garage code is 4821.", df, 10)
    assert 0.0 < part < 0.5                              # the rare word missing weighs most
    where, params = Filters.of(["fact"], {"room": "kitchen", "floor": 2}).sql()
    assert where.count("AND") == 3 and params == ["fact", "kitchen", 2]
    with pytest.raises(BadRequest):
        Filters.of(["nope"])
    with pytest.raises(BadRequest):
        Filters.of(None, {"bad key": 1})


def test_search_finds_the_sentence_by_its_words_and_filters_it(db: Database, emb: Embedder) -> None:
    store = make_store(db, emb)
    try:
        store.add("House notes\nThe garage door code is 4821.\nThe front gate code is 7391.",
                  metadata={"house": "rowan"})
        store.add("The office gate code is 1122.", kind="fact", metadata={"house": "office"})
        hits = store.search("What is the code for the front gate?", k=3)
        assert "7391" in hits[0]["preview"] and hits[0]["parent_id"]
        assert all(h["preview"] != "House notes" or h["relevance"] < hits[0]["relevance"] for h in hits)
        only = store.search("gate code", k=5, kinds=["fact"])
        assert [h["kind"] for h in only] == ["fact"]
        rowan = store.search("gate code", k=5, metadata={"house": "rowan"})
        assert rowan and all(h["metadata"]["house"] == "rowan" for h in rowan)
    finally:
        store.close()
