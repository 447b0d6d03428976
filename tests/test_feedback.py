"""The feedback outbox: applying again after a partial apply, and rows that fail.

The crash itself (stored, then killed before applying, then restarted) runs
against a real daemon in tests/integration/test_feedback_outbox.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ruvllm_edge.config import LearningConfig, MemoryConfig
from ruvllm_edge.errors import BadRequest, NotFound
from ruvllm_edge.feedback import FeedbackLog

CORRECTION = "The spare key for the boat shed hangs behind the tide clock."
LEARNING = LearningConfig()


def log_request(db: Any, rid: str, query: str = "Where is the spare key for the boat shed?",
                answer: str = "Under the mat.") -> None:
    with db.atomic() as c:
        c.execute("INSERT INTO requests(id, created_at, query, answer) VALUES (?, ?, ?, ?)",
                  (rid, time.time(), query, answer))


def unapplied(db: Any) -> list[int]:
    return [r[0] for r in db.read("SELECT id FROM feedback WHERE applied_at IS NULL ORDER BY id")]


def test_a_partly_applied_correction_applied_again_adds_no_second_fact(db: Any, emb: Any) -> None:
    from ruvllm_edge.memory.store import MemoryStore

    mem = MemoryStore(db, MemoryConfig(), emb)
    try:
        log_request(db, "r1")
        fb = FeedbackLog(db, mem, None)
        out = fb.submit({"request_id": "r1", "rating": 1, "correction": CORRECTION}, LEARNING)
        fact = out["memory"]["fact_id"]
        assert out["stored"] and fact and unapplied(db) == []
        with db.atomic() as c:   # as if the process died after the memory commit
            c.execute("UPDATE feedback SET applied_at = NULL")
        assert fb.apply_pending(LEARNING) == 1
        facts = db.read("SELECT id FROM nodes WHERE kind = 'fact' AND source = 'feedback'")
        assert [r[0] for r in facts] == [fact]
        assert unapplied(db) == [] and fb.apply_pending(LEARNING) == 0
    finally:
        mem.close()


class BrokenMemory:
    """Stands in for a store whose writes fail (the real failure paths: test_faults.py)."""

    def __init__(self) -> None:
        self.calls = 0

    def apply_feedback(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        raise OSError("disk I/O error")


def test_rows_that_fail_stay_stored_and_are_retried_after_a_restart(db: Any) -> None:
    log_request(db, "r1")
    with db.atomic() as c:
        for rating in (2, 4):
            c.execute("INSERT INTO feedback(request_id, rating, created_at) VALUES ('r1', ?, ?)",
                      (rating, time.time()))
    broken = BrokenMemory()
    fb = FeedbackLog(db, broken, None)
    assert fb.apply_pending(LEARNING) == 0 and broken.calls == 2
    assert fb.apply_pending(LEARNING) == 0 and broken.calls == 2    # not every timer tick
    assert len(unapplied(db)) == 2
    assert FeedbackLog(db, None, None).apply_pending(LEARNING) == 2   # after a restart
    assert unapplied(db) == []


def test_bad_feedback_is_refused_before_anything_is_stored(db: Any) -> None:
    fb = FeedbackLog(db)
    with pytest.raises(NotFound):
        fb.submit({"request_id": "nope", "rating": 3}, LEARNING)
    log_request(db, "r1")
    with pytest.raises(BadRequest):
        fb.submit({"request_id": "r1"}, LEARNING)
    assert db.read("SELECT count(*) FROM feedback").fetchone()[0] == 0
