"""``health``, ``metrics``, ``stats`` and ``cancel``: the ops answered on the socket thread.

They must stay cheap (no generation, no embedding, no scan of the memory
graph): a monitoring probe or a cancel gets its answer in milliseconds while
the model generates.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import psutil

from ... import __version__
from ...errors import NotFound
from ...protocol import ID
from ..services import Services
from .base import Op, OpContext

MB = 1_048_576


def health(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    s = ctx.s
    comps: dict[str, dict[str, Any]] = {}
    critical = degraded = False
    t = time.perf_counter()
    try:
        s.db.read("SELECT 1").fetchone()
        comps["database"] = {"status": "healthy",
                             "latency_ms": round((time.perf_counter() - t) * 1000, 2)}
    except Exception as exc:  # noqa: BLE001
        comps["database"] = {"status": "critical", "error": str(exc)}
        critical = True
    eng = s.engine.status()
    if s.engine.state == "unavailable":
        eng["status"] = "degraded"
        degraded = True
    else:
        eng["status"] = "healthy"
    comps["inference"] = eng
    rss_mb = psutil.Process().memory_info().rss / MB
    free_disk_mb = shutil.disk_usage(s.data_dir).free / MB
    res = {"rss_mb": round(rss_mb, 1), "budget_mb": s.cfg.system.max_memory_mb,
           "mem_available_mb": round(psutil.virtual_memory().available / MB, 1),
           "disk_free_mb": round(free_disk_mb, 1)}
    if rss_mb > s.cfg.system.max_memory_mb:
        res["status"] = "critical"
        critical = True
    elif free_disk_mb < s.cfg.system.min_free_disk_mb:
        res["status"] = "degraded"
        degraded = True
    else:
        res["status"] = "healthy"
    comps["resources"] = res
    comps["queue"] = {"status": "healthy", **s.lanes.sizes(), "max": s.cfg.server.max_queue,
                      "active": len(s.lanes.jobs)}
    for name, comp in s.components.health(s.scheduler).items():
        comps[name] = comp
        degraded = degraded or comp.get("status") == "degraded"
    status = "critical" if critical else "degraded" if degraded else "healthy"
    return {"status": status, "components": comps, "version": __version__,
            "uptime_s": round(time.time() - s.started_at, 1)}


def _totals(counter: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = "/".join(sample.labels.values()) or "all"
                out[key] = out.get(key, 0) + sample.value
    return out


def stats(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    s = ctx.s
    m = s.metrics
    return {
        "version": __version__, "uptime_s": round(time.time() - s.started_at, 1),
        "endpoint": s.endpoint, "data_dir": str(s.data_dir),
        "requests": _totals(m.requests), "errors": _totals(m.errors),
        "malformed": _totals(m.malformed),
        "tokens": {"prompt": _totals(m.prompt_tokens).get("all", 0),
                   "cached": _totals(m.cached_prompt_tokens).get("all", 0),
                   "completion": _totals(m.completion_tokens).get("all", 0)},
        "queue": {**s.lanes.sizes(), "active": len(s.lanes.jobs)},
        "learning": s.scheduler.stats() if s.scheduler is not None else None,
        "model": s.engine.status(),
        "rss_mb": round(psutil.Process().memory_info().rss / MB, 1),
    }


def metrics(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Gauges and counters only: node counts come from the last snapshot (refresh_node_counts)."""
    s = ctx.s
    s.update_gauges()
    for kind, n in s.node_counts.items():
        s.metrics.memory_nodes.labels(kind).set(n)
    for table, n in s.table_rows.items():
        s.metrics.table_rows.labels(table).set(n)
    return {"text": s.metrics.render()}


def refresh_node_counts(s: Services) -> None:
    """A periodic task on the aux lane (server/tasks.py): the snapshot a scrape reads.

    Both come from trigger-kept counters (memory/maintenance.py), so this is
    cheap; it still runs on a worker so the socket thread never reads SQLite.
    """
    from ...memory.maintenance import table_rows

    if s.components.memory is not None:
        s.node_counts = s.components.memory.counts_by_kind()
    s.table_rows = table_rows(s.db)


def cancel(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    target = args["request_id"]
    victim = ctx.s.lanes.jobs.find(ctx.job.ident, target)
    if victim is None:
        raise NotFound(f"no queued or running request {target!r}", request_id=target)
    victim.cancel.set()
    return {"request_id": victim.request_id, "cancelled": True,
            "state": "running" if victim.started else "queued"}


OPS = [
    Op("health", "inline", {}, health, passive=True),
    Op("metrics", "inline", {}, metrics, passive=True),
    Op("stats", "inline", {}, stats, passive=True),
    Op("cancel", "inline", {"request_id": ID}, cancel),
]
