"""Builds the optional parts of the daemon (memory, router, learning) from config.

Why a separate module: each part can be switched off in the config or can be
unavailable (a missing embedder file), and the daemon must still serve what it
can. This is the one place that decides what exists, how the parts are wired
to each other, and how a missing part shows up in health.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import kernels, models as catalogue
from ..config import Config, LearningConfig
from ..errors import RuvError
from ..memory.db import Database

log = logging.getLogger(__name__)

ROUTER_FILE = "router.npz"


@dataclass
class Components:
    cfg: Config
    db: Database
    data_dir: Path
    embedder: Any = None
    memory: Any = None
    router: Any = None
    replay: Any = None
    memory_error: str | None = None   # why the embedder (so memory and router) is missing
    learning_job: Any = None          # learning.jobs.RouterLearningJob, once make_scheduler ran
    # Where installed first-start routers are looked up (router/prior.py); None: never.
    cache_dir: Path | None = None
    # No installed first-start router: train it in a background thread (decisions are
    # the config's fallback meanwhile) instead of before serving. The daemon's choice.
    background_training: bool = False
    router_trainer: threading.Thread | None = None
    # Where this start's router came from: "saved" (the data dir's router.npz),
    # "installed" (precomputed by `ruvllm-edge warm`) or "trained" (just now).
    router_source: str | None = None

    @property
    def router_path(self) -> Path:
        return self.data_dir / ROUTER_FILE

    @classmethod
    def build(cls, cfg: Config, db: Database, data_dir: Path, cache_dir: Path | None = None,
              background_training: bool = False) -> "Components":
        """The parts the config asks for.

        ``cache_dir``: where ``warm`` put its precomputed first-start routers (the
        daemon passes ``prior.default_cache_dir()``). ``background_training``: when
        there is none for this config, serve the config's fallback while the
        first-start router trains in a thread, instead of training it first.
        """
        c = cls(cfg, db, data_dir, cache_dir=cache_dir, background_training=background_training)
        if cfg.memory.enabled or cfg.router.enabled:
            c._build_embedder()
        if cfg.memory.enabled and c.embedder is not None:
            from ..memory.store import MemoryStore
            c.memory = MemoryStore(db, cfg.memory, c.embedder)
        if cfg.router.enabled and c.embedder is not None:
            c._build_router()
        return c

    def _build_embedder(self) -> None:
        from ..embedding import Embedder

        name = self.cfg.embedding.model
        try:
            model_path, sha = catalogue.resolve(name, self.cfg.models_dir)
            tok_name = catalogue.EMBEDDER_TOKENIZER.get(name)
            if tok_name is None:
                raise RuvError(f"embedding.model {name!r} has no catalogued tokenizer")
            tok_path, tok_sha = catalogue.resolve(tok_name, self.cfg.models_dir)
            catalogue.verify_file(model_path, sha)
            catalogue.verify_file(tok_path, tok_sha)
            e = self.cfg.embedding
            self.embedder = Embedder(model_path, tok_path, threads=e.threads,
                                     cache_entries=e.cache_entries, max_seq_tokens=e.max_seq_tokens,
                                     batch_size=e.batch_size)
        except (RuvError, catalogue.ModelIntegrityError) as exc:
            self.memory_error = str(exc)
            log.error("embedder unavailable: memory and router are off",
                      extra={"error": str(exc)})

    def _build_router(self) -> None:
        from ..learning.replay import ReplayBuffer
        from ..router.policy import Router

        t0 = time.monotonic()
        router, source = Router.load_usable(self.router_path, self.cfg.router), "saved"
        if router is None:
            router, source = self._first_start_router()
        if router.ready and not self.router_path.exists():
            router.save(self.router_path)   # the next start loads instead of re-deriving
        router.warm_up()   # its kernels load now, not on the first request (placeholder too)
        self.router, self.router_source = router, source
        log.info("router ready" if router.ready else "router training in the background",
                 extra={"version": router.version, "source": source, "bytes": router.size_bytes(),
                        "s": round(time.monotonic() - t0, 3)})
        if self.cfg.learning.enabled:
            self.replay = ReplayBuffer(self.db, self.cfg.learning.replay_capacity)

    def _first_start_router(self) -> tuple[Any, str]:
        """No router in the data dir: the one `warm` installed for this config, else train it."""
        from ..learning.curriculum import initial_key, initial_router
        from ..router import prior

        if self.cache_dir is not None:
            key = initial_key(self.cfg.router, self.cfg.learning)
            router = prior.load_installed(self.cache_dir, key, self.cfg.router)
            if router is not None:
                return router, "installed"
            log.info("no installed first-start router for this config; training it",
                     extra={"cache_dir": str(self.cache_dir), "key": key,
                            "background": self.background_training})
        if not self.background_training:
            return initial_router(self.cfg.router, self.cfg.learning), "trained"
        return self._train_in_background(), "trained"

    def _train_in_background(self) -> Any:
        """A not-ready router (fallback decisions) whose first-start weights train in a thread.

        The placeholder has the right shapes (so its kernels load now); the trained
        weights replace it atomically (``Router.install_initial``) and are saved.
        """
        import numpy as np

        from ..learning.curriculum import initial_router
        from ..router import fastgrnn as fg
        from ..router.policy import Router
        from ..router.state import TrainState

        layout = Router.layout_for(self.cfg.router)
        theta = fg.init_params(layout, np.random.default_rng(self.cfg.router.init_seed),
                               self.cfg.router.sparsity)
        router = Router(layout, TrainState.fresh(theta), self.cfg.router, version=0, ready=False)

        def train() -> None:
            t0 = time.monotonic()
            try:
                router.install_initial(initial_router(self.cfg.router, self.cfg.learning).state)
                router.save(self.router_path)
            except Exception:  # noqa: BLE001 - the fallback keeps serving; say why
                log.exception("first-start router training failed; decisions stay on the fallback")
                return
            log.info("router ready", extra={"version": router.version, "source": "trained",
                                            "background": True,
                                            "s": round(time.monotonic() - t0, 3)})

        self.router_trainer = threading.Thread(target=train, name="router-initial", daemon=True)
        self.router_trainer.start()
        return router

    def make_scheduler(self, pipeline: Any, engine: Any,
                       on_run: Callable[[str, str, float, dict[str, Any]], None]) -> Any:
        """The idle-time jobs: router training, memory edge decay and eviction, log retention."""
        if not self.cfg.learning.enabled:
            return None
        from ..learning.jobs import RouterLearningJob, db_lookup
        from ..learning.judge import judge_answer
        from ..learning.scheduler import IdleScheduler, Job

        jobs: list[Job] = []
        holder: dict[str, Any] = {}

        def preempted_since(start: float) -> Callable[[], str | None]:
            def stop() -> str | None:
                sched = holder.get("sched")
                if sched is not None and sched.idle_for_s() < time.monotonic() - start:
                    return "cancelled"   # a request arrived: give the model back now
                return None
            return stop

        def answer_with(query: str, decision: Any) -> Any:
            return pipeline.answer_with(query, decision, preempted_since(time.monotonic()))

        def judge(question: str, answer: str, reference: str | None) -> float:
            stop = preempted_since(time.monotonic())
            return judge_answer(lambda msgs, n, temp: engine.complete(msgs, n, temp, stop),
                                question, answer, reference,
                                self.embedder.embed if self.embedder is not None else None)

        if self.router is not None and self.replay is not None:
            rj = RouterLearningJob(self.router, self.router_path, self.replay, self.cfg.learning,
                                   answer_with=answer_with, judge=judge, lookup=db_lookup(self.db),
                                   max_tokens=self.cfg.inference.max_tokens)
            jobs.append(rj.job())
            self.learning_job = rj
        if self.memory is not None:
            mem = self.memory
            jobs.append(Job("edge_decay", lambda ctx: {"edges_changed": mem.decay_edges()}))
            jobs.append(Job("eviction", lambda ctx: {"evicted": mem.evict()}))
            if self.cfg.memory.compress_enabled and self.embedder is not None:
                from ..memory.compress import compression_job
                jobs.append(compression_job(mem, engine.complete, self.embedder.embed,
                                            self.cfg.memory))
        from ..memory.maintenance import apply_retention   # the logs grow with or without memory
        jobs.append(Job("retention", lambda ctx: apply_retention(self.db, self.cfg.retention,
                                                                 should_stop=ctx.should_stop)))
        sched = IdleScheduler(self.cfg.learning, jobs, max_memory_mb=self.cfg.system.max_memory_mb,
                              on_run=on_run)
        holder["sched"] = sched
        return sched

    def health(self, scheduler: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if self.cfg.memory.enabled:
            if self.memory is not None:
                out["memory"] = {"status": "healthy", "index_entries": len(self.memory.index),
                                 "writeback_queued": self.memory.writeback_depth()}
            else:
                out["memory"] = {"status": "degraded", "error": self.memory_error}
        if self.cfg.router.enabled:
            if self.router is not None:
                # "starting": the first-start weights are still training (fallback decisions).
                out["router"] = {"status": "healthy" if self.router.ready else "starting",
                                 "version": self.router.version,
                                 "size_bytes": self.router.size_bytes(),
                                 "source": self.router_source}
            else:
                out["router"] = {"status": "degraded", "error": self.memory_error}
        if scheduler is not None:
            out["learning"] = {"status": "healthy", "running": scheduler.running,
                               "idle_s": round(scheduler.idle_for_s(), 1)}
        if self.cfg.memory.enabled or self.cfg.router.enabled:   # the parts with numba kernels
            out["kernels"] = {"status": "healthy", **kernels.totals()}
        return out

    def apply_learning(self, learning: LearningConfig, scheduler: Any) -> None:
        """A reloaded [learning] section reaches every part that copied it at start-up."""
        from ..learning.trainer import TrainConfig

        self.cfg = dataclasses.replace(self.cfg, learning=learning)
        if scheduler is not None:
            scheduler.cfg = learning
        if self.learning_job is not None:
            self.learning_job.cfg = learning
        if self.router is not None:
            self.router.learning = learning
            self.router.train_config = TrainConfig.from_configs(self.router.cfg, learning)

    def save(self) -> None:
        """Shutdown: persist the router (its weights change only by installed training)."""
        if self.router is not None:
            self.router.save(self.router_path)
