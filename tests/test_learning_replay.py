"""Replay buffer: reservoir sampling persisted in the real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.learning.replay import ReplayBuffer, recent_runs, record_run
from ruvllm_edge.learning.utility import ReplaySample
from ruvllm_edge.memory.db import Database, IntegrityError
from ruvllm_edge.router.features import N_FEATURES


def _s(i: int, **kw: object) -> ReplaySample:
    x = np.full(N_FEATURES, i / 1000.0, dtype=np.float32)
    base = dict(request_id=f"r{i}", features=x, context_class=i % 5, mode_class=i % 3,
                temperature=0.3, top_p=0.9, latency_s=0.5, completion_tokens=10 + i,
                session_id=f"s{i // 4}", turn_index=i % 4, created_at=1000.0 + i)
    base.update(kw)
    return ReplaySample(**base)  # type: ignore[arg-type]


def test_fills_to_capacity_then_stays_there(db: Database) -> None:
    buf = ReplayBuffer(db, capacity=10, rng=np.random.default_rng(0))
    for i in range(10):
        assert buf.add(_s(i))
    assert len(buf) == 10 and buf.seen() == 10
    for i in range(10, 200):
        buf.add(_s(i))
    assert len(buf) == 10 and buf.seen() == 200
    slots = [int(r[0]) for r in db.read("SELECT slot FROM replay ORDER BY slot")]
    assert slots == list(range(10))


def test_reservoir_keeps_a_uniform_sample_of_everything_seen(db: Database) -> None:
    """Each of n items is kept with probability capacity / n: early and late items alike."""
    kept_early, kept_late, trials, cap, n = 0, 0, 30, 20, 200
    for t in range(trials):
        with db.atomic() as conn:
            conn.execute("DELETE FROM replay")
            conn.execute("DELETE FROM learning_state")
        buf = ReplayBuffer(db, capacity=cap, rng=np.random.default_rng(t))
        for i in range(n):
            buf.add(_s(i))
        ids = [int(s.request_id[1:]) for s in buf.all()]
        kept_early += sum(i < n // 2 for i in ids)
        kept_late += sum(i >= n // 2 for i in ids)
    share_early = kept_early / (kept_early + kept_late)
    assert 0.4 < share_early < 0.6  # a "keep the newest" buffer would give ~0


def test_samples_survive_reopening_the_database(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    db = Database(path)
    buf = ReplayBuffer(db, capacity=50, rng=np.random.default_rng(1))
    originals = [_s(i, quality=0.75, utility=0.6) for i in range(7)]
    for s in originals:
        buf.add(s)
    db.close()
    db2 = Database(path)
    try:
        back = {s.request_id: s for s in ReplayBuffer(db2, capacity=50).all()}
        assert len(back) == 7
        for s in originals:
            b = back[s.request_id]
            np.testing.assert_array_equal(b.features, s.features)
            assert (b.context_class, b.mode_class, b.session_id, b.turn_index, b.quality,
                    b.utility) == (s.context_class, s.mode_class, s.session_id, s.turn_index,
                                   s.quality, s.utility)
        assert ReplayBuffer(db2, capacity=50).seen() == 7
    finally:
        db2.close()


def test_outcomes_targets_and_exploration_bookkeeping(db: Database) -> None:
    buf = ReplayBuffer(db, capacity=20, rng=np.random.default_rng(2))
    for i in range(5):
        buf.add(_s(i))
    assert {s.request_id for s in buf.unjudged(10)} == {f"r{i}" for i in range(5)}
    assert buf.set_outcome("r1", 0.9, 0.8)
    assert not buf.set_outcome("missing", 0.9, 0.8)
    with pytest.raises(ValueError):
        buf.set_outcome("r1", 1.5, 0.0)
    assert buf.set_target("r2", 4, 2, 0.2, 0.9, "explored")
    got = buf.get("r2")
    assert got is not None and got.labelled and got.target_context == 4
    assert got.label_source == "explored"
    assert "r1" not in {s.request_id for s in buf.unjudged(10)}
    first = [s.request_id for s in buf.to_explore(5)]
    assert first == ["r0", "r1", "r2", "r3", "r4"]  # never explored, oldest first
    buf.record_exploration("r0", [{"context_class": 0, "mode_class": 1, "temperature": 0.2,
                                   "top_p": 0.9, "quality": 1.0, "latency_s": 0.3,
                                   "completion_tokens": 12, "utility": 0.97}], now=5000.0)
    assert [s.request_id for s in buf.to_explore(5)][-1] == "r0"
    assert db.read("SELECT count(*) FROM explorations WHERE request_id='r0'").fetchone()[0] == 1


def test_re_adding_a_request_updates_in_place(db: Database) -> None:
    buf = ReplayBuffer(db, capacity=5, rng=np.random.default_rng(3))
    buf.add(_s(1))
    buf.add(_s(1, context_class=4))
    assert len(buf) == 1 and buf.seen() == 1
    assert buf.get("r1").context_class == 4  # type: ignore[union-attr]


def test_sample_draws_without_replacement(db: Database) -> None:
    buf = ReplayBuffer(db, capacity=30, rng=np.random.default_rng(4))
    for i in range(30):
        buf.add(_s(i))
    got = buf.sample(10, np.random.default_rng(5))
    assert len(got) == 10 and len({s.request_id for s in got}) == 10
    assert len(buf.sample(100, np.random.default_rng(5))) == 30


def test_lower_capacity_drops_the_extra_slots(db: Database) -> None:
    buf = ReplayBuffer(db, capacity=10, rng=np.random.default_rng(6))
    for i in range(10):
        buf.add(_s(i))
    assert len(ReplayBuffer(db, capacity=4)) == 4


def test_bad_samples_are_refused(db: Database) -> None:
    buf = ReplayBuffer(db, capacity=10)
    with pytest.raises(ValueError, match="shape"):
        buf.add(_s(1, features=np.zeros(3, dtype=np.float32)))
    bad = np.zeros(N_FEATURES, dtype=np.float32)
    bad[0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        buf.add(_s(2, features=bad))
    with pytest.raises(ValueError):
        ReplayBuffer(db, capacity=0)
    with pytest.raises(ValueError):
        _s(3, label_source="guess")
    assert len(buf) == 0


def test_learning_runs_log(db: Database) -> None:
    record_run(db, "router_training", 100.0, 1.5, "ok", {"accepted": True})
    record_run(db, "edge_decay", 200.0, 0.1, "preempted")
    runs = recent_runs(db)
    assert [r["job"] for r in runs] == ["edge_decay", "router_training"]
    assert runs[1]["report"] == {"accepted": True}
    with pytest.raises(IntegrityError):
        record_run(db, "x", 0.0, 0.0, "exploded")  # the status CHECK constraint
    assert json.dumps(runs)
