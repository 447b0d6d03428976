"""Keeping the one SQLite file bounded over months: decay, eviction, retention.

- Decay (idle job ``edge_decay``): learned associations (graph.DECAYING_KINDS)
  lose weight by their idle time with half-life ``edge_half_life_days``;
  those below ``edge_min_weight`` are dropped. Decay is memoryless: two runs
  equal one run over the same span. The vector change log is trimmed here.
- Eviction (idle job ``eviction``, and after writes past capacity): past
  ``max_nodes``, delete the lowest quality x recency x use (graph.node_value)
  down to ``evict_low_water_fraction`` of max_nodes, so it does not run on
  every write. Facts (user corrections included) and documents are never
  evicted.
- Retention (idle job ``retention``, config ``[retention]``): the logs
  (requests, sessions and their turns, feedback, explorations, learning runs)
  keep rows younger than their max age and at most their max rows, oldest
  first, in small transactions. Rows something still needs stay (see
  ``LOG_TABLES``): a feedback row not yet applied (the feedback outbox
  re-applies it) and its request; requests in the replay buffer (the explorer
  looks their text up) and their feedback (the judge's reference); the newest
  run of each learning job. A request's applied feedback goes with it (the
  foreign key).
- Sizes: ``table_rows`` reads trigger-kept counters (migration 0005), cheap
  enough for every metrics scrape; ``table_sizes`` adds bytes per table from
  SQLite's dbstat (it reads every page: for ``memory.stats``, not metrics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..config import MemoryConfig, RetentionConfig
from ..errors import StorageError
from .db import Connection, Database, OperationalError
from .graph import DECAYING_KINDS, NODE_VALUE_SQL, SECONDS_PER_DAY
from .nodes import chunks, marks, named, node_count
from .types import PROTECTED_KINDS

log = logging.getLogger(__name__)

VEC_LOG_KEEP = 20_000     # vec_log entries kept; a mirror further behind reloads in full


def decay_edges(db: Database, cfg: MemoryConfig, now: float | None = None) -> int:
    """Decay learned edges by their idle time; drop those below min weight. Returns edges removed."""
    now = time.time() if now is None else now
    kinds = marks(len(DECAYING_KINDS))
    with db.atomic() as conn:
        conn.execute(f"UPDATE edges SET weight = weight * pow(0.5, (? - updated_at) / ?), updated_at = ? "
                     f"WHERE kind IN ({kinds}) AND updated_at < ? - 3600",
                     (now, cfg.edge_half_life_days * SECONDS_PER_DAY, now, *DECAYING_KINDS, now))
        removed = conn.execute(f"DELETE FROM edges WHERE kind IN ({kinds}) AND weight < ?",
                               (*DECAYING_KINDS, cfg.edge_min_weight)).rowcount
        conn.execute("DELETE FROM vec_log WHERE seq <= (SELECT max(seq) FROM vec_log) - ?", (VEC_LOG_KEEP,))
    return int(removed)


def evict(db: Database, cfg: MemoryConfig) -> int:
    """Past max_nodes, delete the least valuable unprotected nodes. Returns nodes deleted."""
    with db.atomic() as conn:
        total = int(conn.execute("SELECT count(*) FROM nodes").fetchone()[0])
        if total <= cfg.max_nodes:
            return 0
        need = total - int(cfg.max_nodes * cfg.evict_low_water_fraction)
        victims = _victims(conn, need, cfg.evict_recency_half_life_days)
        for part in chunks(victims):
            conn.execute(f"DELETE FROM nodes WHERE id IN ({marks(len(part))})", part)
    if len(victims) < need:
        log.warning("memory over capacity but only protected nodes remain",
                    extra={"nodes": total - len(victims), "max_nodes": cfg.max_nodes})
    log.info("memory evicted", extra={"evicted": len(victims), "nodes_before": total})
    return len(victims)


def maybe_evict(db: Database, cfg: MemoryConfig) -> int:
    """After a write: evict if over capacity; a storage error waits for the next write."""
    try:
        return evict(db, cfg) if node_count(db) > cfg.max_nodes else 0
    except StorageError:
        log.warning("eviction failed, will retry on the next write")
        return 0


def _victims(conn: Connection, need: int, half_life_days: float) -> list[int]:
    kinds, params = named("k", PROTECTED_KINDS)
    args: dict[str, Any] = {**params, "now": time.time(), "half_life_days": half_life_days, "need": need}
    return [int(r[0]) for r in conn.execute(
        f"SELECT id FROM nodes WHERE kind NOT IN ({kinds}) AND source != 'feedback' "
        f"ORDER BY {NODE_VALUE_SQL} ASC, id ASC LIMIT :need", args)]


# ---------------------------------------------------------------------------
# Retention of the logs


@dataclass(frozen=True)
class LogTable:
    """How retention treats one log table."""

    name: str
    time_col: str          # a row's age is measured from this column
    keep: str              # SQL condition: rows that must stay whatever their age
    order: str = "rowid"   # oldest first, for the row cap
    # (table, column) whose rows reference a deleted row's id and go first (the foreign key)
    children: tuple[str, str] | None = None


LOG_TABLES = (
    # Sessions by last use, so a long-lived session in use is never the oldest; turns cascade.
    LogTable("sessions", "last_used_at", "0", order="last_used_at, rowid"),
    LogTable("turns", "created_at", "0"),
    LogTable("requests", "created_at",
             "id IN (SELECT request_id FROM replay) "
             "OR id IN (SELECT request_id FROM feedback WHERE applied_at IS NULL)",
             children=("feedback", "request_id")),
    LogTable("feedback", "created_at", "applied_at IS NULL OR request_id IN (SELECT request_id FROM replay)"),
    LogTable("explorations", "created_at", "0"),
    LogTable("learning_runs", "started_at", "id IN (SELECT max(id) FROM learning_runs GROUP BY job)"),
)


def apply_retention(db: Database, policy: RetentionConfig, now: float | None = None,
                    should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Prune every log table to its policy; returns rows deleted and left per table.

    Deletes in transactions of ``policy.batch_rows`` rows, checking
    ``should_stop`` between them (a request pre-empts the idle job; the next
    run carries on).
    """
    report: dict[str, Any] = {"enabled": policy.enabled}
    if not policy.enabled:
        return report
    now = time.time() if now is None else now
    for t in LOG_TABLES:
        max_age_days = float(getattr(policy, f"{t.name}_max_age_days"))
        max_rows = int(getattr(policy, f"{t.name}_max_rows"))
        deleted = _prune(db, t, now - max_age_days * SECONDS_PER_DAY, max_rows, policy.batch_rows, should_stop)
        report[t.name] = {"deleted": deleted, "rows": table_rows(db)[t.name]}
        if should_stop():
            report["stopped"] = True
            break
    log.info("retention applied", extra={k: v["deleted"] for k, v in report.items() if isinstance(v, dict)})
    return report


