"""The replay buffer (reservoir sampling) and the learning log, in the one SQLite file.

Why reservoir sampling: the device answers for months, and the router must
keep learning from all of that time, not just the last day. A reservoir of
fixed capacity holds a uniform sample of every request ever seen (item t is
kept with probability capacity / t) in bounded space.

Why in SQLite: the buffer is what months of learning are made of; it has to
survive restarts and crashes and be included in backups, and the database
already gives us atomic writes (``db.atomic()``, the only write path).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable, Sequence

import numpy as np

from ..memory.db import Database
from ..router.features import N_FEATURES
from .utility import ReplaySample

log = logging.getLogger(__name__)

__all__ = ["ReplayBuffer", "ReplaySample", "record_run", "recent_runs"]

_COLS = ("request_id", "session_id", "turn_index", "features", "context_class", "mode_class",
         "temperature", "top_p", "quality", "latency_s", "completion_tokens", "utility",
         "target_context", "target_mode", "target_temperature", "target_top_p", "label_source",
         "created_at")
_SELECT = f"SELECT {', '.join(_COLS)} FROM replay"
_SEEN_KEY = "replay_seen"


def _row_values(s: ReplaySample) -> tuple[Any, ...]:
    feats = np.ascontiguousarray(s.features, dtype=np.float32)
    return (s.request_id, s.session_id, int(s.turn_index), feats.tobytes(), int(s.context_class),
            int(s.mode_class), float(s.temperature), float(s.top_p), s.quality,
            float(s.latency_s), int(s.completion_tokens), s.utility, s.target_context,
            s.target_mode, s.target_temperature, s.target_top_p, s.label_source,
            float(s.created_at))


class ReplayBuffer:
    """A reservoir of ``ReplaySample`` rows; every write is one transaction."""

    def __init__(self, db: Database, capacity: int, rng: np.random.Generator | None = None,
                 n_features: int = N_FEATURES) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.db = db
        self.capacity = int(capacity)
        self.n_features = n_features
        self._rng = rng or np.random.default_rng()
        with db.atomic() as conn:
            # The capacity may have been lowered in the config: drop the slots past it.
            dropped = conn.execute("DELETE FROM replay WHERE slot >= ?", (self.capacity,)).rowcount
        if dropped:
            log.info("replay buffer shrunk", extra={"dropped": dropped, "capacity": capacity})

    def __len__(self) -> int:
        return int(self.db.read("SELECT count(*) FROM replay").fetchone()[0])

    def seen(self) -> int:
        """t: how many samples were ever offered to the reservoir."""
        row = self.db.read("SELECT value FROM learning_state WHERE key = ?",
                           (_SEEN_KEY,)).fetchone()
        return int(row[0]) if row else 0

    def add(self, sample: ReplaySample) -> bool:
        """Offer one sample; returns True if it is now in the buffer.

        A request already in the buffer is updated in place (same slot) and does
        not count as a new item.
        """
        if sample.features.shape != (self.n_features,):
            raise ValueError(f"replay sample {sample.request_id} has features of shape "
                             f"{sample.features.shape}, expected ({self.n_features},)")
        if not np.isfinite(sample.features).all():
            raise ValueError(f"replay sample {sample.request_id} has non-finite features")
        values = _row_values(sample)
        with self.db.atomic() as conn:
            row = conn.execute("SELECT slot FROM replay WHERE request_id = ?",
                               (sample.request_id,)).fetchone()
            if row is not None:
                self._write(conn, int(row[0]), values)
                return True
            seen_row = conn.execute("SELECT value FROM learning_state WHERE key = ?",
                                    (_SEEN_KEY,)).fetchone()
            t = (int(seen_row[0]) if seen_row else 0) + 1
            conn.execute("INSERT INTO learning_state(key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (_SEEN_KEY, t))
            n = int(conn.execute("SELECT count(*) FROM replay").fetchone()[0])
            if n < self.capacity:
                slot = n
            else:
                j = int(self._rng.integers(0, t))
                if j >= self.capacity:
                    return False
                slot = j
            self._write(conn, slot, values)
            return True

    @staticmethod
    def _write(conn: Any, slot: int, values: tuple[Any, ...]) -> None:
        conn.execute(f"INSERT OR REPLACE INTO replay(slot, {', '.join(_COLS)}, explored_at) "
                     f"VALUES (?, {', '.join('?' * len(_COLS))}, NULL)", (slot, *values))

    def _from_rows(self, rows: Iterable[Sequence[Any]]) -> list[ReplaySample]:
        out = []
        for r in rows:
            feats = np.frombuffer(r[3], dtype=np.float32)
            if feats.shape != (self.n_features,):
                continue  # written by an older feature set; useless to this router
            out.append(ReplaySample(
                request_id=r[0], session_id=r[1], turn_index=int(r[2]), features=feats.copy(),
                context_class=int(r[4]), mode_class=int(r[5]), temperature=float(r[6]),
                top_p=float(r[7]), quality=r[8], latency_s=float(r[9]),
                completion_tokens=int(r[10]), utility=r[11], target_context=r[12],
                target_mode=r[13], target_temperature=r[14], target_top_p=r[15],
                label_source=r[16], created_at=float(r[17])))
        return out

    def all(self) -> list[ReplaySample]:
        return self._from_rows(self.db.read(f"{_SELECT} ORDER BY slot").fetchall())

    def get(self, request_id: str) -> ReplaySample | None:
        rows = self._from_rows(self.db.read(f"{_SELECT} WHERE request_id = ?",
                                            (request_id,)).fetchall())
        return rows[0] if rows else None

    def sample(self, n: int, rng: np.random.Generator) -> list[ReplaySample]:
        """n samples drawn uniformly without replacement (fewer if the buffer is smaller)."""
        slots = [int(r[0]) for r in self.db.read("SELECT slot FROM replay").fetchall()]
        if not slots or n <= 0:
            return []
        pick = rng.choice(np.asarray(slots), size=min(n, len(slots)), replace=False)
        marks = ",".join("?" * len(pick))
        return self._from_rows(self.db.read(f"{_SELECT} WHERE slot IN ({marks})",
                                            [int(p) for p in pick]).fetchall())

    def set_outcome(self, request_id: str, quality: float, utility: float) -> bool:
        """Record a judged or rated outcome that arrived after the sample was added."""
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        with self.db.atomic() as conn:
            cur = conn.execute("UPDATE replay SET quality = ?, utility = ? WHERE request_id = ?",
                               (float(quality), float(utility), request_id))
            return cur.rowcount > 0

    def set_target(self, request_id: str, context_class: int, mode_class: int,
                   temperature: float | None, top_p: float | None, source: str) -> bool:
        """Record the best known decision for a past request (exploration or feedback)."""
        with self.db.atomic() as conn:
            cur = conn.execute(
                "UPDATE replay SET target_context = ?, target_mode = ?, target_temperature = ?, "
                "target_top_p = ?, label_source = ? WHERE request_id = ?",
                (int(context_class), int(mode_class), temperature, top_p, source, request_id))
            return cur.rowcount > 0

    def unjudged(self, n: int) -> list[ReplaySample]:
        """Samples still without a quality score, oldest first (the judge runs when idle)."""
        rows = self.db.read(f"{_SELECT} WHERE quality IS NULL ORDER BY created_at LIMIT ?",
                            (int(n),)).fetchall()
        return self._from_rows(rows)

    def to_explore(self, n: int) -> list[ReplaySample]:
        """Never-explored samples first (oldest first), then the least recently explored."""
        rows = self.db.read(f"{_SELECT} ORDER BY explored_at IS NOT NULL, explored_at, "
                            "created_at LIMIT ?", (int(n),)).fetchall()
        return self._from_rows(rows)

    def record_exploration(self, request_id: str, outcomes: Sequence[dict[str, Any]],
                           now: float | None = None) -> None:
        """Store every alternative tried for one request and mark it explored, atomically."""
        now = time.time() if now is None else now
        with self.db.atomic() as conn:
            conn.executemany(
                "INSERT INTO explorations(request_id, context_class, mode_class, temperature, "
                "top_p, quality, latency_s, completion_tokens, utility, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(request_id, int(o["context_class"]), int(o["mode_class"]),
                  float(o["temperature"]), float(o["top_p"]), float(o["quality"]),
                  float(o["latency_s"]), int(o["completion_tokens"]), float(o["utility"]), now)
                 for o in outcomes])
            conn.execute("UPDATE replay SET explored_at = ? WHERE request_id = ?",
                         (now, request_id))


def record_run(db: Database, job: str, started_at: float, duration_s: float, status: str,
               report: dict[str, Any] | None = None) -> None:
    """Append one idle-job run to learning_runs (what `stats` and operators look at)."""
    with db.atomic() as conn:
        conn.execute("INSERT INTO learning_runs(job, started_at, duration_s, status, report) "
                     "VALUES (?, ?, ?, ?, ?)",
                     (job, float(started_at), float(duration_s), status,
                      json.dumps(report or {}, default=str)))


def recent_runs(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    rows = db.read("SELECT job, started_at, duration_s, status, report FROM learning_runs "
                   "ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
    return [{"job": r[0], "started_at": r[1], "duration_s": r[2], "status": r[3],
             "report": json.loads(r[4])} for r in rows]
