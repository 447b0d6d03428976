"""Learning loop A's queue: answers go to memory off the request path.

Why a queue: writing a qa_pair costs an embedding (~8 ms), a KNN for
near-duplicates and a commit; none of that should delay the reply. Items are
written in batches (``batch`` items, or whatever arrived within ``flush_ms``)
so one commit (one fsync of the WAL) covers many answers.

What can be lost: an item still queued when the process is killed. That is
acceptable by design: the request log (table ``requests``) has every answer,
and acknowledged feedback never goes through this queue (it is applied
synchronously by ``MemoryStore.apply_feedback``). A batch that fails with a
storage error is retried with backoff (a full disk may clear up), then
dropped with an error log; a bug in the writer drops only its batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import StorageError, Timeout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interaction:
    """What the pipeline hands over after each answer."""

    request_id: str
    session_id: str | None
    query: str
    answer: str
    query_vec: np.ndarray          # (384,) float32, the query's embedding
    used_node_ids: list[int]       # memories that were in the prompt
    quality: float                 # judge score in [0, 1]
    created_at: float = field(default_factory=time.time)


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
