"""The one dispatcher every op runs through: validate, then execute.

circus's dispatcher is the model. ``admit`` validates a decoded request
against the daemon's state (op enabled, streaming needs a DEALER, room in its
lane) and runs it inline or queues it; ``run`` executes the op and maps every
exception to an error reply with a stable code, so no op can take the socket
loop or a worker down.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Mapping

import zmq

from .. import protocol
from ..embed_batch import EmbedBatcher
from ..errors import BadRequest, Busy, Cancelled, Internal, NotFound, RuvError, Timeout
from ..pipeline import new_request_id
from .lanes import Job
from .ops.base import Moved, Op, OpContext
from .services import Services
from .transport import Transport

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]
BUSY_RETRY_MS = 500        # the retry_after_ms hint of a full queue (docs/protocol.md)
SHUTDOWN_RETRY_MS = 1000   # ... and of a daemon that is draining
BATCH_MAX = 16             # texts per embedding run (embed_batch.py): past 16 it costs more
BATCH_RUNS = 1             # one embedding run at a time: the other core runs retrievals


def field_named_in(message: str, schema: Mapping[str, Any]) -> str:
    """``details.field`` for a bad_request an op raised without one (docs/protocol.md
    promises it on every bad_request): the argument its message names first, else
    ``args``. The schema check names fields itself; this covers the values it
    accepts and an op then refuses (a blank query, say)."""
    hits = [(m.start(), name) for name in schema
            if (m := re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message))]
    return f"args.{min(hits)[1]}" if hits else "args"


class Dispatcher:
    """Validate, then execute; every exception becomes an error reply."""

    def __init__(self, ops: Mapping[str, Op], services: Services, transport: Transport) -> None:
        self.ops = dict(ops)     # a copy: tests may swap one op for a faulty one
        self.s = services
        self.transport = transport
        self.fast = services.lanes.workers["fast"] > 0   # 0: no fast lane (server.fast_workers)
        emb = services.components.embedder
        # Concurrent ops on the fast lane share embedding runs (embed_batch.py).
        self.batcher = (EmbedBatcher(emb.embed_batch, max_batch=BATCH_MAX, max_running=BATCH_RUNS,
                                     expected=lambda: services.lanes.in_flight("fast"))
                        if emb is not None and self.fast else None)

    # -- validate ----------------------------------------------------------

    def lane_of(self, op: Op, args: Mapping[str, Any] | None = None) -> str | None:
        """The lane a request starts on, or None when the op is switched off in this daemon."""
        comps = self.s.components
        if op.requires == "memory" and comps.memory is None and not comps.memory_error:
            return None
        if op.starts_on is not None and args is not None and self.fast:
            return op.starts_on(args) or op.lane
        if op.lane == "fast" and not self.fast:
            return "aux"
        return op.lane

    def admit(self, sock: zmq.Socket, ident: bytes, prefix: list[bytes],
              req: protocol.Request, accepting: bool) -> None:
        """Route one decoded request: run it inline, queue it, or refuse it."""
        op = self.ops.get(req.op)
        lane = self.lane_of(op, req.args) if op is not None else None
        if op is None or not op.passive:
            self.s.touch()   # pre-empts idle-time learning within a token
        if op is None or lane is None:
            self.transport.send_error(sock, ident, prefix, req.id,
                                      NotFound(f"op {req.op!r} is not enabled in this daemon"),
                                      req.op)
            return
        if req.args.get("stream") and prefix:
            self.transport.send_error(sock, ident, prefix, req.id,
                                      BadRequest("args.stream: streaming needs a DEALER socket; "
                                                 "a REQ socket gets one reply per request",
                                                 field="args.stream"), req.op)
            return
        if self.s.lanes.jobs.find_by_client(ident, req.id) is not None:
            # Replies are matched by id: a second request under an id that is still
            # queued or running could not be told apart from the first.
            self.transport.send_error(sock, ident, prefix, req.id, BadRequest(
                f"id: {req.id!r} is already in flight on this connection; use a new id "
                "per request", field="id", in_flight=True), req.op)
            return
        request_id = new_request_id() if op.new_request_id else req.id
        job = Job(ident, prefix, req, request_id, lane=lane)
        job.deadline = job.enqueued + self.s.cfg.server.request_timeout_ms / 1000
        if lane == "inline":
            self.run(job, lambda msg: sock.send_multipart([ident, *prefix, protocol.pack(msg)]),
                     inline=True)
            return
        if not accepting:
            self.transport.send_error(sock, ident, prefix, req.id,
                                      Busy("the daemon is shutting down",
                                           retry_after_ms=SHUTDOWN_RETRY_MS),
                                      req.op)
            return
        q = self.s.lanes.queues[lane]
        if not self.s.lanes.jobs.enqueue(job, q):
            self.transport.send_error(sock, ident, prefix, req.id,
                                      Busy(f"{q.maxsize} requests are already queued; retry "
                                           "later", lane=lane, queue=q.maxsize,
                                           retry_after_ms=BUSY_RETRY_MS), req.op)
            return
        self.s.metrics.deferred.set(self.s.lanes.queued())
        if lane == "fast" and op.embeds and self.batcher is not None:
            text = req.args.get(op.embeds)
            if isinstance(text, str) and req.args.get("use_memory", True):
                self.batcher.prefetch(text)   # batched with the other queued requests

    # -- execute -----------------------------------------------------------

    def run_queued(self, job: Job) -> bool:
        """A worker's entry point: the daemon's own tasks, or an op replying through PUSH.

        True when the op moved on to another lane (it is not done yet).
        """
        if job.task is not None:
            try:
                job.task()
            except Exception:  # noqa: BLE001 - a failing task must not kill its worker
                log.exception("background task failed", extra={"task": job.req.op})
            return False
        return self.run(job, lambda msg: self.transport.worker_send(job.ident, job.prefix, msg))

    def _move(self, job: Job, moved: Moved) -> bool:
        """Queue the rest of a request on ``moved.lane``; ``busy`` when that lane is full."""
        if self.s.lanes.move_to(moved.lane, job, moved.resume):
            self.s.metrics.deferred.set(self.s.lanes.queued())
            return True
        q = self.s.lanes.queues[moved.lane]
        raise Busy(f"{q.maxsize} requests are already queued; retry later", lane=moved.lane,
                   queue=q.maxsize, retry_after_ms=BUSY_RETRY_MS)

    def run(self, job: Job, send_any: Send, inline: bool = False) -> bool:
        """Run an op and send its reply; every exception becomes an error reply.

        Returns True when the op moved on to another lane (``OpContext.move_to``):
        no reply yet, and the metrics are taken when it ends there.
        """

        def send(msg: dict[str, Any]) -> None:
            if "ok" in msg and not inline:
                # The final message: out of the job table first, so the client may
                # reuse the id (or be told not_found by cancel) as soon as it has it.
                self.s.lanes.jobs.remove(job)
            send_any(msg)

        name = job.req.op
        op = self.ops[name]
        m = self.s.metrics
        t0 = job.t_first or time.perf_counter()
        job.t_first = t0
        status = "ok"
        moved = False
        try:
            if job.cancel.is_set():
                raise Cancelled("the request was cancelled before it started",
                                request_id=job.request_id, completion_tokens=0)
            if time.monotonic() > job.deadline:
                raise Timeout("the request waited in the queue past its deadline",
                              waited_ms=round((time.monotonic() - job.enqueued) * 1000))
            # What cancel reports: "running" once the op's own work runs. A request on
            # the lane it starts on (Op.starts_on: a query planned on fast) has not
            # reached it yet, and a cancel then ends it unanswered (ops/query.py).
            job.started = op.starts_on is None or job.resume is not None or job.lane == op.lane
            if not inline:
                m.processing.inc()
            try:
                resume, job.resume = job.resume, None
                if resume is not None:
                    result = resume()
                else:
                    result = op.execute(OpContext(self.s, job, send, self.batcher),
                                        job.req.args)
            except Moved as mv:
                moved = self._move(job, mv)
                return True
            finally:
                if not inline:
                    m.processing.dec()
            if job.req.args.get("stream"):
                send(protocol.done_event(job.req.id, result))
            else:
                send(protocol.ok_reply(job.req.id, result))
        except RuvError as exc:
            status = "error"
            if exc.code == "bad_request" and "field" not in exc.details:
                exc.details["field"] = field_named_in(exc.message, op.args)
            if exc.code in ("cancelled", "timeout"):   # documented: always name the request
                exc.details.setdefault("request_id", job.request_id)
                exc.details.setdefault("completion_tokens", 0)
            m.errors.labels(exc.code).inc()
            if exc.code == "internal":
                log.error("request failed", extra={"op": name, "error": exc.message})
            send(protocol.error_reply(job.req.id, exc.to_wire()))
        except Exception as exc:  # noqa: BLE001 - no op may crash the daemon
            status = "error"
            log.exception("handler crashed", extra={"op": name})
            err = Internal(f"internal error in {name}: {type(exc).__name__}")
            m.errors.labels(err.code).inc()
            send(protocol.error_reply(job.req.id, err.to_wire()))
        finally:
            if not moved:
                self._account(job, op, status, time.perf_counter() - t0)
        return False

    def _account(self, job: Job, op: Op, status: str, dt: float) -> None:
        """Metrics and the request log line of one finished request."""
        name = op.name
        m = self.s.metrics
        if not op.passive:
            self.s.touch()  # idle time counts from the end of the last request
        m.requests.labels(name, status).inc()
        m.latency.labels(name).observe(dt)
        if not op.passive:
            log.info("request", extra={"op": name, "id": job.req.id, "status": status,
                                       "ms": round(dt * 1000, 1)})

