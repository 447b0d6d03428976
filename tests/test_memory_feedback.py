"""Feedback on a real store: ratings move qualities and edges, corrections become trusted facts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from memkit import inter, make_store as make
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import BadRequest
from ruvllm_edge.memory import nodes
from ruvllm_edge.memory.db import Database


def test_rating_moves_quality_and_edge_weights(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        a, = store.add("The recycling bin goes out on Tuesdays.")
        b, = store.add("Glass goes into the green container.")
        with db.atomic() as conn:
            nodes.upsert_edge(conn, a, b, "same_topic", 0.5, time.time())
        store.record_interaction(inter("req", "When does recycling go out?", "On Tuesdays.", 0.8, used=[a, b]))
        out = store.apply_feedback("req", [a, b], 5, None, "When does recycling go out?", "On Tuesdays.", "s1")
        qa = out["qa_node_id"]
        assert qa is not None and out["fact_id"] is None
        assert store.get(qa)["quality"] == pytest.approx(0.8 + 0.5 * (1.0 - 0.8))
        assert store.get(a)["quality"] == pytest.approx(1.0)          # already at the top
        w = dict(((s, d, k), w) for s, d, k, w in db.read("SELECT src, dst, kind, weight FROM edges"))
        assert w[(a, b, "same_topic")] == pytest.approx(0.7)
        assert w[(a, qa, "answered_by")] == pytest.approx(0.7)
        store.apply_feedback("req", [a, b], 1, None, "When does recycling go out?", "On Tuesdays.", "s1")
        w = dict(((s, d, k), w) for s, d, k, w in db.read("SELECT src, dst, kind, weight FROM edges"))
        assert w[(a, b, "same_topic")] == pytest.approx(0.5)
        assert store.get(a)["quality"] == pytest.approx(0.8)
        with pytest.raises(BadRequest):
            store.apply_feedback("req", [], 7, None, "q", "a", None)
        with pytest.raises(BadRequest):
            store.apply_feedback("req", [], None, None, "q", "a", None)
    finally:
        store.close()


def test_correction_is_retrieved_first_for_a_paraphrase_after_restart(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    q = "What is the access code for the north gate?"
    wrong = "I'm sorry, I don't have that information."
    try:
        store.add("The garden has a north gate and a south gate; the south gate is always open.")
        store.record_interaction(inter("req1", q, wrong, 0.8))
        store.record_interaction(inter("req2", "What time does the gym open?", "At 6 am.", 0.9))
        out = store.apply_feedback("req1", [], 1, "The access code for the north gate is 7341", q, wrong, "s1")
        fact, qa = out["fact_id"], out["qa_node_id"]
        node = store.get(fact)
        assert node["kind"] == "fact" and node["source"] == "feedback" and node["trust"] == 1.0
        assert node["metadata"]["question"] == q
        assert any(e["kind"] == "derived" and e["dst"] == qa for e in node["edges"])
        assert store.get(qa)["archived"] is True                  # the wrong answer leaves search
        assert store.ranking_params.steps == 1
    finally:
        store.close()
    store = make(db, emb)                                           # restart: everything from disk
    try:
        assert store.ranking_params.steps == 1
        for para in ["what code opens the north gate?", "Which number unlocks the gate on the north side?",
                     "north gate code?"]:
            r = store.retrieve(para, emb.embed(para), k=5)
            assert r.candidates[0].id == fact, para
            assert "7341" in r.candidates[0].text
            assert r.stats["best_trusted_sim"] > 0.6
        # a terse correction works too: the question is part of what is embedded
        store.record_interaction(inter("req3", "What is the wifi password at the cabin?", "I don't know.", 0.8))
        out = store.apply_feedback("req3", [], None, "fjord-2291", "What is the wifi password at the cabin?",
                                   "I don't know.", "s1")
        para = "cabin wifi password?"
        assert store.retrieve(para, emb.embed(para), k=3).candidates[0].id == out["fact_id"]
        # correcting the same question again updates the fact: the newest correction wins
        out2 = store.apply_feedback("req1", [], None, "The access code for the north gate is 7342", q, wrong, "s1")
        assert out2["fact_id"] == fact and "7342" in store.get(fact)["text"]
    finally:
        store.close()


def test_feedback_is_durable_without_close(tmp_path: Path, emb: Embedder) -> None:
    d = Database(tmp_path / "memory.db")
    store = make(d, emb)
    store.record_interaction(inter("r", "Where are the spare keys?", "No idea.", 0.8))
    out = store.apply_feedback("r", [], None, "The spare keys are in the blue jar.", "Where are the spare keys?",
                               "No idea.", None)
    # no close(), no checkpoint: a second connection (as after kill -9) sees the committed fact
    other = Database(tmp_path / "memory.db")
    assert other.read("SELECT text FROM nodes WHERE id = ?", (out["fact_id"],)).fetchone()[0] \
        == "The spare keys are in the blue jar."
    other.close()
    store.close()
    d.close()
