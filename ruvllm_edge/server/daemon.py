"""The daemon: builds the parts, then runs the socket loop until SIGTERM.

Composition only. The socket side is transport.py, the queues and threads
lanes.py, the one dispatcher dispatch.py, every op one module in ops/,
start-up checks, signals, reload and shutdown lifecycle.py, the optional parts
(memory, router, learning) components.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .. import __version__, fsutil
from ..config import Config
from ..errors import RuvError
from ..heap import limit_arenas, release_free_heap
from ..inference import InferenceEngine
from ..memory.db import DB_NAME, CorruptDatabase, Database
from ..metrics import Metrics
from ..notify import Notifier
from ..pipeline import Pipeline
from ..router import prior
from ..sessions import SessionStore
from . import lifecycle
from .components import Components
from .dispatch import Dispatcher
from .lanes import Job, Lanes
from .lifecycle import DataDirLock, Signals, StartupError, check_endpoint_security
from .ops import OPS, SCHEMAS
from .ops import feedback
from .ops.learn import LearningRuns
from .ops.status import refresh_node_counts
from .services import Services
from .tasks import Tasks
from .transport import Transport

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 1.0
NODE_COUNTS_EVERY_S = 15.0     # ruvllm_memory_nodes is at most this old
FEEDBACK_OUTBOX_EVERY_S = 60.0  # stored-but-unapplied feedback is retried this often
IDLE_TRIM_AFTER_S = 2.0        # no request for this long after traffic: give its memory back
IDLE_TRIM_CHECK_S = 1.0
MALLOC_ARENAS = 2              # glibc arenas for the whole process (heap.limit_arenas)


class Daemon:
    def __init__(self, cfg: Config) -> None:
        data_dir = Path(cfg.data_dir).resolve()
        metrics = Metrics()
        metrics.memory_limit.set(cfg.system.max_memory_mb * 1024 * 1024)
        self.notifier = Notifier()
        self.signals = Signals()
        group = bool(cfg.server.socket_group)
        self.lock = DataDirLock(data_dir, cfg.system.min_free_disk_mb, group_readable=group)
        try:
            db = open_private_db(data_dir / DB_NAME, cfg.memory.sqlite_cache_mb, group)
        except CorruptDatabase as exc:
            self.lock.release()
            raise StartupError(str(exc)) from None
        sessions = SessionStore(db)
        engine = InferenceEngine(cfg.inference, cfg.system, cfg.models_dir,
                                 on_load=lambda s: metrics.model_loads.labels(s).inc())
        # The model's integrity check (sha256, then llama.cpp reads the GGUF header) runs
        # beside Components.build: both are done before READY, but the check is hashing
        # and C code that releases the GIL, so on two cores it costs little extra time.
        model_check = threading.Thread(target=check_model, args=(engine,),
                                       name="model-check", daemon=True)
        model_check.start()
        comps = Components.build(cfg, db, data_dir, cache_dir=prior.default_cache_dir(),
                                 background_training=True)
        model_check.join()
        pipeline = Pipeline(cfg, db, engine, sessions, memory=comps.memory,
                            embedder=comps.embedder, router=comps.router, replay=comps.replay)
        scheduler = comps.make_scheduler(pipeline, engine, self._on_job_run)
        self.services = Services(cfg=cfg, data_dir=data_dir, db=db, engine=engine,
                                 sessions=sessions, components=comps, pipeline=pipeline,
                                 scheduler=scheduler, metrics=metrics,
                                 learning_runs=LearningRuns(scheduler, db) if scheduler else None,
                                 lanes=Lanes(cfg.server.max_queue,
                                             cfg.server.max_concurrent_requests,
                                             cfg.server.fast_workers),
                                 endpoint=cfg.endpoint())
        self.transport = Transport(cfg.server, cfg.endpoint(), metrics, OPS, SCHEMAS)
        self.dispatcher = Dispatcher(OPS, self.services, self.transport)
        self.transport.on_request = self._admit
        self.tasks = Tasks(self.services.lanes)
        self.tasks.every("feedback_outbox", "aux", FEEDBACK_OUTBOX_EVERY_S,
                         lambda: feedback.apply_pending(self.services))
        if comps.memory is not None:
            self.tasks.every("node_counts", "aux", NODE_COUNTS_EVERY_S,
                             lambda: refresh_node_counts(self.services))
        self.tasks.every("idle_trim", "aux", IDLE_TRIM_CHECK_S, self._trim_when_idle)
        self._last_request = 0.0       # monotonic; written on the socket thread only
        self._unloaded_at = 0.0        # the model's last keep-alive unload
        self._trimmed_at = time.monotonic()
        self.trims = 0
        self._drain: lifecycle.Drain | None = None
        self._last_tick = 0.0
        self._last_watchdog = 0.0

    # Shorthands used by the CLI, tests and benchmarks.
    @property
    def cfg(self) -> Config:
        return self.services.cfg

    @property
    def db(self) -> Database:
        return self.services.db

    def _on_job_run(self, name: str, status: str, seconds: float, report: dict) -> None:
        self.services.metrics.learning_jobs.labels(name, status).inc()
        self.services.metrics.learning_job_seconds.labels(name).observe(seconds)

    # ------------------------------------------------------------------ serving

    def serve(self) -> int:
        s, t = self.services, self.transport
        check_endpoint_security(t.endpoint, bool(s.cfg.server.curve_secret_key))
        t.bind()
        s.lanes.start(self.dispatcher.run_queued,
                      on_change=lambda: s.metrics.deferred.set(s.lanes.queued()),
                      on_exit=t.close_worker_socket)
        if s.scheduler is not None:
            s.scheduler.start()
        self.signals.install()
        if s.cfg.inference.preload:
            s.lanes.post("aux", Job.internal("preload", self._preload))
        self.notifier.ready(f"serving on {t.endpoint}")
        log.info("serving", extra={"endpoint": t.endpoint, "data_dir": str(s.data_dir),
                                   "version": __version__, "pid": os.getpid()})
        try:
            t.serve(self._on_tick)
        finally:
            lifecycle.shutdown(s, t, self.lock, self.notifier)
        return 0

    def _admit(self, *args: Any) -> None:
        self._last_request = time.monotonic()
        self.dispatcher.admit(*args)

    def _trim_when_idle(self) -> None:
        """Once after each burst of traffic, when idle: give retained memory back.

        Why (docs/performance.md, "Serving"): after a few hundred searches
        the worker threads' glibc arenas keep ~35 MB of freed heap (numpy
        temporaries, onnxruntime activations, SQLite pages of closed
        statements) and the embedder's mapped word-embedding table ~40 MB of
        touched pages; neither shrinks by itself. Trimming costs a few ms on
        the aux lane; doing it only after ``IDLE_TRIM_AFTER_S`` without a
        request, and once per burst, keeps it off the serving path (a client
        sending steadily never triggers it, and the page faults that refill
        the heap are paid once per burst). A keep-alive unload also asks for
        one (the unload trims the heap itself, not the embedder's pages).
        """
        now = time.monotonic()
        last = self._last_request
        if max(last, self._unloaded_at) <= self._trimmed_at or now - last < IDLE_TRIM_AFTER_S:
            return
        s = self.services
        if len(s.lanes.jobs) or s.engine.state == "loading":
            return                     # something is still running: next check
        emb = s.components.embedder
        dropped = emb.release_idle_pages() if emb is not None else 0
        release_free_heap()
        self._trimmed_at = time.monotonic()
        self.trims += 1
        log.debug("idle trim", extra={"mapped_mb_dropped": round(dropped / 1048576, 1),
                                      "ms": round((self._trimmed_at - now) * 1000, 1)})

    def _preload(self) -> None:
        try:
            self.services.engine.ensure_loaded()
        except RuvError as exc:
            log.error("preload failed", extra={"error": exc.message})

    def _on_tick(self, now: float) -> bool:
        """Between polls on the loop thread: watchdog, housekeeping, reload, drain.

        Returns False once the daemon has drained and should stop.
        """
        s = self.services
        watchdog_every = min(s.cfg.server.watchdog_interval_ms / 1000,
                             (self.notifier.watchdog_s or 1e9) / 2)
        if now - self._last_watchdog >= watchdog_every:
            self.notifier.watchdog()
            self._last_watchdog = now
        if now - self._last_tick >= HOUSEKEEPING_S:
            self._housekeeping(now)
            self._last_tick = now
        if self.signals.reload_requested:
            self.signals.reload_requested = False
            lifecycle.reload(s, self.transport, self.notifier)
        if self.signals.stop_requested:
            if self._drain is None:
                self._drain = lifecycle.Drain(s, self.transport, self.notifier, now)
            return not self._drain.done(now)
        return True

    def _housekeeping(self, now: float) -> None:
        """Once a second on the loop thread: cheap work only; the rest is queued as tasks."""
        s = self.services
        try:
            s.update_gauges()
            self.tasks.tick(now)
            self.transport.rate.purge(now)
            if s.lanes.queues["gen"].empty() and not s.lanes.jobs.any_op("query"):
                if s.engine.maybe_unload(now):
                    self._unloaded_at = now    # the next idle trim drops what the last queries touched
        except Exception:  # noqa: BLE001
            log.exception("housekeeping failed")

    def stop(self) -> None:
        self.signals.stop_requested = True


def check_model(engine: InferenceEngine) -> None:
    """Integrity check at start: a bad model degrades (health says why), it does not stop us."""
    try:
        engine.info()
    except RuvError as exc:
        log.error("model check failed; serving degraded", extra={"error": exc.message})


def open_private_db(path: Path, cache_mb: int, group_readable: bool) -> Database:
    """Open the database so that neither it nor its -wal/-shm is readable by others.

    SQLite creates a new database file with 0644 & ~umask, and its -wal/-shm
    with the database file's mode: so the file is created first, 0600, and all
    three are narrowed again after the open (explicit chmod, whatever the
    umask; docs/operations.md "Private by default"). A socket group lets apps
    reach the socket, not read the notes: new files stay 0600 with it too.
    """
    fsutil.private_file(path, fsutil.FILE_MODE)   # created 0600 even with a socket group
    db = Database(path, cache_mb)
    widest = fsutil.file_mode(group_readable)      # an operator's 0640 is kept, not more
    tightened = [c for suffix in ("", "-wal", "-shm")
                 for c in fsutil.tighten(path.with_name(path.name + suffix), widest)]
    if tightened:
        log.warning("database files were readable by others; permissions tightened",
                    extra={"changed": tightened})
    return db


def run(cfg: Config) -> int:
    limit_arenas(MALLOC_ARENAS)    # before the parts and the lanes start their threads
    try:
        daemon = Daemon(cfg)
    except StartupError as exc:
        log.error("startup refused", extra={"reason": str(exc)})
        raise
    return daemon.serve()

