"""The daemon: a ZeroMQ ROUTER loop that never blocks, plus worker lanes.

Threads and why:
- The socket loop (main thread) reads requests, answers the cheap ops
  (health, metrics, stats, cancel) inline, and forwards every reply. It never
  runs generation, embedding or a SQLite write, so it answers in milliseconds
  while a long generation runs.
- The ``gen`` lane (``max_concurrent_requests`` threads) runs queries. Its
  queue is bounded; when full the reply is ``busy`` (Ollama answers 503).
- The ``aux`` lane runs memory, feedback, session, learn and backup ops, so
  they keep working while the model generates.
- Workers never touch the ROUTER socket (ZeroMQ sockets are not thread-safe):
  each has a PUSH socket into an inproc PULL the loop polls and forwards.

Every handler runs inside ``_run_job``: any exception becomes an error reply
with a stable code, so no handler can take the loop down.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import zmq

from . import __version__, protocol
from .config import Config
from .components import MEMORY_OPS, Components, memory_handlers
from .errors import (BadRequest, Busy, Cancelled, ConfigError, Internal, ModelUnavailable,
                     NotFound, RateLimited, RuvError, StorageError, Timeout)
from .inference import InferenceEngine
from .memory.db import CorruptDatabase, Database, DB_NAME
from .metrics import Metrics
from .notify import Notifier
from .pipeline import Pipeline, QueryContext, new_request_id
from .sessions import SessionStore

log = logging.getLogger(__name__)

REPLIES_ENDPOINT = "inproc://replies"
# Ops that do not count as activity for the idle-time scheduler (monitoring polls).
PASSIVE_OPS = frozenset({"health", "metrics", "stats"})
CONFIDENCE_EMA = 0.1
LOCK_NAME = "ruvllm-edge.lock"
TICK_S = 0.05


class StartupError(Exception):
    """The daemon refuses to start; the message says why and what to do."""


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


class TokenBucket:
    """Per-client rate limit: ``rate`` requests/s sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._state: dict[bytes, tuple[float, float]] = {}

    def allow(self, key: bytes, now: float) -> bool:
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            return False
        self._state[key] = (tokens - 1.0, now)
        return True

    def purge(self, now: float, idle_s: float = 60.0) -> None:
        for k in [k for k, (_, last) in self._state.items() if now - last > idle_s]:
            del self._state[k]


