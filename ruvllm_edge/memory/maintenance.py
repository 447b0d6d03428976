"""Keeping the one SQLite file healthy over months: edge decay and eviction.

- Decay (idle job ``edge_decay``): learned associations (graph.DECAYING_KINDS)
  lose weight by their idle time with half-life ``edge_half_life_days``;
  those below ``edge_min_weight`` are dropped. Decay is memoryless: two runs
  equal one run over the same span. The vector change log is trimmed here.
- Eviction (idle job ``eviction``, and after writes past capacity): past
  ``max_nodes``, delete the lowest quality x recency x use (graph.node_value)
  down to ``evict_low_water_fraction`` of max_nodes, so it does not run on
  every write. Facts (user corrections included) and documents are never
  evicted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..config import MemoryConfig
from ..errors import StorageError
from .db import Connection, Database
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
