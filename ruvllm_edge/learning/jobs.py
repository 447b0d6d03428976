"""The router's idle-time job: judge, explore, train, validate, install, save.

Glue between the pure parts (explore, trainer) and their storage (replay
buffer, router file); the scheduler runs it as one cooperative ``Job``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import LearningConfig
from ..memory.db import Database
from ..router.policy import MEMORY, Router
from . import trainer
from .explore import AnswerWith, Judge, explore_one
from .replay import ReplayBuffer, ReplaySample
from .scheduler import Job, JobContext
from .utility import honest_utility, is_decline, quality_from_feedback

log = logging.getLogger(__name__)

JOB_NAME = "router_training"


@dataclass(frozen=True)
class RequestText:
    query: str
    answer: str
    reference: str | None  # the user's latest correction, if any


Lookup = Callable[[str], "RequestText | None"]


def db_lookup(db: Database) -> Lookup:
    """Query, answer and latest correction of a logged request (tables of migration 0001)."""
    def lookup(request_id: str) -> RequestText | None:
        row = db.read("SELECT query, answer FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            return None
        corr = db.read("SELECT correction FROM feedback WHERE request_id = ? AND correction IS "
                       "NOT NULL ORDER BY id DESC LIMIT 1", (request_id,)).fetchone()
        return RequestText(row[0], row[1], corr[0] if corr else None)
    return lookup


def record_feedback(replay: ReplayBuffer, request_id: str, rating: int | None,
                    correction: str | None, cfg: LearningConfig) -> bool:
    """Feed an explicit rating/correction into the replay sample's quality and utility."""
    s = replay.get(request_id)
    if s is None:
        return False
    q = quality_from_feedback(rating, correction, s.quality)
    if q is None:
        return False
    u = honest_utility(q, s.latency_s, s.completion_tokens, cfg.utility_latency_per_s,
                       cfg.utility_cost_per_token, from_memory=_from_memory(s))
    return replay.set_outcome(request_id, q, u)


def _from_memory(s: ReplaySample) -> bool:
    """The logged reply was a stored record returned in memory mode (nothing generated)."""
    return s.mode_class == MEMORY and s.completion_tokens == 0


class RouterLearningJob:
    """Callable job; ``answer_with``/``judge``/``lookup`` may be None (then it only trains)."""

    def __init__(self, router: Router, router_path: Path, replay: ReplayBuffer,
                 cfg: LearningConfig, *, answer_with: AnswerWith | None = None,
                 judge: Judge | None = None, lookup: Lookup | None = None,
                 max_tokens: int = 256, seed: int | None = None,
                 accept_z: float = trainer.TrainConfig.accept_z) -> None:
        self.router = router
        self.router_path = Path(router_path)
        self.replay = replay
        self.cfg = cfg
        self.answer_with = answer_with
        self.judge = judge
        self.lookup = lookup
        self.max_tokens = max_tokens
        self.rng = np.random.default_rng(seed)
        self.accept_z = float(accept_z)   # the accept gate's z (trainer._no_worse)

    def job(self, estimate_mb: float = 16.0) -> Job:
        return Job(JOB_NAME, self, estimate_mb)

    def _judge_pending(self, ctx: JobContext, limit: int) -> int:
        if self.judge is None or self.lookup is None:
            return 0
        n = 0
        for s in self.replay.unjudged(limit):
            if ctx.should_stop():
                break
            text = self.lookup(s.request_id)
            if text is None:
                continue
            q = min(max(float(self.judge(text.query, text.answer, text.reference)), 0.0), 1.0)
            u = honest_utility(q, s.latency_s, s.completion_tokens,
                               self.cfg.utility_latency_per_s, self.cfg.utility_cost_per_token,
                               declined=is_decline(text.answer), from_memory=_from_memory(s))
            self.replay.set_outcome(s.request_id, q, u)
            n += 1
        return n

    def _explore(self, ctx: JobContext) -> dict[str, int]:
        done = {"explored": 0, "generations": 0, "missing_text": 0}
        if (self.answer_with is None or self.judge is None or self.lookup is None
                or self.cfg.explore_per_run <= 0):
            return done
        for s in self.replay.to_explore(self.cfg.explore_per_run):
            if ctx.should_stop():
                break
            text = self.lookup(s.request_id)
            if text is None:
                self.replay.record_exploration(s.request_id, [])  # do not retry forever
                done["missing_text"] += 1
                continue
            res = explore_one(s, text.query, text.reference, self.router, self.answer_with,
                              self.judge, max_tokens=self.max_tokens,
                              max_candidates=self.cfg.explore_max_candidates,
                              latency_weight_per_s=self.cfg.utility_latency_per_s,
                              cost_weight_per_token=self.cfg.utility_cost_per_token,
                              should_stop=ctx.should_stop)
            done["generations"] += len(res.outcomes)
            if res.stopped:
                break  # a request is waiting; the partial grid is discarded
            self.replay.record_exploration(s.request_id, res.outcomes)
            ls = res.sample
            self.replay.set_target(s.request_id, ls.target_context or 0, ls.target_mode or 0,
                                   ls.target_temperature, ls.target_top_p, "explored")
            done["explored"] += 1
        return done

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        t0 = time.monotonic()
        report: dict[str, Any] = {"router_version": self.router.version}
        report["judged"] = self._judge_pending(ctx, max(self.cfg.explore_per_run, 1) * 4)
        report.update(self._explore(ctx))
        if ctx.should_stop():
            report["train"] = {"reason": "pre-empted before training"}
            return report
        samples = self.replay.all()
        train_s, hold_s = trainer.split_holdout(samples, self.cfg.holdout_fraction)
        new_state, rep = trainer.train(self.router.state, self.router.layout, train_s, hold_s,
                                       dataclasses.replace(trainer.TrainConfig.from_configs(
                                           self.router.cfg, self.cfg), accept_z=self.accept_z),
                                       self.rng, ctx.should_stop)
        if rep.accepted:
            version = self.router.install(new_state)
            self.router.save(self.router_path)
            report["router_version"] = version
        elif rep.rolled_back:
            log.warning("router training rolled back", extra={
                "acc_before": rep.holdout_acc_before, "acc_after": rep.holdout_acc_after,
                "loss_before": rep.holdout_loss_before, "loss_after": rep.holdout_loss_after})
        report["train"] = rep.to_dict()
        report["duration_s"] = time.monotonic() - t0
        return report
