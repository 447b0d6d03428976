"""Feedback as an outbox: store the row, apply it, mark it applied; repair what a crash left.

The ``feedback`` row is committed first: that commit is the acknowledgement a
client gets. Applying it (memory: rating -> quality and edges, correction ->
trusted fact, a ranking step; replay buffer: quality and utility) comes after
and sets ``applied_at``. A row a crash or an error left with ``applied_at IS
NULL`` is applied again by ``apply_pending``, which the daemon runs at start-up
and on a timer (server/tasks.py), a bounded batch at a time.

Applying again is safe when the first attempt got part of the way:
- the replay update sets quality and utility from the rating (not an
  increment), so repeating it changes nothing;
- a correction becomes a fact found again by its text hash (or a near
  duplicate), so repeating it updates that fact instead of inserting another;
- a rating moves the answer's quality a step towards the rating's target; if
  the process died after the memory commit and before ``applied_at``, that
  one step is taken twice (towards the same target, so bounded).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from .config import LearningConfig
from .errors import BadRequest, NotFound
from .faults import crash_point
from .learning.jobs import record_feedback
from .memory.db import Database

log = logging.getLogger(__name__)

PENDING_BATCH = 32


class FeedbackLog:
    def __init__(self, db: Database, memory: Any = None, replay: Any = None) -> None:
        self.db = db
        self.memory = memory          # memory.store.MemoryStore | None
        self.replay = replay          # learning.replay.ReplayBuffer | None
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._failed: set[int] = set()   # failed in this process: retried after a restart

    def submit(self, args: dict[str, Any], learning: LearningConfig) -> dict[str, Any]:
        """Store the feedback row (the acknowledgement), then apply it."""
        rid = args["request_id"]
        if self.db.read("SELECT 1 FROM requests WHERE id = ?", (rid,)).fetchone() is None:
            raise NotFound(f"no request {rid!r} to give feedback on", request_id=rid)
        rating, correction = args.get("rating"), args.get("correction")
        if rating is None and correction is None:
            raise BadRequest("feedback needs a rating, a correction or both")
        with self._lock:     # stored and marked in flight as one step: apply_pending skips it
            with self.db.atomic() as c:
                fid = int(c.execute("INSERT INTO feedback(request_id, rating, correction, "
                                    "created_at) VALUES (?, ?, ?, ?)",
                                    (rid, rating, correction, time.time())).lastrowid)
            self._in_flight.add(fid)
        crash_point("feedback.stored")
        try:
            applied = self._apply(fid, rid, rating, correction, learning)
        finally:
            with self._lock:
                self._in_flight.discard(fid)
        return {"feedback_id": fid, "request_id": rid, "stored": True, **applied}

    def _apply(self, fid: int, rid: str, rating: int | None, correction: str | None,
               learning: LearningConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        row = self.db.read("SELECT query, answer, sources, session_id, status FROM requests "
                           "WHERE id = ?", (rid,)).fetchone()
        if row is not None and self.memory is not None:
            used = [int(s["id"]) for s in json.loads(row[2] or "[]")]
            out["memory"] = self.memory.apply_feedback(rid, used, rating, correction, row[0],
                                                       row[1], row[3], finish_reason=row[4])
        if self.replay is not None:
            out["replay_updated"] = record_feedback(self.replay, rid, rating, correction, learning)
        with self.db.atomic() as c:
            c.execute("UPDATE feedback SET applied_at = ? WHERE id = ?", (time.time(), fid))
        return out

    def apply_pending(self, learning: LearningConfig, limit: int = PENDING_BATCH) -> int:
        """Apply up to ``limit`` stored rows that were never applied; returns how many were.

        Rows being applied right now by ``submit``, and rows that already failed
        in this process, are skipped (a failing row is retried after a restart,
        not every few seconds).
        """
        with self._lock:
            skip = self._in_flight | self._failed
        marks = ",".join("?" * len(skip))
        rows = self.db.read(
            "SELECT id, request_id, rating, correction FROM feedback WHERE applied_at IS NULL"
            + (f" AND id NOT IN ({marks})" if skip else "") + " ORDER BY id LIMIT ?",
            (*sorted(skip), limit)).fetchall()
        done = 0
        for fid, rid, rating, correction in rows:
            with self._lock:
                if fid in self._in_flight:
                    continue
                self._in_flight.add(fid)
            try:
                self._apply(fid, rid, rating, correction, learning)
                done += 1
            except Exception:  # noqa: BLE001 - one bad row must not stop the others
                log.exception("stored feedback could not be applied", extra={"feedback_id": fid})
                with self._lock:
                    self._failed.add(fid)
            finally:
                with self._lock:
                    self._in_flight.discard(fid)
        if rows:
            log.info("feedback applied from the outbox", extra={"applied": done,
                                                                "failed": len(rows) - done})
        return done
