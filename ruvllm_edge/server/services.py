"""The daemon's long-lived parts, as one object the ops and the lifecycle share.

Ops get this (as ``ctx.s``) instead of the Daemon, so an op depends on the
parts it uses and not on the socket loop that called it. ``cfg`` is replaced
as a whole on reload; everything else lives as long as the process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..config import Config
from ..inference import InferenceEngine
from ..memory.db import Database
from ..metrics import Metrics
from ..pipeline import Pipeline
from ..sessions import SessionStore
from .components import Components
from .lanes import Lanes


@dataclass
class Services:
    cfg: Config
    data_dir: Path
    db: Database
    engine: InferenceEngine
    sessions: SessionStore
    components: Components
    pipeline: Pipeline
    scheduler: Any                      # learning.scheduler.IdleScheduler | None
    learning_runs: Any                  # ops.learn.LearningRuns | None (None: learning is off)
    metrics: Metrics
    lanes: Lanes
    started_at: float = field(default_factory=time.time)
    endpoint: str = ""
    confidence_ema: float = 1.0         # the RouterLowConfidence alert reads its gauge
    node_counts: dict[str, int] = field(default_factory=dict)   # kind -> nodes, refreshed on aux
    table_rows: dict[str, int] = field(default_factory=dict)    # table -> rows, refreshed on aux

    def touch(self) -> None:
        """A request arrived or ended: idle-time learning yields and the idle clock restarts."""
        if self.scheduler is not None:
            self.scheduler.touch()

    def update_gauges(self) -> None:
        """The cheap gauges (no SQL): refreshed once a second and on every scrape."""
        m = self.metrics
        m.memory_usage.set(psutil.Process().memory_info().rss)
        m.model_loaded.set(1 if self.engine.loaded else 0)
        m.uptime.set(time.time() - self.started_at)
        m.quality.set(self.pipeline.recent_quality)
        mem = self.components.memory
        if mem is not None:
            m.writeback_queue.set(mem.writeback_depth())
        m.deferred.set(self.lanes.queued())