def check_endpoint_security(endpoint: str, has_curve: bool) -> None:
    """TCP must be loopback unless CURVE keys are configured."""
    if not endpoint.startswith("tcp://"):
        return
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not has_curve:
        raise StartupError(f"refusing to listen on {endpoint}: a non-loopback address needs "
                           "server.curve_secret_key and server.curve_public_key")


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self.data_dir = Path(cfg.data_dir).resolve()
        self.metrics = Metrics()
        self.metrics.memory_limit.set(cfg.system.max_memory_mb * 1024 * 1024)
        self.notifier = Notifier()
        # Plain flags, not threading.Event: a signal handler that takes a lock
        # deadlocks when a second signal lands while the first one holds it.
        self._stop_requested = False
        self._reload_requested = False
        self._lock_fd: int | None = None
        self._jobs_lock = threading.Lock()
        self._active: dict[str, Job] = {}                  # request_id -> job
        self._by_client: dict[tuple[bytes, str], str] = {}  # (ident, envelope id) -> request_id
        self._local = threading.local()
        self.rate = TokenBucket(cfg.server.rate_limit_per_s, cfg.server.rate_limit_burst)
        self._confidence_ema = 1.0   # the RouterLowConfidence alert reads its gauge
        self._prepare_data_dir()
        try:
            self.db = Database(self.data_dir / DB_NAME, cfg.memory.sqlite_cache_mb)
        except CorruptDatabase as exc:
            self._release_lock()
            raise StartupError(str(exc)) from None
        self.sessions = SessionStore(self.db)
        self.engine = InferenceEngine(cfg.inference, cfg.system, cfg.models_dir,
                                      on_load=lambda s: self.metrics.model_loads.labels(s).inc())
        self._check_model()
        self.components = Components.build(cfg, self.db, self.data_dir)
        c = self.components
        self.pipeline = Pipeline(cfg, self.db, self.engine, self.sessions, memory=c.memory,
                                 embedder=c.embedder, router=c.router, replay=c.replay)
        self.scheduler = c.make_scheduler(self.pipeline, self.engine, self._on_job_run)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.gen_q: queue.Queue[Job] = queue.Queue(maxsize=cfg.server.max_queue)
        self.aux_q: queue.Queue[Job] = queue.Queue(maxsize=cfg.server.max_queue)
        # Long admin work (learn, backup) has its own lane so memory ops never wait for it.
        self.slow_q: queue.Queue[Job] = queue.Queue(maxsize=4)
        self._threads: list[threading.Thread] = []
        self.handlers: dict[str, tuple[str, Callable[[Job], dict[str, Any]]]] = {
            "query": ("gen", self._op_query),
            "feedback": ("aux", lambda j: self.pipeline.feedback(j.req.args)),
            "session.new": ("aux", lambda j: {"session_id": self.sessions.new(
                j.req.args.get("system_prompt"))}),
            "session.close": ("aux", lambda j: self.sessions.close(j.req.args["session_id"])),
            "session.history": ("aux", lambda j: self.sessions.history(j.req.args["session_id"])),
            "health": ("inline", lambda j: self.health()),
            "metrics": ("inline", lambda j: {"text": self.render_metrics()}),
            "stats": ("inline", lambda j: self.stats()),
            "cancel": ("inline", self._op_cancel),
            "learn": ("slow", self._op_learn),
            "backup": ("slow", self._op_backup),
        }
        if c.memory is not None:
            self.handlers.update(memory_handlers(c.memory))
        elif c.memory_error:
            def unavailable(job: Job) -> dict[str, Any]:
                raise ModelUnavailable(f"memory is unavailable: {c.memory_error}")
            for op in MEMORY_OPS:
                self.handlers[op] = ("aux", unavailable)

    def _check_model(self) -> None:
        """Startup integrity check of the LLM; a bad model degrades, it does not stop us."""
        try:
            self.engine.info()
        except RuvError as exc:
            log.error("model check failed; serving degraded", extra={"error": exc.message})

    # ------------------------------------------------------------------ startup

    def _prepare_data_dir(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create data dir {self.data_dir}: {exc}") from None
        if not os.access(self.data_dir, os.W_OK):
            raise StartupError(f"data dir {self.data_dir} is not writable")
        free_mb = shutil.disk_usage(self.data_dir).free / 1_048_576
        if free_mb < self.cfg.system.min_free_disk_mb:
            raise StartupError(f"only {free_mb:.0f} MB free in {self.data_dir}; need at least "
                               f"{self.cfg.system.min_free_disk_mb} MB (system.min_free_disk_mb)")
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(f"another ruvllm-edge daemon is using {self.data_dir}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _bind(self) -> zmq.Socket:
        scfg = self.cfg.server
        endpoint = self.cfg.endpoint()
        check_endpoint_security(endpoint, bool(scfg.curve_secret_key))
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, scfg.drop_message_bytes)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        if scfg.curve_secret_key:
            sock.curve_server = True
            sock.curve_secretkey = scfg.curve_secret_key.encode()
            sock.curve_publickey = scfg.curve_public_key.encode()
        if endpoint.startswith("ipc://"):
            path = Path(endpoint[len("ipc://"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = int(scfg.socket_mode, 8)
            old = os.umask(0o777 & ~mode)   # no window where the socket is wider than mode
            try:
                sock.bind(endpoint)
            finally:
                os.umask(old)
            os.chmod(path, mode)
            if scfg.socket_group:
                shutil.chown(path, group=scfg.socket_group)
            self._ipc_path: Path | None = path
        else:
            sock.bind(endpoint)
            self._ipc_path = None
        self.endpoint = endpoint
        return sock

    # ------------------------------------------------------------------ replies

    def _push(self) -> zmq.Socket:
        """This worker thread's PUSH socket into the loop."""
        s = getattr(self._local, "push", None)
        if s is None:
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 1000)
            s.connect(REPLIES_ENDPOINT)
            self._local.push = s
        return s

    def _send_from_worker(self, job: Job, msg: dict[str, Any]) -> None:
        self._push().send_multipart([job.ident, *job.prefix, protocol.pack(msg)])

    def _send_error(self, sock: zmq.Socket, ident: bytes, prefix: list[bytes], req_id: str | None,
                    err: RuvError, op: str = "?") -> None:
        self.metrics.errors.labels(err.code).inc()
        self.metrics.requests.labels(op if op in protocol.SCHEMAS else "?", "error").inc()
        sock.send_multipart([ident, *prefix, protocol.pack(protocol.error_reply(req_id,
                                                                               err.to_wire()))])

    # ------------------------------------------------------------------ loop

    def serve(self) -> int:
        sock = self._bind()
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(REPLIES_ENDPOINT)
        self._start_workers()
        self._install_signals()
        if self.cfg.inference.preload:
            self.aux_q.put_nowait(Job(b"", [], protocol.Request("preload", "preload", {}),
                                      "preload"))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        self.notifier.ready(f"serving on {self.endpoint}")
        log.info("serving", extra={"endpoint": self.endpoint, "data_dir": str(self.data_dir),
                                   "version": __version__, "pid": os.getpid()})
        last_tick = 0.0
        watchdog_every = min(self.cfg.server.watchdog_interval_ms / 1000,
                             (self.notifier.watchdog_s or 1e9) / 2)
        last_watchdog = 0.0
        drain_deadline: float | None = None
        try:
            while True:
                events = dict(poller.poll(int(TICK_S * 1000)))
                if pull in events:
                    for _ in range(1000):
                        try:
                            frames = pull.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        sock.send_multipart(frames)
                if sock in events:
                    for _ in range(256):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        self._on_message(sock, frames, accepting=drain_deadline is None)
                now = time.monotonic()
                if now - last_watchdog >= watchdog_every:
                    self.notifier.watchdog()
                    last_watchdog = now
                if now - last_tick >= 1.0:
                    self._tick(now)
                    last_tick = now
                if self._reload_requested:
                    self._reload_requested = False
                    self._do_reload()
                if self._stop_requested:
                    if drain_deadline is None:
                        drain_deadline = now + self.cfg.server.drain_timeout_ms / 1000
                        self.notifier.stopping()
                        log.info("draining", extra={"active": len(self._active),
                                                    "queued": self._queued()})
                        if self.scheduler is not None:
                            self.scheduler.stop(timeout=0.0)
                    idle = not self._active and self._queued() == 0
                    if idle or now >= drain_deadline:
                        if not idle:
                            self._cancel_all("shutting down")
                            self._join_workers(2.0)
                        # forward whatever the workers sent last
                        while True:
                            try:
                                sock.send_multipart(pull.recv_multipart(zmq.NOBLOCK))
                            except zmq.Again:
                                break
                        break
        finally:
            self._shutdown(sock, pull)
        return 0

    def _on_message(self, sock: zmq.Socket, frames: list[bytes], accepting: bool) -> None:
        """Parse, check and route one message; never raises."""
        try:
            ident, rest = frames[0], frames[1:]
            if len(rest) == 1:
                prefix: list[bytes] = []
            elif len(rest) == 2 and rest[0] == b"":
                prefix = [b""]
            else:
                self.metrics.malformed.labels("frames").inc()
                # Always answer: REQ-style empty delimiters are echoed back, any
                # other extra frames get a plain one-frame (DEALER) reply.
                delim = rest[:-1] if all(f == b"" for f in rest[:-1]) else []
                self._send_error(sock, ident, delim, None,
                                 BadRequest(f"expected one message frame, got {len(rest)}"))
                return
            data = rest[-1]
            now = time.monotonic()
            if not self.rate.allow(ident, now):
                self._send_error(sock, ident, prefix, protocol.peek_id(data),
                                 RateLimited("too many requests from this client",
                                             rate_per_s=self.cfg.server.rate_limit_per_s))
                return
            try:
                req = protocol.decode_request(data, self.cfg.server.max_message_bytes)
            except RuvError as exc:
                self.metrics.malformed.labels(exc.code).inc()
                self._send_error(sock, ident, prefix, protocol.peek_id(data), exc)
                return
            self._dispatch(sock, ident, prefix, req, accepting)
        except Exception:  # noqa: BLE001 - the loop must survive anything
            log.exception("unexpected error handling a message")
            self.metrics.malformed.labels("internal").inc()

    def _dispatch(self, sock: zmq.Socket, ident: bytes, prefix: list[bytes],
                  req: protocol.Request, accepting: bool) -> None:
        lane, _ = self.handlers.get(req.op, ("missing", None))
        if self.scheduler is not None and req.op not in PASSIVE_OPS:
            self.scheduler.touch()  # pre-empts idle-time learning within a token
        if lane == "missing":
            self._send_error(sock, ident, prefix, req.id,
                             NotFound(f"op {req.op!r} is not enabled in this daemon"), req.op)
            return
        if req.op == "query" and req.args.get("stream") and prefix:
            self._send_error(sock, ident, prefix, req.id,
                             BadRequest("streaming needs a DEALER socket; a REQ socket gets one "
                                        "reply per request"), req.op)
            return
        request_id = new_request_id() if req.op == "query" else req.id
        job = Job(ident, prefix, req, request_id)
        job.deadline = job.enqueued + self.cfg.server.request_timeout_ms / 1000
        if lane == "inline":
            self._run_job(job, inline_sock=sock)
            return
        if not accepting:
            self._send_error(sock, ident, prefix, req.id,
                             Busy("the daemon is shutting down", retry_after_ms=1000), req.op)
            return
        q = {"gen": self.gen_q, "aux": self.aux_q, "slow": self.slow_q}[lane]
        with self._jobs_lock:
            try:
                q.put_nowait(job)
            except queue.Full:
                self._send_error(sock, ident, prefix, req.id,
                                 Busy(f"{q.maxsize} requests are already queued; retry later",
                                      queue=q.maxsize, retry_after_ms=500), req.op)
                return
            self._active[request_id] = job
            self._by_client[(ident, req.id)] = request_id
        self.metrics.deferred.set(self._queued())

    # ------------------------------------------------------------------ workers

    def _queues(self) -> tuple["queue.Queue[Job]", ...]:
        return (self.gen_q, self.aux_q, self.slow_q)

    def _queued(self) -> int:
        return sum(q.qsize() for q in self._queues())

    def _start_workers(self) -> None:
        for i in range(self.cfg.server.max_concurrent_requests):
            self._threads.append(threading.Thread(target=self._worker, args=(self.gen_q,),
                                                  name=f"gen-{i}", daemon=True))
        self._threads.append(threading.Thread(target=self._worker, args=(self.aux_q,),
                                              name="aux-0", daemon=True))
        self._threads.append(threading.Thread(target=self._worker, args=(self.slow_q,),
                                              name="slow-0", daemon=True))
        for t in self._threads:
            t.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def _worker(self, q: "queue.Queue[Job | None]") -> None:
        while True:
            job = q.get()
            if job is None:
                break
            try:
                if job.req.op == "preload":
                    self._preload()
                else:
                    self._run_job(job)
            finally:
                with self._jobs_lock:
                    self._active.pop(job.request_id, None)
                    self._by_client.pop((job.ident, job.req.id), None)
                self.metrics.deferred.set(self._queued())
        push = getattr(self._local, "push", None)
        if push is not None:
            push.close()

    def _preload(self) -> None:
        try:
            self.engine.ensure_loaded()
        except RuvError as exc:
            log.error("preload failed", extra={"error": exc.message})

    def _run_job(self, job: Job, inline_sock: zmq.Socket | None = None) -> None:
        """Run a handler and send its reply; every exception becomes an error reply."""
        op = job.req.op
        def send(msg: dict[str, Any]) -> None:
            if inline_sock is not None:
                inline_sock.send_multipart([job.ident, *job.prefix, protocol.pack(msg)])
            else:
                self._send_from_worker(job, msg)

        t0 = time.perf_counter()
        status = "ok"
        try:
            if job.cancel.is_set():
                raise Cancelled("the request was cancelled before it started")
            if time.monotonic() > job.deadline:
                raise Timeout("the request waited in the queue past its deadline",
                              waited_ms=round((time.monotonic() - job.enqueued) * 1000))
            job.started = True
            if inline_sock is None:
                self.metrics.processing.inc()
            try:
                _, handler = self.handlers[op]
                result = handler(job)
            finally:
                if inline_sock is None:
                    self.metrics.processing.dec()
            if op == "query" and job.req.args.get("stream"):
                send(protocol.done_event(job.req.id, result))
            else:
                send(protocol.ok_reply(job.req.id, result))
        except RuvError as exc:
            status = "error"
            self.metrics.errors.labels(exc.code).inc()
            if exc.code == "internal":
                log.error("request failed", extra={"op": op, "error": exc.message})
            send(protocol.error_reply(job.req.id, exc.to_wire()))
        except Exception as exc:  # noqa: BLE001 - no handler may crash the daemon
            status = "error"
            log.exception("handler crashed", extra={"op": op})
            err = Internal(f"internal error in {op}: {type(exc).__name__}")
            self.metrics.errors.labels(err.code).inc()
            send(protocol.error_reply(job.req.id, err.to_wire()))
        finally:
            dt = time.perf_counter() - t0
            if self.scheduler is not None and op not in PASSIVE_OPS:
                self.scheduler.touch()  # idle time counts from the end of the last request
            self.metrics.requests.labels(op, status).inc()
            self.metrics.latency.labels(op).observe(dt)
            if op not in ("health", "metrics", "stats"):
                log.info("request", extra={"op": op, "id": job.req.id, "status": status,
                                           "ms": round(dt * 1000, 1)})

    # ------------------------------------------------------------------ ops

    def _op_query(self, job: Job) -> dict[str, Any]:
        args = job.req.args
        stream = bool(args.get("stream"))
        seq = 0

        def on_token(text: str) -> None:
            nonlocal seq
            self._send_from_worker(job, protocol.token_event(job.req.id, seq, text))
            seq += 1

        def should_stop() -> str | None:
            if job.cancel.is_set():
                return "cancelled"
            if time.monotonic() > job.deadline:
                return "timeout"
            return None

        budget = (args.get("constraints") or {}).get("max_latency_ms")
        ctx = QueryContext(request_id=job.request_id,
                           deadline=job.enqueued + budget / 1000 if budget else None,
                           on_token=on_token if stream else None, should_stop=should_stop,
                           queue_len=self.gen_q.qsize())
        result = self.pipeline.query(args, ctx)
        usage = result.get("usage", {})
        self.metrics.prompt_tokens.inc(usage.get("prompt_tokens", 0))
        self.metrics.cached_prompt_tokens.inc(usage.get("cached_tokens", 0))
        self.metrics.completion_tokens.inc(usage.get("completion_tokens", 0))
        for stage, ms in result.get("latency_ms", {}).items():
            if stage != "total":
                self.metrics.stage_latency.labels(stage).observe(ms / 1000)
        if result.get("confidence") is not None:   # None: the router is off
            self._confidence_ema += CONFIDENCE_EMA * (result["confidence"] - self._confidence_ema)
            self.metrics.router_confidence.set(self._confidence_ema)
            if result["routing_info"].get("fallback"):
                self.metrics.router_fallbacks.inc()
        return result

    def _op_learn(self, job: Job) -> dict[str, Any]:
        if self.scheduler is None:
            raise NotFound("learning is disabled (learning.enabled = false or no router)")
        return {"jobs": self.scheduler.run_now(wait=bool(job.req.args.get("wait")))}

    def _op_backup(self, job: Job) -> dict[str, Any]:
        """Online backup while serving: flush and save what lives in memory first."""
        from . import backup

        def before() -> None:
            if self.components.memory is not None:
                self.components.memory.flush()
            self.components.save()

        try:
            res = backup.create_backup(self.db, self.data_dir, self.cfg.source_path or None,
                                       Path(job.req.args["to"]), self.cfg.backup.keep_last,
                                       before=before)
        except RuvError:
            self.metrics.backups.labels("error").inc()
            raise
        self.metrics.backups.labels("ok").inc()
        return res

    def _on_job_run(self, name: str, status: str, seconds: float, report: dict[str, Any]) -> None:
        self.metrics.learning_jobs.labels(name, status).inc()
        self.metrics.learning_job_seconds.labels(name).observe(seconds)

    def _op_cancel(self, job: Job) -> dict[str, Any]:
        target = job.req.args["request_id"]
        with self._jobs_lock:
            rid = target if target in self._active else self._by_client.get((job.ident, target))
            victim = self._active.get(rid) if rid else None
        if victim is None:
            raise NotFound(f"no queued or running request {target!r}", request_id=target)
        victim.cancel.set()
        return {"request_id": victim.request_id, "cancelled": True,
                "state": "running" if victim.started else "queued"}

    def _cancel_all(self, why: str) -> None:
        with self._jobs_lock:
            for job in self._active.values():
                job.cancel.set()
        log.warning("cancelled in-flight requests", extra={"reason": why})

    # ------------------------------------------------------------------ status

    def health(self) -> dict[str, Any]:
        comps: dict[str, dict[str, Any]] = {}
        critical = degraded = False
        t = time.perf_counter()
        try:
            self.db.read("SELECT 1").fetchone()
            comps["database"] = {"status": "healthy",
                                 "latency_ms": round((time.perf_counter() - t) * 1000, 2)}
        except Exception as exc:  # noqa: BLE001
            comps["database"] = {"status": "critical", "error": str(exc)}
            critical = True
        eng = self.engine.status()
        if self.engine.state == "unavailable":
            eng["status"] = "degraded"
            degraded = True
        else:
            eng["status"] = "healthy"
        comps["inference"] = eng
        proc = psutil.Process()
        rss_mb = proc.memory_info().rss / 1_048_576
        free_disk_mb = shutil.disk_usage(self.data_dir).free / 1_048_576
        res = {"rss_mb": round(rss_mb, 1), "budget_mb": self.cfg.system.max_memory_mb,
               "mem_available_mb": round(psutil.virtual_memory().available / 1_048_576, 1),
               "disk_free_mb": round(free_disk_mb, 1)}
        if rss_mb > self.cfg.system.max_memory_mb:
            res["status"] = "critical"
            critical = True
        elif free_disk_mb < self.cfg.system.min_free_disk_mb:
            res["status"] = "degraded"
            degraded = True
        else:
            res["status"] = "healthy"
        comps["resources"] = res
        comps["queue"] = {"status": "healthy", "gen": self.gen_q.qsize(), "aux": self.aux_q.qsize(),
                          "slow": self.slow_q.qsize(), "max": self.cfg.server.max_queue,
                          "active": len(self._active)}
        for name, comp in self.components.health(self.scheduler).items():
            comps[name] = comp
            degraded = degraded or comp.get("status") == "degraded"
        status = "critical" if critical else "degraded" if degraded else "healthy"
        return {"status": status, "components": comps, "version": __version__,
                "uptime_s": round(time.time() - self.started_at, 1)}

    def stats(self) -> dict[str, Any]:
        def total(counter: Any) -> dict[str, float]:
            out: dict[str, float] = {}
            for metric in counter.collect():
                for s in metric.samples:
                    if s.name.endswith("_total"):
                        key = "/".join(s.labels.values()) or "all"
                        out[key] = out.get(key, 0) + s.value
            return out

        return {
            "version": __version__, "uptime_s": round(time.time() - self.started_at, 1),
            "endpoint": self.endpoint, "data_dir": str(self.data_dir),
            "requests": total(self.metrics.requests), "errors": total(self.metrics.errors),
            "malformed": total(self.metrics.malformed),
            "tokens": {"prompt": total(self.metrics.prompt_tokens).get("all", 0),
                       "cached": total(self.metrics.cached_prompt_tokens).get("all", 0),
                       "completion": total(self.metrics.completion_tokens).get("all", 0)},
            "queue": {"gen": self.gen_q.qsize(), "aux": self.aux_q.qsize(),
                      "slow": self.slow_q.qsize(), "active": len(self._active)},
            "learning": self.scheduler.stats() if self.scheduler is not None else None,
            "model": self.engine.status(),
            "rss_mb": round(psutil.Process().memory_info().rss / 1_048_576, 1),
        }

    def render_metrics(self) -> str:
        self._update_gauges()
        mem = self.components.memory
        if mem is not None:
            for kind, n in mem.db.read("SELECT kind, count(*) FROM nodes GROUP BY kind"):
                self.metrics.memory_nodes.labels(kind).set(n)
        return self.metrics.render()

    def _update_gauges(self) -> None:
        self.metrics.memory_usage.set(psutil.Process().memory_info().rss)
        self.metrics.model_loaded.set(1 if self.engine.loaded else 0)
        self.metrics.uptime.set(time.time() - self.started_at)
        self.metrics.quality.set(self.pipeline.recent_quality)
        mem = self.components.memory
        if mem is not None:
            self.metrics.writeback_queue.set(mem._wb.depth())
        self.metrics.deferred.set(self._queued())

    def _tick(self, now: float) -> None:
        """Once a second on the loop thread: cheap housekeeping only."""
        try:
            self._update_gauges()
            self.rate.purge(now)
            if self.gen_q.empty() and not any(j.req.op == "query" for j in
                                              list(self._active.values())):
                self.engine.maybe_unload(now)
        except Exception:  # noqa: BLE001
            log.exception("housekeeping failed")

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, *_: object) -> None:
        self._stop_requested = True   # only an assignment: safe however signals nest

    def _on_reload_signal(self, *_: object) -> None:
        self._reload_requested = True

    def stop(self) -> None:
        self._stop_requested = True

    def _do_reload(self) -> None:
        """SIGHUP: re-read the config file and apply the settings that are safe live."""
        from . import config as config_mod

        self.notifier.reloading()
        try:
            new = config_mod.load(self.cfg.source_path or None, data_dir=self.cfg.data_dir,
                                  endpoint=self.cfg.server.endpoint,
                                  models_dir=self.cfg.models_dir)
        except ConfigError as exc:
            log.error("reload refused: invalid config", extra={"errors": exc.errors})
            self.notifier.ready("serving (reload refused)")
            return
        logging.getLogger().setLevel(new.system.log_level)
        self.rate.rate = new.server.rate_limit_per_s
        self.rate.burst = new.server.rate_limit_burst
        safe_inference = {"keep_alive_s", "max_tokens", "temperature", "top_p",
                          "repeat_penalty", "system_prompt", "reserve_answer_tokens"}
        changed_inf = {k: getattr(new.inference, k) for k in safe_inference}
        import dataclasses

        self.engine.cfg = dataclasses.replace(self.engine.cfg, **changed_inf)
        self.cfg = dataclasses.replace(
            self.cfg, system=dataclasses.replace(self.cfg.system,
                                                 log_level=new.system.log_level),
            server=dataclasses.replace(self.cfg.server,
                                       rate_limit_per_s=new.server.rate_limit_per_s,
                                       rate_limit_burst=new.server.rate_limit_burst,
                                       request_timeout_ms=new.server.request_timeout_ms),
            inference=self.engine.cfg, learning=new.learning)
        self.pipeline.cfg = self.cfg
        log.info("config reloaded", extra={"path": self.cfg.source_path})
        self.notifier.ready("serving (reloaded)")

    # ------------------------------------------------------------------ shutdown

    def _join_workers(self, timeout_s: float) -> None:
        for q in self._queues():
            for _ in range(len(self._threads)):
                try:
                    q.put_nowait(None)  # type: ignore[arg-type]
                except queue.Full:
                    break
        end = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    def _shutdown(self, sock: zmq.Socket, pull: zmq.Socket) -> None:
        log.info("shutting down")
        try:
            if self.scheduler is not None:
                self.scheduler.stop(timeout=5.0)
            self._join_workers(self.cfg.server.drain_timeout_ms / 1000 + 2)
            self.pipeline.close()
            self.components.save()
        except Exception:  # noqa: BLE001
            log.exception("error while flushing state")
        finally:
            sock.close(0)
            pull.close(0)
            self.engine.unload()
            try:
                self.db.checkpoint()
            except StorageError:
                pass
            self.db.close()
            if self._ipc_path is not None:
                try:
                    self._ipc_path.unlink()
                except FileNotFoundError:
                    pass
            self._release_lock()
            self.notifier.close()
            log.info("stopped")


def run(cfg: Config) -> int:
    try:
        daemon = Daemon(cfg)
    except StartupError as exc:
        log.error("startup refused", extra={"reason": str(exc)})
        raise
    return daemon.serve()
