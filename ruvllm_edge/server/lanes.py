"""Jobs, worker lanes and the job table.

Lanes and why:
- ``gen`` (``max_concurrent_requests`` threads) runs the generation of
  queries. Its queue is bounded; when full the reply is ``busy`` (Ollama
  answers 503).
- ``fast`` (``FAST_WORKERS`` threads) runs the cheap reads (``memory.search``,
  ``memory.get``, ``memory.history``) and the first part of a query without a
  session: embed, retrieve, route and plan. A question answered from memory
  (quoted or declined) is answered there and never waits for the model; one
  that needs the model moves on to ``gen`` (``Lanes.move_to``). Several threads,
  because the reads spend their time in SQLite, numpy and onnxruntime with the
  GIL released, and concurrent embeddings are batched (embed_batch.py).
- ``aux`` (one thread) runs memory writes, feedback and session ops, and the
  daemon's own background work (model preload, the periodic tasks in
  tasks.py), so they keep working while the model generates.
- ``slow`` (one thread, a short queue) runs long admin work (learn, backup)
  so memory ops never wait for it.
- ``inline`` ops (health, metrics, stats, cancel) run on the socket thread:
  they must answer in milliseconds while a long generation runs.

What runs on a lane is decided by the dispatcher (dispatch.py); this module
only owns the queues, the threads and the table of queued and running jobs.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import protocol

LANES = ("gen", "fast", "aux", "slow")   # queued lanes; "inline" runs on the socket thread
SLOW_QUEUE = 4
# Threads of the fast lane: enough concurrent reads that their embeddings form
# batches while others run their retrieval (bench_throughput.py measured 8).
FAST_WORKERS = 4


@dataclass
class Job:
    ident: bytes
    prefix: list[bytes]                 # [] for DEALER, [b""] for REQ
    req: protocol.Request
    request_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)
    deadline: float = 0.0               # hard server deadline (request_timeout_ms)
    started: bool = False
    lane: str = ""                      # the lane it is queued on or running on
    resume: Callable[[], Any] | None = None   # what that lane runs instead of the op
    t_first: float = 0.0                # perf_counter when the op first started (latency metric)
    task: Callable[[], None] | None = None   # the daemon's own work: no client, no reply

    @classmethod
    def internal(cls, name: str, fn: Callable[[], None]) -> "Job":
        return cls(b"", [], protocol.Request(name, name, {}), name, task=fn)

    def should_stop(self) -> str | None:
        if self.cancel.is_set():
            return "cancelled"
        if time.monotonic() > self.deadline:
            return "timeout"
        return None


class JobTable:
    """Queued and running client jobs: by request id, and by (connection, envelope id).

    Every read and write holds ``lock``: workers remove jobs while the socket
    thread adds, cancels and inspects them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._active: dict[str, Job] = {}                    # request_id -> job
        self._by_client: dict[tuple[bytes, str], str] = {}   # (ident, envelope id) -> request_id

    def enqueue(self, job: Job, q: "queue.Queue[Job | None]") -> bool:
        """Queue and register the job as one step; False when the queue is full."""
        with self.lock:
            try:
                q.put_nowait(job)
            except queue.Full:
                return False
            self._active[job.request_id] = job
            self._by_client[(job.ident, job.req.id)] = job.request_id
            return True

    def remove(self, job: Job) -> None:
        with self.lock:
            self._active.pop(job.request_id, None)
            self._by_client.pop((job.ident, job.req.id), None)

    def find(self, ident: bytes, target: str) -> Job | None:
        """A job by server request id, or by envelope id on the same connection."""
        with self.lock:
            rid = target if target in self._active else self._by_client.get((ident, target))
            return self._active.get(rid) if rid else None

    def find_by_client(self, ident: bytes, req_id: str) -> Job | None:
        """The queued or running job this connection sent under envelope id ``req_id``."""
        with self.lock:
            rid = self._by_client.get((ident, req_id))
            return self._active.get(rid) if rid else None

    def cancel_all(self) -> int:
        with self.lock:
            for job in self._active.values():
                job.cancel.set()
            return len(self._active)

    def any_op(self, op: str) -> bool:
        with self.lock:
            return any(j.req.op == op for j in self._active.values())

    def __len__(self) -> int:
        with self.lock:
            return len(self._active)


class Lanes:
    """The bounded queues and their worker threads."""

    def __init__(self, max_queue: int, gen_workers: int,
                 fast_workers: int = FAST_WORKERS) -> None:
        self.queues: dict[str, queue.Queue[Job | None]] = {
            "gen": queue.Queue(maxsize=max_queue), "fast": queue.Queue(maxsize=max_queue),
            "aux": queue.Queue(maxsize=max_queue), "slow": queue.Queue(maxsize=SLOW_QUEUE)}
        self.workers = {"gen": gen_workers, "fast": fast_workers, "aux": 1, "slow": 1}
        self.jobs = JobTable()
        self._threads: list[threading.Thread] = []
        self._busy = {name: 0 for name in self.queues}     # workers running a job, per lane
        self._busy_lock = threading.Lock()

    def in_flight(self, lane: str) -> int:
        """Jobs queued on ``lane`` or running there now (the embed batcher's hint)."""
        return self.queues[lane].qsize() + self._busy[lane]

    def queued(self) -> int:
        return sum(q.qsize() for q in self.queues.values())

    def sizes(self) -> dict[str, int]:
        return {name: q.qsize() for name, q in self.queues.items()}

    def move_to(self, lane: str, job: Job, resume: Callable[[], Any]) -> bool:
        """Hand a running client job on to ``lane``, where ``resume`` runs instead of its op.

        The job stays in the job table (cancel still finds it); False when the
        lane is full, and the caller answers ``busy``.
        """
        prev, job.resume, job.lane = job.lane, resume, lane
        job.started = False                 # waiting for a worker again: cancel says "queued"
        try:
            self.queues[lane].put_nowait(job)
            return True
        except queue.Full:
            job.resume, job.lane, job.started = None, prev, True
            return False

    def post(self, lane: str, job: Job) -> bool:
        """Queue the daemon's own work (not in the job table); False when the lane is full."""
        try:
            self.queues[lane].put_nowait(job)
            return True
        except queue.Full:
            return False

    def start(self, run: Callable[[Job], bool | None], on_change: Callable[[], None],
              on_exit: Callable[[], None]) -> None:
        for lane in LANES:
            for i in range(self.workers[lane]):
                self._threads.append(threading.Thread(
                    target=self._worker, args=(lane, run, on_change, on_exit),
                    name=f"{lane}-{i}", daemon=True))
        for t in self._threads:
            t.start()

    def _worker(self, lane: str, run: Callable[[Job], bool | None],
                on_change: Callable[[], None], on_exit: Callable[[], None]) -> None:
        q = self.queues[lane]
        while True:
            job = q.get()
            if job is None:
                break
            moved = False
            with self._busy_lock:
                self._busy[lane] += 1
            try:
                moved = bool(run(job))
            finally:
                with self._busy_lock:
                    self._busy[lane] -= 1
                if not moved:      # a moved job belongs to the lane it went to
                    self.jobs.remove(job)
                on_change()
        on_exit()

    def join(self, timeout_s: float) -> None:
        """Ask every worker to stop after its queue drains; wait up to ``timeout_s``."""
        for q in self.queues.values():
            for _ in range(len(self._threads)):
                try:
                    q.put_nowait(None)
                except queue.Full:
                    break
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
