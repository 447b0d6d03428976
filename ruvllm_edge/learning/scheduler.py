"""The idle-time scheduler: learning jobs run only when the device has nothing better to do.

Rules (docs/learning.md):
- a run starts only when no request came for ``idle_after_s``, at least
  ``training_interval_ms`` after the previous run, and system CPU (psutil)
  is below ``cpu_threshold_percent``;
- jobs are cooperative: they poll ``ctx.should_stop()``, which turns true as
  soon as a request arrives (``touch``), on ``stop``, or when the process RSS
  gets within ``job_memory_margin_mb`` of ``system.max_memory_mb``. A job that
  polls every few milliseconds is pre-empted well within 100 ms;
- counts and durations per job are kept in ``stats()`` and handed to an
  ``on_run`` callback, so the metrics module can export them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from ..config import LearningConfig

log = logging.getLogger(__name__)

POLL_S = 0.05
MEMORY_CHECK_EVERY_S = 0.05


class JobContext:
    """What a running job sees: a cooperative stop signal and a memory guard."""

    def __init__(self, scheduler: "IdleScheduler", job: "Job", started: float,
                 preemptible: bool) -> None:
        self._sched = scheduler
        self.job = job
        self.started = started
        self.preemptible = preemptible
        self.stop_reason: str | None = None
        self._last_mem_check = 0.0
        self.stop_observed_at: float | None = None

    def should_stop(self) -> bool:
        """Poll this often (every few ms of work): True means return now, keeping nothing half-done."""
        if self.stop_reason is None:
            self.stop_reason = self._sched._stop_reason(self)
        if self.stop_reason is not None and self.stop_observed_at is None:
            self.stop_observed_at = time.monotonic()
        return self.stop_reason is not None

    def memory_ok(self, extra_mb: float = 0.0) -> bool:
        """True if ``extra_mb`` more would still fit under the budget (ask before allocating)."""
        return self._sched.memory_headroom_mb() >= extra_mb


@dataclass
class Job:
    """A named idle-time task: ``fn(ctx)`` returns a small report dict (or None)."""

    name: str
    fn: Callable[[JobContext], dict[str, Any] | None]
    # Expected extra memory; the job is skipped unless this fits under the budget.
    estimate_mb: float = 0.0


@dataclass
class JobStats:
    runs: int = 0
    ok: int = 0
    preempted: int = 0
    failed: int = 0
    skipped: int = 0
    total_s: float = 0.0
    last_s: float = 0.0
    last_status: str = ""
    last_at: float = 0.0
    last_report: dict[str, Any] = field(default_factory=dict)


class IdleScheduler:
    """Runs ``jobs`` in a background thread whenever the device is idle."""

    def __init__(self, cfg: LearningConfig, jobs: list[Job], *, max_memory_mb: float,
                 on_run: Callable[[str, str, float, dict[str, Any]], None] | None = None,
                 cpu_percent: Callable[[], float] | None = None,
                 rss_mb: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.jobs = list(jobs)
        self.max_memory_mb = float(max_memory_mb)
        self.on_run = on_run
        self._cpu = cpu_percent or (lambda: psutil.cpu_percent(interval=None))
        proc = psutil.Process()
        self._rss = rss_mb or (lambda: proc.memory_info().rss / 1_048_576)
        self._clock = clock
        self._last_touch = clock()
        self._last_run_end: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._run_lock = threading.Lock()  # one run at a time (idle loop or run_now)
        self._thread: threading.Thread | None = None
        self._stats: dict[str, JobStats] = {j.name: JobStats() for j in self.jobs}
        self._stats_lock = threading.Lock()
        self.running: str | None = None
        self._cpu()  # psutil's first reading is meaningless; prime it

    # -- signals -----------------------------------------------------------

    def touch(self) -> None:
        """Call on every request: marks activity and pre-empts a running job."""
        self._last_touch = self._clock()

    def memory_headroom_mb(self) -> float:
        return self.max_memory_mb - self.cfg.job_memory_margin_mb - self._rss()

    def _stop_reason(self, ctx: JobContext) -> str | None:
        if self._stop.is_set():
            return "shutdown"
        if ctx.preemptible and self._last_touch > ctx.started:
            return "request"
        now = self._clock()
        if now - ctx._last_mem_check >= MEMORY_CHECK_EVERY_S:
            ctx._last_mem_check = now
            if self.memory_headroom_mb() < 0:
                return "memory"
        return None

    def idle_for_s(self) -> float:
        return self._clock() - self._last_touch

    def _due(self) -> tuple[bool, str]:
        if not self.cfg.enabled:
            return False, "learning disabled"
        if self.idle_for_s() < self.cfg.idle_after_s:
            return False, "not idle"
        if (self._last_run_end is not None and
                self._clock() - self._last_run_end < self.cfg.training_interval_ms / 1000.0):
            return False, "interval"
        cpu = float(self._cpu())
        if cpu >= self.cfg.cpu_threshold_percent:
            return False, f"cpu {cpu:.0f}%"
        return True, ""

    # -- running -----------------------------------------------------------

    def _run_jobs(self, preemptible: bool) -> dict[str, Any]:
        results: dict[str, Any] = {}
        with self._run_lock:
            for job in self.jobs:
                if self._stop.is_set():
                    break
                results[job.name] = self._run_one(job, preemptible)
                if preemptible and results[job.name]["status"] == "preempted":
                    break  # a request is waiting: do not start the next job
            self._last_run_end = self._clock()
        return results

    def _run_one(self, job: Job, preemptible: bool) -> dict[str, Any]:
        t0 = self._clock()
        report: dict[str, Any] = {}
        if self.memory_headroom_mb() < job.estimate_mb:
            status = "skipped"
            report = {"reason": "memory budget", "headroom_mb": round(self.memory_headroom_mb())}
        else:
            ctx = JobContext(self, job, t0, preemptible)
            self.running = job.name
            try:
                report = job.fn(ctx) or {}
                status = "preempted" if ctx.stop_reason else "ok"
                if ctx.stop_reason:
                    report = {**report, "stop_reason": ctx.stop_reason}
            except Exception as exc:  # noqa: BLE001 - a failing job must not kill the daemon
                log.exception("idle job failed", extra={"job": job.name})
                status, report = "failed", {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                self.running = None
        dt = self._clock() - t0
        with self._stats_lock:
            st = self._stats.setdefault(job.name, JobStats())
            st.runs += 1
            setattr(st, status, getattr(st, status) + 1)
            st.total_s += dt
            st.last_s, st.last_status, st.last_at, st.last_report = dt, status, time.time(), report
        log.info("idle job finished", extra={"job": job.name, "status": status,
                                             "duration_s": round(dt, 4)})
        if self.on_run is not None:
            try:
                self.on_run(job.name, status, dt, report)
            except Exception:  # noqa: BLE001
                log.exception("on_run callback failed", extra={"job": job.name})
        return {"status": status, "duration_s": dt, "report": report}

    def run_now(self, wait: bool = True, preemptible: bool = True) -> dict[str, Any]:
        """Run every job now, ignoring idleness and CPU (``learn --now`` / the learn op).

        Touches before this call do not pre-empt it; requests arriving while it
        runs do (unless ``preemptible`` is False). With ``wait=False`` it starts
        in a thread and returns {"started": True}.
        """
        if not wait:
            threading.Thread(target=self._run_jobs, args=(preemptible,), daemon=True,
                             name="learn-now").start()
            return {"started": True}
        return self._run_jobs(preemptible)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            if self._stop.is_set():
                break
            due, _ = self._due()
            if due:
                self._run_jobs(preemptible=True)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="idle-scheduler")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the loop and ask a running job to stop; True if it ended in time."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        if alive:
            log.warning("idle scheduler did not stop in time", extra={"timeout_s": timeout,
                                                                       "job": self.running})
        return not alive

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per job: runs, ok, preempted, failed, skipped, total_s, last_s, last_status, ..."""
        with self._stats_lock:
            return {name: dict(vars(st)) for name, st in self._stats.items()}