def _prune(db: Database, t: LogTable, cutoff: float, max_rows: int, batch: int,
           should_stop: Callable[[], bool]) -> int:
    """Delete rows older than ``cutoff``, then the oldest past ``max_rows``; the total deleted."""
    deleted = 0
    while not should_stop():                                   # by age
        n = _delete_batch(db, t, f"{t.time_col} < ?", (cutoff,), batch)
        deleted += n
        if n < batch:
            break
    while not should_stop():                                   # by count
        excess = table_rows(db)[t.name] - max_rows
        if excess <= 0:
            break
        n = _delete_batch(db, t, "1", (), min(batch, excess))
        deleted += n
        if n == 0:                                             # only rows that must stay are left
            break
    return deleted


def _delete_batch(db: Database, t: LogTable, where: str, params: tuple, limit: int) -> int:
    """Delete up to ``limit`` of the oldest rows matching ``where`` that may go, in one transaction."""
    with db.atomic() as conn:
        key = "id" if t.children else "rowid"
        rows = [r[0] for r in conn.execute(
            f"SELECT {key} FROM {t.name} WHERE ({where}) AND NOT ({t.keep}) ORDER BY {t.order} LIMIT ?",
            (*params, int(limit)))]
        for part in chunks(rows):
            if t.children:
                table, column = t.children
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks(len(part))})", part)
            conn.execute(f"DELETE FROM {t.name} WHERE {key} IN ({marks(len(part))})", part)
    return len(rows)


# ---------------------------------------------------------------------------
# Sizes


def table_rows(db: Database) -> dict[str, int]:
    """Rows per log table and of nodes, from the trigger-kept counters: O(1), for metrics."""
    out = {str(k): int(n) for k, n in db.read("SELECT name, n FROM table_rows")}
    out["nodes"] = int(db.read("SELECT coalesce(sum(n), 0) FROM node_counts").fetchone()[0])
    return out


def table_sizes(db: Database) -> dict[str, dict[str, int]]:
    """{table: {"rows": n, "bytes": b}} for the tables that grow; bytes include their indexes.

    Bytes come from the dbstat virtual table in its aggregate mode. It still
    reads every page (measured ~1.2 ms per MB of file here), so this is for
    ``memory.stats``, never for a metrics scrape; without dbstat only rows.
    """
    rows = table_rows(db)
    for name in ("edges", "node_vectors", "replay"):
        rows[name] = int(db.read(f"SELECT count(*) FROM {name}").fetchone()[0])
    sizes: dict[str, int] = {}
    try:
        sizes = {str(t): int(b) for t, b in db.read(
            "SELECT m.tbl_name, sum(s.pgsize) FROM dbstat('main', 1) AS s "
            "JOIN sqlite_schema AS m ON m.name = s.name GROUP BY m.tbl_name")}
    except OperationalError:      # a SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        pass
    return {name: ({"rows": n, "bytes": sizes[name]} if name in sizes else {"rows": n})
            for name, n in sorted(rows.items())}
