"""Micro-batching of embeddings across concurrent requests (group commit).

Why: one MiniLM run on a short query costs about 5 ms on a Pi-class core,
and most of it is per-call overhead; 16 queries in one run cost about 2 ms
each. When an app pipelines ``memory.search`` (or questions), the worker
threads that need a vector at the same time hand their texts to one
``embed_many`` call instead of queueing for the model one by one.

Requests still in the server's queue are added with ``prefetch``, so a batch
takes in every queued text, not only those of the requests a worker holds.

How (no thread of its own): a caller adds its text to the pending list. If
no batch is running, it becomes the leader: it waits up to ``window_s`` for
more texts while more are expected, takes up to ``max_batch`` pending texts,
runs ``embed_many`` on them outside the lock and hands each caller its row.
``expected()`` (the server passes the number of requests queued or running
on its lane) says how many callers may come; a lone request never waits.
Without it, the leader waits only when the last batch had company. Texts that arrive while a
batch runs wait for it to end and then go together in the next one, so under
load batches form by themselves. An error in ``embed_many`` is raised in
every caller of that batch.

Pure logic: ``embed_many`` is any ``list[str] -> (n, d) array`` (the
Embedder's ``embed_batch``, which keeps its own cache); tests pass a fake.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

EmbedMany = Callable[[Sequence[str]], np.ndarray]


@dataclass
class _Slot:
    text: str
    vec: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class BatchStats:
    """Counters for tests, benchmarks and ``memory.stats``."""

    batches: int = 0
    texts: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)   # batch size -> batches

    def as_dict(self) -> dict[str, object]:
        return {"batches": self.batches, "texts": self.texts, "largest": self.largest,
                "mean": round(self.texts / self.batches, 2) if self.batches else 0.0}


class EmbedBatcher:
    """Thread-safe ``embed(text)`` that batches concurrent callers into one ``embed_many``."""

    def __init__(self, embed_many: EmbedMany, *, window_s: float = 0.002,
                 max_batch: int = 16, expected: Callable[[], int] | None = None,
                 max_running: int = 1) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        self.embed_many = embed_many
        self.window_s = window_s
        self.max_batch = max_batch
        self.expected = expected
        self.max_running = max_running
        self.stats = BatchStats()
        self._cv = threading.Condition()
        self._pending: list[_Slot] = []
        self._slots: dict[str, _Slot] = {}     # text -> its slot, until delivered
        self._running = 0                      # batches taken and not yet delivered
        self._gathering = False                # a leader is waiting out its window
        self._last_size = 0

    def prefetch(self, text: str) -> None:
        """Queue ``text`` for the next batch without waiting for it.

        The server calls this when it queues a request that will embed ``text``,
        so the batches take in every queued request, not only those a worker
        holds. A row delivered before its worker asks is not kept here: the
        worker's ``embed`` then finds it in the Embedder's LRU cache (a cache
        hit costs microseconds), or a row still coming joins its slot.
        """
        with self._cv:
            if text not in self._slots:
                self._add(text)

    def _add(self, text: str) -> _Slot:
        slot = _Slot(text)
        self._slots[text] = slot
        self._pending.append(slot)
        self._cv.notify_all()                  # a leader in its window may be waiting for it
        return slot

    def embed(self, text: str) -> np.ndarray:
        """This text's row of ``embed_many``, computed in a batch with concurrent callers."""
        with self._cv:
            slot = self._slots.get(text) or self._add(text)   # the same text shares a slot
            while True:
                if slot.done:
                    break
                if self._running < self.max_running and not self._gathering and self._pending:
                    batch = self._lead()
                    self._cv.release()
                    try:
                        self._run(batch)
                    finally:
                        self._cv.acquire()
                        self._running -= 1
                        for s in batch:
                            s.done = True
                            if self._slots.get(s.text) is s:
                                del self._slots[s.text]
                        self._cv.notify_all()
                    continue                   # our slot may have been left for the next batch
                self._cv.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.vec is not None
        return slot.vec

    def _lead(self) -> list[_Slot]:
        """With the lock held: wait out the window when busy, then take a batch."""
        self._running += 1
        if self.expected is not None:
            want = min(self.max_batch, max(1, self.expected()))
        else:
            want = self.max_batch if self._last_size > 1 else 1
        if self.window_s > 0 and want > 1:
            self._gathering = True
            end = time.monotonic() + self.window_s
            while len(self._pending) < want:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            self._gathering = False
        batch = self._pending[:self.max_batch]
        del self._pending[:self.max_batch]
        self._last_size = len(batch)
        st = self.stats
        st.batches += 1
        st.texts += len(batch)
        st.largest = max(st.largest, len(batch))
        st.sizes[len(batch)] = st.sizes.get(len(batch), 0) + 1
        return batch

    def _run(self, batch: list[_Slot]) -> None:
        """Outside the lock: one ``embed_many`` call, its rows (or its error) to every slot."""
        try:
            vecs = self.embed_many([s.text for s in batch])
            if len(vecs) != len(batch):
                raise RuntimeError(f"embed_many returned {len(vecs)} rows for {len(batch)} texts")
            for s, v in zip(batch, vecs):
                v = np.asarray(v)
                v.flags.writeable = False      # shared by every caller of the same text
                s.vec = v
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the error, none hangs
            for s in batch:
                s.error = exc
