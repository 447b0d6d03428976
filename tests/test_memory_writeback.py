"""Writeback queue (learning loop A) and feedback, on a real store."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from ruvllm_edge.config import MemoryConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import BadRequest, StorageError
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.store import MemoryStore, qa_text
from ruvllm_edge.memory.writeback import Interaction, WritebackQueue



def make(db: Database, emb: Embedder, **cfg: object) -> MemoryStore:
    base = {"writeback_flush_ms": 20}
    base.update(cfg)
    return MemoryStore(db, dataclasses.replace(MemoryConfig(), **base), emb)


def inter(rid: str, q: str, a: str, quality: float = 0.9, session: str | None = "s1",
          used: Sequence[int] = ()) -> Interaction:
    return Interaction(rid, session, q, a, np.zeros(384, np.float32), list(used), quality, time.time())


# -- the queue itself (a fake writer keeps these fast; the store tests below use the real one)

class Recorder:
    def __init__(self, fail_times: int = 0, exc: type[Exception] = StorageError) -> None:
        self.batches: list[list[str]] = []
        self.fail_times = fail_times
        self.exc = exc
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[Interaction]) -> None:
        self.gate.wait(5)
        if self.fail_times:
            self.fail_times -= 1
            raise self.exc("disk full") if self.exc is StorageError else self.exc("bug")
        self.batches.append([i.request_id for i in items])


def test_queue_batches_by_count() -> None:
    rec = Recorder()
    rec.gate.clear()                          # hold the writer so items pile up
    q = WritebackQueue(rec, batch=4, flush_ms=60_000)
    for i in range(10):
        assert q.put(inter(f"r{i}", "q", "a"))
    rec.gate.set()
    q.flush(5)
    assert all(1 <= len(b) <= 4 for b in rec.batches) and 3 <= len(rec.batches) <= 4
    assert sum(rec.batches, []) == [f"r{i}" for i in range(10)]     # order kept, nothing lost
    assert q.depth() == 0 and q.counters["written"] == 10
    q.close()


def test_queue_flushes_by_time() -> None:
    rec = Recorder()
    q = WritebackQueue(rec, batch=100, flush_ms=30)
    q.put(inter("r0", "q", "a"))
    deadline = time.monotonic() + 5
    while not rec.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.batches == [["r0"]]            # written without a flush() call or a full batch
    q.close()


def test_queue_retries_storage_errors_then_succeeds() -> None:
    rec = Recorder(fail_times=2)
    q = WritebackQueue(rec, batch=8, flush_ms=10, retry_backoff_s=0.01)
    q.put(inter("r0", "q", "a"))
    q.flush(5)
    assert rec.batches == [["r0"]] and q.counters["retries"] == 2
    q.close()


def test_queue_drops_after_retries_and_on_bugs_but_keeps_running() -> None:
    rec = Recorder(fail_times=10)
    q = WritebackQueue(rec, batch=8, flush_ms=10, retries=1, retry_backoff_s=0.01)
    q.put(inter("r0", "q", "a"))
    q.flush(5)
    assert q.counters["dropped_failed"] == 1
    rec.fail_times, rec.exc = 1, ValueError
    q.put(inter("r1", "q", "a"))
    q.flush(5)
    assert q.counters["dropped_failed"] == 2
    q.put(inter("r2", "q", "a"))
    q.flush(5)
    assert rec.batches == [["r2"]]
    q.close()


def test_queue_full_does_not_block() -> None:
    rec = Recorder()
    rec.gate.clear()
    q = WritebackQueue(rec, batch=1, flush_ms=10, max_queue=2)
    results = [q.put(inter(f"r{i}", "q", "a")) for i in range(6)]
    assert results.count(False) >= 1 and q.counters["dropped_full"] >= 1
    rec.gate.set()
    q.close()
    assert not q.put(inter("late", "q", "a"))


# -- the real store ------------------------------------------------------------

def test_quality_gate_and_qa_text(db: Database, emb: Embedder) -> None:
    store = make(db, emb, writeback_quality_threshold=0.75)
    try:
        store.record_interaction(inter("good", "What colour is the sky?", "Blue on a clear day.", 0.8))
        store.record_interaction(inter("bad", "What is 2+2?", "Five.", 0.3))
        store.flush()
        rows = db.read("SELECT kind, source, text, request_id, quality, trust FROM nodes").fetchall()
        assert rows == [("qa_pair", "model", "Q: What colour is the sky?\nA: Blue on a clear day.", "good",
                         0.8, 0.4)]
        s = store.stats()
        assert s["qa_written"] == 1 and s["qa_gated"] == 1
    finally:
        store.close()


def test_batched_commit_edges_follows_same_topic_answered_by(db: Database, emb: Embedder) -> None:
    store = make(db, emb, writeback_batch=16, writeback_flush_ms=200, same_topic_cosine=0.5)
    try:
        doc, = store.add("Tomatoes need six hours of sun and regular watering.")
        store.record_interaction(inter("r1", "How much sun do tomatoes need?", "About six hours a day.",
                                       used=[doc]))
        store.record_interaction(inter("r2", "How often should tomatoes be watered?", "Regularly, daily in heat.",
                                       used=[doc]))
        store.record_interaction(inter("r3", "Capital of Norway?", "Oslo.", session="s2"))
        store.flush()
        # one batch, one commit for the three answers
        assert store._wb.counters["batches"] == 1 and store._wb.counters["written"] == 3
        ids = dict(db.read("SELECT request_id, id FROM nodes WHERE kind = 'qa_pair'").fetchall())
        edges = {(s, d, k) for s, d, k in db.read("SELECT src, dst, kind FROM edges")}
        assert (ids["r1"], ids["r2"], "follows") in edges                        # same session, in order
        assert not any(k == "follows" and ids["r3"] in (s, d) for s, d, k in edges)  # other session
        assert (doc, ids["r1"], "answered_by") in edges and (doc, ids["r2"], "answered_by") in edges
        assert (ids["r2"], ids["r1"], "same_topic") in edges or (ids["r1"], ids["r2"], "same_topic") in edges
        assert store.get(doc)["access_count"] == 2                              # used twice
        # the next turn of session s1 follows r2 (in-memory pointer), and after a restart the DB fallback
        store.record_interaction(inter("r4", "Do tomatoes like shade?", "No, they prefer sun."))
        store.flush()
        r4 = db.read("SELECT id FROM nodes WHERE request_id = 'r4'").fetchone()[0]
        assert db.read("SELECT count(*) FROM edges WHERE src = ? AND dst = ? AND kind = 'follows'",
                       (ids["r2"], r4)).fetchone()[0] == 1
        store.close()
        store = make(db, emb)
        store.record_interaction(inter("r5", "When to harvest tomatoes?", "When fully red."))
        store.flush()
        r5 = db.read("SELECT id FROM nodes WHERE request_id = 'r5'").fetchone()[0]
        assert db.read("SELECT count(*) FROM edges WHERE src = ? AND dst = ? AND kind = 'follows'",
                       (r4, r5)).fetchone()[0] == 1
    finally:
        store.close()


def test_near_duplicate_updates_only_when_better(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        q = "What is the boiling point of water at sea level?"
        store.record_interaction(inter("r1", q, "It boils at 100 degrees Celsius.", 0.8))
        store.flush()
        store.record_interaction(inter("r2", q, "It boils at 100 degrees Celsius!", 0.95))  # better
        store.flush()
        store.record_interaction(inter("r3", q, "It boils at 100 degrees Celsius.", 0.76))  # worse
        store.flush()
        rows = db.read("SELECT id, text, quality, request_id, access_count FROM nodes").fetchall()
        assert len(rows) == 1
        _, text, quality, rid, count = rows[0]
        assert text.endswith("Celsius!") and quality == 0.95 and rid == "r2" and count == 2
        vec = np.frombuffer(db.read("SELECT embedding FROM node_vectors").fetchone()[0], np.float32)
        np.testing.assert_allclose(vec, emb.embed(qa_text(q, "It boils at 100 degrees Celsius!")), atol=1e-6)
        assert store.stats()["qa_deduped"] == 2
        # duplicates inside one batch are merged too
        store.record_interaction(inter("r4", "Who painted the Mona Lisa?", "Leonardo da Vinci.", 0.9))
        store.record_interaction(inter("r5", "Who painted the Mona Lisa?", "Leonardo da Vinci.", 0.9))
        store.flush()
        assert db.read("SELECT count(*) FROM nodes").fetchone()[0] == 2
    finally:
        store.close()


def test_rating_moves_quality_and_edge_weights(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        a, = store.add("The recycling bin goes out on Tuesdays.")
        b, = store.add("Glass goes into the green container.")
        with db.atomic() as conn:
            store._upsert_edge(conn, a, b, "same_topic", 0.5, time.time())
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


def test_retrieval_while_writeback_runs(db: Database, emb: Embedder) -> None:
    store = make(db, emb, writeback_batch=4, writeback_flush_ms=5)
    errors: list[BaseException] = []
    stop = threading.Event()
    qv = emb.embed("question about topic 3")

    def reader() -> None:
        try:
            while not stop.is_set():
                r = store.retrieve("q", qv, k=5, min_relevance=0.0)
                assert all(c.kind == "qa_pair" for c in r.candidates)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            store.record_interaction(inter(f"r{i}", f"question about topic {i}", f"answer number {i}", 0.9))
        store.flush()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        store.close()
    assert errors == []
    assert db.read("SELECT count(*) FROM nodes").fetchone()[0] == 30


def test_retrieve_rejects_bad_vectors(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
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
