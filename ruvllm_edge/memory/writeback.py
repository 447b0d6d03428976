"""Learning loop A's writeback: answers go to memory off the request path.

Two parts:
- ``WritebackQueue``: a background thread that hands batches to a writer.
  Writing a qa_pair costs an embedding (~8 ms), a KNN for near-duplicates and
  a commit; none of that should delay the reply. Items are written in batches
  (``batch`` items, or whatever arrived within ``flush_ms``) so one commit
  (one fsync of the WAL) covers many answers.
- ``BatchWriter``: what one batch writes, in one transaction: the qa_pair
  (embedded as "Q: ... A: ...") if its quality passes the gate, or a merge
  into a near-duplicate (the better answer wins); a ``follows`` edge from the
  session's previous qa_pair; ``same_topic`` edges to close neighbours;
  ``answered_by`` edges from each memory that was in the prompt; and the use
  counts of those memories.

What can be lost: an item still queued when the process is killed. That is
acceptable by design: the request log (table ``requests``) has every answer,
and acknowledged feedback never goes through this queue (it is applied
synchronously by ``feedback.apply_feedback``). A batch that fails with a
storage error is retried with backoff (a full disk may clear up), then
dropped with an error log; a bug in the writer drops only its batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from typing import Callable, Sequence

import numpy as np

from ..config import MemoryConfig
from ..embedding import Embedder
from ..errors import StorageError, Timeout
from .db import Connection, Database
from .nodes import insert_node, kinds, set_vector, text_hash, upsert_edge
from .types import DIM, Count, Interaction, default_trust

__all__ = ["Interaction", "WritebackQueue", "BatchWriter", "qa_text"]

log = logging.getLogger(__name__)

ANSWERED_BY_WEIGHT = 0.5
SESSIONS_REMEMBERED = 10_000   # last qa_pair per session kept in RAM (the DB is the fallback)

# knn(qvec, k) -> (ids, sims, vecs), best first
Knn = Callable[[np.ndarray, int], tuple[list[int], np.ndarray, np.ndarray]]


def qa_text(query: str, answer: str) -> str:
    """The text stored and embedded for an answered question."""
    return f"Q: {query.strip()}\nA: {answer.strip()}"


class WritebackQueue:
    """Background thread that hands batches of interactions to ``write_batch``."""

    def __init__(self, write_batch: Callable[[Sequence[Interaction]], None], *, batch: int,
                 flush_ms: int, max_queue: int = 10_000, retries: int = 3,
                 retry_backoff_s: float = 0.5, name: str = "memory-writeback") -> None:
        self._write = write_batch
        self.batch = batch
        self.flush_s = flush_ms / 1000.0
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._q: queue.Queue[Interaction] = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()
        self._pending = 0            # queued + being written
        self._flush_now = threading.Event()
        self._stop = threading.Event()
        self.counters = {"enqueued": 0, "written": 0, "batches": 0, "dropped_full": 0,
                         "dropped_failed": 0, "retries": 0}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- producer side --------------------------------------------------------

    def put(self, item: Interaction) -> bool:
        """Enqueue without blocking; False (and a warning) when the queue is full."""
        if self._stop.is_set():
            log.warning("writeback closed, interaction not written",
                        extra={"request_id": item.request_id})
            return False
        with self._cond:
            self._pending += 1
        try:
            self._q.put_nowait(item)
        except queue.Full:
            with self._cond:
                self._pending -= 1
                self.counters["dropped_full"] += 1
                self._cond.notify_all()
            log.warning("writeback queue full, interaction not written to memory",
                        extra={"request_id": item.request_id, "queue_max": self._q.maxsize})
            return False
        with self._cond:
            self.counters["enqueued"] += 1
        return True

    def depth(self) -> int:
        with self._cond:
            return self._pending

    def flush(self, timeout_s: float = 10.0) -> None:
        """Write everything queued now; raise errors.Timeout if not done in time."""
        deadline = time.monotonic() + timeout_s
        self._flush_now.set()
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise Timeout(f"memory writeback did not drain within {timeout_s} s",
                                  pending=self._pending)
                self._flush_now.set()
                self._cond.wait(min(left, 0.05))

    def close(self, timeout_s: float = 10.0) -> None:
        """Drain, then stop the thread."""
        try:
            self.flush(timeout_s)
        finally:
            self._stop.set()
            self._flush_now.set()
            self._thread.join(timeout=timeout_s)

    # -- consumer side --------------------------------------------------------

    def _take_batch(self) -> list[Interaction]:
        """Block for the first item, then gather up to ``batch`` within flush_ms."""
        items: list[Interaction] = []
        while not items:
            if self._stop.is_set() and self._q.empty():
                return items
            try:
                items.append(self._q.get(timeout=0.1))
            except queue.Empty:
                continue
        deadline = time.monotonic() + self.flush_s
        while len(items) < self.batch:
            if self._flush_now.is_set():
                try:
                    items.append(self._q.get_nowait())
                    continue
                except queue.Empty:
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                items.append(self._q.get(timeout=min(left, 0.02)))
            except queue.Empty:
                continue
        return items

    def _run(self) -> None:
        while True:
            items = self._take_batch()
            if not items:
                if self._stop.is_set():
                    return
                continue
            if self._q.empty():
                self._flush_now.clear()
            ok = self._write_with_retry(items)
            with self._cond:
                self._pending -= len(items)
                key = "written" if ok else "dropped_failed"
                self.counters[key] += len(items)
                self.counters["batches"] += 1 if ok else 0
                self._cond.notify_all()

    def _write_with_retry(self, items: list[Interaction]) -> bool:
        for attempt in range(self.retries + 1):
            try:
                self._write(items)
                return True
            except StorageError as exc:
                if attempt == self.retries:
                    log.error("memory writeback failed, batch dropped (the request log keeps "
                              "the answers)", extra={"items": len(items), "error": str(exc)})
                    return False
                with self._cond:
                    self.counters["retries"] += 1
                log.warning("memory writeback failed, retrying",
                            extra={"attempt": attempt + 1, "error": str(exc)})
                time.sleep(self.retry_backoff_s * (2 ** attempt))
            except Exception:  # noqa: BLE001 - a bug must not kill the writer thread
                log.exception("memory writeback batch failed, dropped",
                              extra={"items": len(items)})
                return False
        return False


# ---------------------------------------------------------------------------
# The batch writer


class BatchWriter:
    """Writes batches of interactions; remembers each session's last qa_pair."""

    def __init__(self, db: Database, cfg: MemoryConfig, embedder: Embedder, knn: Knn, count: Count) -> None:
        self.db = db
        self.cfg = cfg
        self.embedder = embedder
        self.knn = knn
        self.count = count
        self._last_qa: OrderedDict[str, int] = OrderedDict()

    def write(self, items: Sequence[Interaction]) -> None:
        """One batch in one transaction (see the module docstring for what is written)."""
        cfg = self.cfg
        gated = [it for it in items if (it.grounded or it.naive)
                 and it.quality >= cfg.writeback_quality_threshold]
        self.count("qa_gated", len(items) - len(gated))
        vecs = self.embedder.embed_batch([qa_text(it.query, it.answer) for it in gated]) if gated \
            else np.zeros((0, DIM), np.float32)
        kn = max(cfg.same_topic_max_edges, 1) + 1
        neigh = [self.knn(v, kn) for v in vecs]
        kind_of = kinds(self.db, {i for ids, _, _ in neigh for i in ids})
        now = time.time()
        session_last: dict[str, int] = {}
        with self.db.atomic() as conn:
            uses = Counter(int(u) for it in items for u in it.used_node_ids)
            conn.executemany("UPDATE nodes SET access_count = access_count + ?, last_access_at = ? WHERE id = ?",
                             [(n, now, nid) for nid, n in sorted(uses.items())])
            fresh: list[tuple[int, np.ndarray]] = []      # written earlier in this batch
            for it, v, (nb_ids, nb_sims, _) in zip(gated, vecs, neigh):
                text = qa_text(it.query, it.answer)
                dup = next((i for i, s in zip(nb_ids, nb_sims) if kind_of.get(i) == "qa_pair"
                            and s >= cfg.dedup_cosine), None)
                if dup is None:
                    dup = next((i for i, fv in fresh if float(fv @ v) >= cfg.dedup_cosine), None)
                nid = merge_qa(conn, dup, it, text, v, now) if dup is not None else None
                if nid is None:
                    nid = insert_node(conn, kind="qa_pair", source="model", text=text,
                                      metadata={"grounded": True} if it.grounded else {}, vec=v,
                                      now=now, quality=it.quality, trust=default_trust("qa_pair", "model"),
                                      session_id=it.session_id, request_id=it.request_id)
                    fresh.append((nid, v))
                    self.count("qa_written", 1)
                else:
                    self.count("qa_deduped", 1)
                if it.session_id:
                    prev = session_last.get(it.session_id) or self._previous_in_session(conn, it.session_id, nid)
                    if prev is not None:
                        upsert_edge(conn, prev, nid, "follows", 1.0, now)
                    session_last[it.session_id] = nid
                topical = [(i, float(s)) for i, s in zip(nb_ids, nb_sims)]
                topical += [(i, float(fv @ v)) for i, fv in fresh]
                topical = [(i, s) for i, s in topical if i != nid and s >= cfg.same_topic_cosine]
                for oid, s in sorted(topical, key=lambda t: -t[1])[:cfg.same_topic_max_edges]:
                    upsert_edge(conn, nid, oid, "same_topic", s, now)
                for u in it.used_node_ids:
                    upsert_edge(conn, int(u), nid, "answered_by", ANSWERED_BY_WEIGHT, now)
        for sid, nid in session_last.items():
            self._last_qa[sid] = nid
            self._last_qa.move_to_end(sid)
            while len(self._last_qa) > SESSIONS_REMEMBERED:
                self._last_qa.popitem(last=False)

    def _previous_in_session(self, conn: Connection, session_id: str, nid: int) -> int | None:
        prev = self._last_qa.get(session_id)
        if prev is not None and prev != nid and conn.execute(
                "SELECT 1 FROM nodes WHERE id = ?", (prev,)).fetchone():
            return prev
        row = conn.execute("SELECT id FROM nodes WHERE session_id = ? AND kind = 'qa_pair' AND id != ? "
                           "ORDER BY id DESC LIMIT 1", (session_id, nid)).fetchone()
        return int(row[0]) if row else None


def merge_qa(conn: Connection, dup: int, it: Interaction, text: str, v: np.ndarray, now: float) -> int | None:
    """Near-duplicate: the better answer wins; returns the id, or None if it vanished."""
    row = conn.execute("SELECT quality FROM nodes WHERE id = ? AND archived = 0", (dup,)).fetchone()
    if row is None:
        return None
    if it.quality > row[0]:
        conn.execute("UPDATE nodes SET text = ?, text_hash = ?, quality = ?, request_id = ?, "
                     "last_access_at = ?, access_count = access_count + 1 WHERE id = ?",
                     (text, text_hash("qa_pair", text), it.quality, it.request_id, now, dup))
        set_vector(conn, dup, v)
    else:
        conn.execute("UPDATE nodes SET last_access_at = ?, access_count = access_count + 1 WHERE id = ?",
                     (now, dup))
    return dup
