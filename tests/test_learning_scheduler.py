"""Idle scheduler: idle/CPU gating, cooperative pre-emption, memory budget, counters."""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil

from ruvllm_edge.config import LearningConfig
from ruvllm_edge.learning.scheduler import IdleScheduler, Job, JobContext

FAST = LearningConfig(idle_after_s=0.2, training_interval_ms=1000, cpu_threshold_percent=50.0)


def _wait(pred: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


class Recorder:
    def __init__(self, work_s: float = 0.0, poll_s: float = 0.002) -> None:
        self.calls = 0
        self.work_s = work_s
        self.poll_s = poll_s
        self.started = threading.Event()
        self.ctx: JobContext | None = None
        self.returned_at: float | None = None

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        self.calls += 1
        self.ctx = ctx
        self.started.set()
        end = time.monotonic() + self.work_s
        steps = 0
        while time.monotonic() < end:
            if ctx.should_stop():
                break
            time.sleep(self.poll_s)  # a slice of cooperative work
            steps += 1
        self.returned_at = time.monotonic()
        return {"steps": steps}


def _sched(jobs: list[Job], cfg: LearningConfig = FAST, cpu: float = 0.0, rss: float = 100.0,
           **kw: Any) -> IdleScheduler:
    return IdleScheduler(cfg, jobs, max_memory_mb=2048, cpu_percent=lambda: cpu,
                         rss_mb=lambda: rss, **kw)


def test_real_system_probes_work() -> None:
    """The injected CPU/RSS probes in the other tests stand in for these psutil calls."""
    s = IdleScheduler(FAST, [], max_memory_mb=4096)
    assert 0 < psutil.Process().memory_info().rss
    assert 0.0 <= s._cpu() <= 100.0
    assert s.memory_headroom_mb() < 4096


def test_runs_only_after_idle_period() -> None:
    rec = Recorder()
    s = _sched([Job("train", rec)])
    s.start()
    try:
        for _ in range(10):  # a request every 50 ms: never idle for 200 ms
            s.touch()
            time.sleep(0.05)
        assert rec.calls == 0
        assert _wait(lambda: rec.calls == 1, 3.0)
    finally:
        assert s.stop(2.0)
    st = s.stats()["train"]
    assert st["runs"] == 1 and st["ok"] == 1 and st["last_report"] == {"steps": 0}


def test_busy_cpu_blocks_idle_runs() -> None:
    rec = Recorder()
    s = _sched([Job("train", rec)], cpu=90.0)
    s.start()
    try:
        time.sleep(0.6)
        assert rec.calls == 0
    finally:
        s.stop(2.0)


def test_a_request_preempts_a_running_job_within_100ms() -> None:
    rec = Recorder(work_s=10.0)
    done: list[tuple[str, str, float]] = []
    s = _sched([Job("train", rec), Job("decay", Recorder())],
               on_run=lambda name, status, dt, rep: done.append((name, status, dt)))
    s.start()
    try:
        assert rec.started.wait(3.0)
        time.sleep(0.05)
        touched = time.monotonic()
        s.touch()
        assert _wait(lambda: rec.returned_at is not None, 2.0)
        assert rec.ctx is not None and rec.ctx.stop_observed_at is not None
        observed = rec.ctx.stop_observed_at - touched
        assert observed < 0.1, f"the job saw the stop {observed * 1000:.1f} ms after touch()"
        assert rec.ctx.stop_reason == "request"
        assert _wait(lambda: bool(done), 2.0)
    finally:
        s.stop(2.0)
    assert done[0][:2] == ("train", "preempted")
    assert all(name != "decay" for name, _, _ in done)  # the next job waits for the next idle
    assert s.stats()["train"]["preempted"] == 1


def test_memory_budget_skips_or_stops_jobs() -> None:
    rec = Recorder()
    s = _sched([Job("big", rec, estimate_mb=500.0)], rss=1800.0)
    out = s.run_now()
    assert out["big"]["status"] == "skipped" and rec.calls == 0
    rss = {"mb": 100.0}
    rec2 = Recorder(work_s=5.0)
    s2 = IdleScheduler(FAST, [Job("grow", rec2)], max_memory_mb=2048, cpu_percent=lambda: 0.0,
                       rss_mb=lambda: rss["mb"])
    t = threading.Thread(target=s2.run_now)
    t.start()
    assert rec2.started.wait(2.0)
    rss["mb"] = 2040.0  # the job's allocations pushed the process near the budget
    t.join(2.0)
    assert not t.is_alive()
    assert rec2.ctx is not None and rec2.ctx.stop_reason == "memory"
    assert s2.stats()["grow"]["preempted"] == 1


def test_run_now_ignores_idleness_but_not_later_requests() -> None:
    rec = Recorder()
    s = _sched([Job("train", rec)], cfg=LearningConfig(idle_after_s=3600.0))
    s.touch()  # the learn request itself
    out = s.run_now(wait=True)
    assert out["train"]["status"] == "ok" and rec.calls == 1
    rec2 = Recorder(work_s=5.0)
    s2 = _sched([Job("train", rec2)], cfg=LearningConfig(idle_after_s=3600.0))
    assert s2.run_now(wait=False) == {"started": True}
    assert rec2.started.wait(2.0)
    s2.touch()
    assert _wait(lambda: rec2.returned_at is not None, 1.0)
    assert rec2.ctx is not None and rec2.ctx.stop_reason == "request"


def test_a_failing_job_is_counted_and_the_next_runs() -> None:
    def bad(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("boom")

    rec = Recorder()
    s = _sched([Job("bad", bad), Job("good", rec)])
    out = s.run_now()
    assert out["bad"]["status"] == "failed" and "boom" in out["bad"]["report"]["error"]
    assert out["good"]["status"] == "ok"
    st = s.stats()
    assert st["bad"]["failed"] == 1 and st["good"]["ok"] == 1
    assert st["good"]["total_s"] >= 0.0


def test_stop_asks_a_running_job_to_finish() -> None:
    rec = Recorder(work_s=30.0)
    s = _sched([Job("train", rec)])
    s.start()
    assert rec.started.wait(3.0)
    assert s.stop(2.0)
    assert rec.ctx is not None and rec.ctx.stop_reason == "shutdown"


def test_interval_between_idle_runs() -> None:
    rec = Recorder()
    s = _sched([Job("train", rec)], cfg=LearningConfig(idle_after_s=0.0,
                                                        training_interval_ms=60_000))
    s.start()
    try:
        assert _wait(lambda: rec.calls == 1, 2.0)
        time.sleep(0.5)
        assert rec.calls == 1
    finally:
        s.stop(2.0)


def test_disabled_learning_never_runs_idle_jobs() -> None:
    rec = Recorder()
    s = _sched([Job("train", rec)], cfg=LearningConfig(enabled=False, idle_after_s=0.0))
    s.start()
    time.sleep(0.4)
    s.stop(2.0)
    assert rec.calls == 0
