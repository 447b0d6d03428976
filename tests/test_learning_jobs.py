"""The router's idle job end to end on a real SQLite file: judge, explore, train, save."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning import jobs as Jb
from ruvllm_edge.learning.curriculum import initial_router
from ruvllm_edge.learning.explore import Outcome
from ruvllm_edge.learning.replay import ReplayBuffer
from ruvllm_edge.learning.scheduler import IdleScheduler
from ruvllm_edge.learning.trainer import is_holdout
from ruvllm_edge.learning.utility import ReplaySample
from ruvllm_edge.memory.db import Database
from ruvllm_edge.router.features import FeatureInputs, build_features
from ruvllm_edge.router.policy import CONTEXT_CLASSES, Decision, Router

CFG = LearningConfig(explore_per_run=40, min_train_samples=10, holdout_fraction=0.25,
                     epochs=40, max_steps_per_run=400)


@pytest.fixture(scope="module")
def base_router() -> Router:
    return initial_router(RouterConfig(), CFG)


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def _requests(db: Database, replay: ReplayBuffer, n: int) -> dict[str, dict]:
    """Logged requests whose answers need k>=8 when similarity is mid-range (a world rule
    the first-start policy does not know: it sends k=4 there)."""
    world = {}
    for i in range(n):
        sim = 0.56 + 0.18 * (i % 10) / 10
        inp = FeatureInputs(query=f"what is item {i} in the inventory?", query_tokens=9,
                            query_vec=_vec(i),
                            retrieval={"n_hits": 10, "top_sim": sim, "mean_sim": sim - 0.1,
                                       "sim_std": 0.05, "hits_by_kind": {"document": 10}})
        rid = f"req{i}"
        with db.atomic() as conn:
            conn.execute("INSERT INTO requests(id, session_id, created_at, query, answer) "
                         "VALUES (?, ?, ?, ?, ?)", (rid, None, time.time(), inp.query, "no idea"))
        replay.add(ReplaySample(request_id=rid, features=build_features(inp), context_class=2,
                                mode_class=1, temperature=0.3, top_p=0.9, latency_s=0.4,
                                completion_tokens=30))
        world[inp.query] = {"features": build_features(inp)}
    return world


def _answer_with(query: str, d: Decision) -> Outcome:
    ok = d.mode != "memory" and d.context_k >= 8
    tokens = 0 if d.mode == "memory" else (25 if d.mode == "short" else 150)
    return Outcome("item is a hammer" if ok else "no idea", tokens, 0.1 + tokens / 100)


def _judge(q: str, a: str, ref: str | None) -> float:
    return 1.0 if "hammer" in a else 0.1


def test_job_explores_trains_installs_and_saves(base_router: Router, tmp_path: Path) -> None:
    db = Database(tmp_path / "memory.db")
    try:
        replay = ReplayBuffer(db, 1000, rng=np.random.default_rng(0))
        world = _requests(db, replay, 40)
        router = Router(base_router.layout, base_router.state, RouterConfig())
        path = tmp_path / "router.npz"
        job = Jb.RouterLearningJob(router, path, replay, CFG, answer_with=_answer_with,
                                   judge=_judge, lookup=Jb.db_lookup(db), seed=1)
        runs: list[tuple[str, str]] = []
        sched = IdleScheduler(CFG, [job.job()], max_memory_mb=8192,
                              on_run=lambda n, st, dt, rep: runs.append((n, st)))
        out = sched.run_now()
        report = out[Jb.JOB_NAME]["report"]
        assert out[Jb.JOB_NAME]["status"] == "ok", report
        assert report["judged"] == 40 and report["explored"] == 40
        assert all(s.labelled and s.quality is not None for s in replay.all())
        assert {s.target_context for s in replay.all()} == {CONTEXT_CLASSES.index(8)}
        assert report["train"]["accepted"], report["train"]
        assert router.version == 1 and path.exists()
        assert Router.load(path, RouterConfig()).version == 1
        hits = sum(router.decide(w["features"], None, {"max_tokens": 256, "temperature": 0.7,
                                                       "top_p": 0.9})[0].context_k == 8
                   for w in world.values())
        assert hits >= 32  # the router learned the world's rule
        assert runs == [(Jb.JOB_NAME, "ok")]
        n_expl = db.read("SELECT count(DISTINCT request_id) FROM explorations").fetchone()[0]
        assert n_expl == 40
    finally:
        db.close()


def test_job_without_pipeline_only_trains_and_rolls_back_when_worse(base_router: Router,
                                                                   tmp_path: Path) -> None:
    db = Database(tmp_path / "memory.db")
    try:
        replay = ReplayBuffer(db, 1000, rng=np.random.default_rng(0))
        rng = np.random.default_rng(5)
        # holdout labels agree with the current router; training labels contradict them
        for i in range(60):
            x = build_features(FeatureInputs(query=f"q{i}", query_tokens=3, query_vec=_vec(i)))
            out, _ = base_router.predict(x)
            c, m = int(out[10]), int(out[11])
            s = ReplaySample(request_id=f"r{i}", features=x, context_class=c, mode_class=m,
                             temperature=0.3, top_p=0.9, session_id=f"s{i}")
            if not is_holdout(s, CFG.holdout_fraction):
                c, m = (c + 2) % 5, (m + 1) % 3
            replay.add(dataclasses.replace(s, target_context=c, target_mode=m,
                                           label_source="feedback"))
        router = Router(base_router.layout, base_router.state, RouterConfig())
        job = Jb.RouterLearningJob(router, tmp_path / "router.npz", replay, CFG, seed=int(rng.integers(9)))
        sched = IdleScheduler(CFG, [job.job()], max_memory_mb=8192)
        report = sched.run_now()[Jb.JOB_NAME]["report"]
        assert report["judged"] == 0 and report["explored"] == 0
        assert report["train"]["rolled_back"], report["train"]
        assert router.version == 0 and not (tmp_path / "router.npz").exists()
        np.testing.assert_array_equal(router.state.theta, base_router.state.theta)
    finally:
        db.close()


def test_feedback_updates_quality_and_utility(tmp_path: Path) -> None:
    db = Database(tmp_path / "memory.db")
    try:
        replay = ReplayBuffer(db, 10)
        x = build_features(FeatureInputs(query="q", query_tokens=1, query_vec=_vec(1)))
        replay.add(ReplaySample("r1", x, 1, 1, 0.3, 0.9, latency_s=1.0, completion_tokens=100))
        assert Jb.record_feedback(replay, "r1", 5, None, CFG)
        s = replay.get("r1")
        assert s is not None and s.quality == 1.0
        assert s.utility == pytest.approx(1.0 - CFG.utility_latency_per_s * 1.0
                                          - CFG.utility_cost_per_token * 100)
        assert not Jb.record_feedback(replay, "unknown", 5, None, CFG)
    finally:
        db.close()


def test_a_wrong_reply_from_memory_is_worth_less_than_a_wrong_generated_one(
        tmp_path: Path) -> None:
    """Feedback uses the honest utility: a memory-mode reply (nothing generated) rated 1
    pays the risk cost; the plain utility ranked it above the generated one (no cost)."""
    from ruvllm_edge.learning.utility import MEMORY_RISK_COST
    from ruvllm_edge.router.policy import MEMORY, SHORT
    db = Database(tmp_path / "memory.db")
    try:
        replay = ReplayBuffer(db, 10)
        x = build_features(FeatureInputs(query="q", query_tokens=1, query_vec=_vec(2)))
        replay.add(ReplaySample("mem", x, 1, MEMORY, 0.3, 0.9, latency_s=0.0,
                                completion_tokens=0))
        replay.add(ReplaySample("gen", x, 1, SHORT, 0.3, 0.9, latency_s=0.5,
                                completion_tokens=20))
        for rid in ("mem", "gen"):
            assert Jb.record_feedback(replay, rid, 1, None, CFG)
        mem, gen = replay.get("mem"), replay.get("gen")
        assert mem is not None and gen is not None
        assert mem.utility == pytest.approx(-MEMORY_RISK_COST)
        assert mem.utility < gen.utility < 0.0
    finally:
        db.close()
