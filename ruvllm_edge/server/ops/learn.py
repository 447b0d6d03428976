"""``learn``: run the idle-time learning jobs now, one run at a time."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import NotFound
from ...memory.db import Database
from ...protocol import Arg
from .base import Op, OpContext

log = logging.getLogger(__name__)


@dataclass
class _Run:
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] = field(default_factory=dict)


class LearningRuns:
    """At most one ``learn`` run, in one tracked thread.

    ``start`` (wait=false) starts a run unless one is going, in which case the
    caller gets that run's status; ``wait`` (wait=true) joins the running run,
    or starts one and joins it. The thread releases its DB reader when it
    ends, so runs do not pile up open connections.
    """

    def __init__(self, scheduler: Any, db: Database) -> None:
        self.scheduler = scheduler          # learning.scheduler.IdleScheduler
        self.db = db
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: _Run = _Run()
        self._started_at = 0.0

    def running(self) -> dict[str, Any] | None:
        """What runs now: this runner's run, or the scheduler's own idle run."""
        ours = self._thread is not None and self._thread.is_alive()
        if not ours and self.scheduler.running is None:
            return None
        return {"job": self.scheduler.running,
                "for_s": round(time.monotonic() - self._started_at, 3) if ours else None}

    def _start_locked(self) -> None:
        self._current = run = _Run()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(run,), name="learn-run",
                                        daemon=True)
        self._thread.start()

    def _run(self, run: "_Run") -> None:
        try:
            run.result = self.scheduler.run_now(wait=True)
        except Exception as exc:  # noqa: BLE001 - the scheduler catches job errors; this is a bug
            log.exception("learning run failed")
            run.result = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            self.db.release_reader()
            run.done.set()

    def start(self) -> dict[str, Any]:
        with self._lock:
            now = self.running()
            if now is not None:
                return {"started": False, "running": now}
            self._start_locked()
            return {"started": True, "running": self.running()}

    def wait(self) -> dict[str, Any]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._start_locked()
            run = self._current
        run.done.wait()
        return {"jobs": run.result}


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    runs = ctx.s.learning_runs
    if runs is None:
        raise NotFound("learning is disabled (learning.enabled = false or no router)")
    return runs.wait() if args.get("wait") else runs.start()


OPS = [Op("learn", "slow", {"wait": Arg(bool, default=False)}, execute)]
