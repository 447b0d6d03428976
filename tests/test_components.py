"""Which optional parts exist, and how a missing part shows up."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge import config, models as catalogue
from ruvllm_edge.server.components import Components
from ruvllm_edge.memory.db import Database


def load(tmp_path: Path, models_dir: Path, **sections: object) -> config.Config:
    cfg = config.load(env={}, data_dir=str(tmp_path), models_dir=str(models_dir))
    return dataclasses.replace(cfg, **sections)


def test_everything_on_by_default(tmp_path: Path, models_dir: Path) -> None:
    db = Database(tmp_path / "memory.db")
    c = Components.build(load(tmp_path, models_dir), db, tmp_path)
    assert c.embedder is not None and c.memory is not None and c.router is not None
    assert c.replay is not None and (tmp_path / "router.npz").exists()
    health = c.health(None)
    assert health["memory"]["status"] == health["router"]["status"] == "healthy"
    c.memory.close()
    db.close()


def test_switched_off_parts_do_not_exist(tmp_path: Path, models_dir: Path) -> None:
    cfg = load(tmp_path, models_dir)
    cfg = dataclasses.replace(cfg, memory=dataclasses.replace(cfg.memory, enabled=False),
                              router=dataclasses.replace(cfg.router, enabled=False),
                              learning=dataclasses.replace(cfg.learning, enabled=False))
    db = Database(tmp_path / "memory.db")
    c = Components.build(cfg, db, tmp_path)
    assert (c.embedder, c.memory, c.router, c.replay) == (None, None, None, None)
    assert c.health(None) == {}
    assert c.make_scheduler(None, None, lambda *a: None) is None
    db.close()


def test_a_corrupt_embedder_degrades_memory_and_router(tmp_path: Path, models_dir: Path) -> None:
    mdir = tmp_path / "models"
    mdir.mkdir()
    for name in catalogue.REQUIRED:
        shutil.copy(catalogue.path_of(name, models_dir), mdir)
    catalogue.path_of("minilm-l6-int8", mdir).write_bytes(b"not onnx")
    db = Database(tmp_path / "memory.db")
    c = Components.build(load(tmp_path, mdir), db, tmp_path)
    assert c.memory is None and c.router is None and "sha256" in (c.memory_error or "")
    health = c.health(None)
    assert health["memory"]["status"] == "degraded" and health["router"]["status"] == "degraded"
    db.close()


def test_idle_jobs_are_registered(tmp_path: Path, models_dir: Path) -> None:
    db = Database(tmp_path / "memory.db")
    c = Components.build(load(tmp_path, models_dir), db, tmp_path)
    from ruvllm_edge.inference import InferenceEngine
    cfg = load(tmp_path, models_dir)
    engine = InferenceEngine(cfg.inference, cfg.system, models_dir)   # loads lazily
    sched = c.make_scheduler(pipeline=None, engine=engine, on_run=lambda *a: None)
    assert [j.name for j in sched.jobs] == ["router_training", "edge_decay", "eviction",
                                            "compression", "retention"]
    c.memory.close()
    db.close()


def test_a_reloaded_learning_section_reaches_scheduler_job_and_router(tmp_path: Path,
                                                                      models_dir: Path) -> None:
    db = Database(tmp_path / "memory.db")
    cfg = load(tmp_path, models_dir)
    c = Components.build(cfg, db, tmp_path)
    from ruvllm_edge.inference import InferenceEngine
    sched = c.make_scheduler(pipeline=None, engine=InferenceEngine(cfg.inference, cfg.system,
                                                                   models_dir),
                             on_run=lambda *a: None)
    new = dataclasses.replace(cfg.learning, idle_after_s=5.0, min_train_samples=3,
                              utility_latency_per_s=0.5)
    c.apply_learning(new, sched)
    assert sched.cfg is new and c.learning_job.cfg is new and c.cfg.learning is new
    assert c.router.train_config.min_train_samples == 3 and c.router.learning is new
    c.memory.close()
    db.close()


def test_first_start_router_comes_from_the_installed_prior_then_the_data_dir(
        tmp_path: Path, models_dir: Path) -> None:
    """A fresh data dir copies the router `warm` installed for this config (no training);
    the next start loads its own router.npz; without a prior it trains ("trained")."""
    from ruvllm_edge.learning.curriculum import initial_key, initial_router
    from ruvllm_edge.router import prior

    cache = tmp_path / "cache"
    cfg = load(tmp_path / "a", models_dir)
    trained = initial_router(cfg.router, cfg.learning)
    path = prior.install(trained, cache, initial_key(cfg.router, cfg.learning))
    sources = []
    for name, cache_dir in (("a", cache), ("a", cache), ("b", None), ("c", tmp_path / "empty")):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        db = Database(d / "memory.db")
        c = Components.build(load(d, models_dir), db, d, cache_dir=cache_dir)
        sources.append(c.router_source)
        assert c.health(None)["router"]["source"] == c.router_source
        assert np.array_equal(c.router.state.theta, trained.state.theta)
        assert (d / "router.npz").exists()
        c.memory.close()
        db.close()
    assert sources == ["installed", "saved", "trained", "trained"]
    assert path.exists()   # the daemon reads the cache, never moves or rewrites it


def test_another_config_never_loads_the_default_configs_prior(tmp_path: Path,
                                                              models_dir: Path) -> None:
    from ruvllm_edge.learning.curriculum import initial_key, initial_router
    from ruvllm_edge.router import prior

    cache = tmp_path / "cache"
    base = load(tmp_path, models_dir)
    prior.install(initial_router(base.router, base.learning), cache,
                  initial_key(base.router, base.learning))
    cfg = dataclasses.replace(base, router=dataclasses.replace(base.router, init_seed=7))
    db = Database(tmp_path / "memory.db")
    c = Components.build(cfg, db, tmp_path, cache_dir=cache)
    assert c.router_source == "trained"
    c.memory.close()
    db.close()


def test_a_damaged_prior_costs_a_training_run_not_the_start(tmp_path: Path,
                                                            models_dir: Path) -> None:
    from ruvllm_edge.learning.curriculum import initial_key
    from ruvllm_edge.router import prior

    cfg = load(tmp_path, models_dir)
    path = prior.prior_path(tmp_path / "cache", initial_key(cfg.router, cfg.learning))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a router")
    db = Database(tmp_path / "memory.db")
    c = Components.build(cfg, db, tmp_path, cache_dir=tmp_path / "cache")
    assert c.router_source == "trained" and c.router is not None
    assert path.read_bytes() == b"not a router"   # left alone: it may be shared, read-only
    c.memory.close()
    db.close()


def test_health_reports_which_kernels_were_compiled_in_this_process(tmp_path: Path,
                                                                   models_dir: Path) -> None:
    """The routing and memory kernels are loaded at build time (never on the first
    request), and health says whether numba compiled or loaded them."""
    db = Database(tmp_path / "memory.db")
    c = Components.build(load(tmp_path, models_dir), db, tmp_path)
    from ruvllm_edge import kernels

    used = kernels.per_kernel()
    for name in ("ruvllm_edge.router.fastgrnn.infer_step", "ruvllm_edge.router.features._assemble",
                 "ruvllm_edge.memory.bitindex.nearest_kernel", "ruvllm_edge.ranking._forward_kernel"):
        assert name in used, (name, used)
    k = c.health(None)["kernels"]
    assert k["status"] == "healthy"
    assert k["from_cache"] + k["compiled"] == sum(v["from_cache"] + v["compiled"]
                                                  for v in used.values()) > 0
    c.memory.close()
    db.close()


def test_without_an_installed_router_the_daemon_trains_it_in_the_background(
        tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Meanwhile health says "starting", decisions are the config's fallback and nothing
    is saved; then the trained weights are swapped in (still version 0) and saved."""
    import threading

    from ruvllm_edge.learning import curriculum
    from ruvllm_edge.router.features import FeatureInputs, build_features

    cfg = load(tmp_path, models_dir)
    trained = curriculum.initial_router(cfg.router, cfg.learning)
    release = threading.Event()

    def slow_initial_router(*args: object) -> object:
        assert release.wait(60)
        return trained

    monkeypatch.setattr(curriculum, "initial_router", slow_initial_router)
    db = Database(tmp_path / "memory.db")
    c = Components.build(cfg, db, tmp_path, cache_dir=tmp_path / "empty",
                         background_training=True)
    vec = np.zeros(384, np.float32)
    vec[0] = 1.0
    x = build_features(FeatureInputs(query="hi", query_tokens=1, query_vec=vec))
    defaults = {"max_tokens": 99, "temperature": 0.33, "top_p": 0.77}
    try:
        assert c.router is not None and not c.router.ready and c.router_source == "trained"
        assert c.health(None)["router"]["status"] == "starting"
        d, _ = c.router.decide(x, None, defaults)
        assert d.fallback and (d.temperature, d.top_p, d.max_tokens) == (0.33, 0.77, 99)
        c.save()                                        # shutdown now: nothing half-made saved
        assert not (tmp_path / "router.npz").exists()
    finally:
        release.set()
    assert c.router_trainer is not None
    c.router_trainer.join(60)
    assert c.router.ready and c.router.version == 0
    assert c.health(None)["router"]["status"] == "healthy"
    assert np.array_equal(c.router.state.theta, trained.state.theta)
    assert (tmp_path / "router.npz").exists()
    assert c.router.decide(x, None, defaults)[0] == trained.decide(x, None, defaults)[0]
    c.memory.close()
    db.close()
