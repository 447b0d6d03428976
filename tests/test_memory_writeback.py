"""Writeback (learning loop A): the queue with a fake writer, then the batch writer on a real store."""

from __future__ import annotations

import threading
import time
from typing import Sequence

import numpy as np

from memkit import inter, make_store as make
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import StorageError
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.writeback import Interaction, WritebackQueue, qa_text


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


# -- the batch writer on the real store ------------------------------------------

def test_quality_gate_and_qa_text(db: Database, emb: Embedder) -> None:
    store = make(db, emb, writeback_quality_threshold=0.75)
    try:
        store.record_interaction(inter("good", "What colour is the sky?", "Blue on a clear day.", 0.8))
        store.record_interaction(inter("bad", "What is 2+2?", "Five.", 0.3))
        # An answer not grounded in a user-given record is never written, whatever its quality.
        store.record_interaction(inter("made-up", "What is our vet's phone?", "It is 123-456-7890.",
                                       0.95, grounded=False))
        store.flush()
        rows = db.read("SELECT kind, source, text, request_id, quality, trust, metadata FROM nodes").fetchall()
        assert rows == [("qa_pair", "model", "Q: What colour is the sky?\nA: Blue on a clear day.", "good",
                         0.8, 0.4, '{"grounded": true}')]
        s = store.stats()
        assert s["qa_written"] == 1 and s["qa_gated"] == 2
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
        wb = store.stats()["writeback"]
        assert wb["batches"] == 1 and wb["written"] == 3
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


def test_the_naive_baseline_writes_unverified_answers_unmarked(db: Database, emb: Embedder) -> None:
    import dataclasses
    store = make(db, emb)
    try:
        it = dataclasses.replace(inter("n1", "What is our vet's phone?", "It is 123-456-7890.", 0.9,
                                       grounded=False), naive=True)
        store.record_interaction(it)
        store.flush()
        rows = db.read("SELECT kind, metadata FROM nodes").fetchall()
        assert rows == [("qa_pair", "{}")]          # written (the old behaviour), never marked grounded
    finally:
        store.close()
