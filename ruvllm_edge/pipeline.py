"""The query path: embed -> retrieve -> route -> prompt -> generate -> record.

This module composes the parts (memory, router, inference, sessions) and
returns plain data; it does no socket I/O. The server runs it on a worker
thread and passes in the callbacks that stream tokens and check for cancel or
deadline. Each stage is timed, because ``latency_ms`` in every reply is how
users see where the time goes on a slow device.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .config import Config
from .errors import Cancelled, NotFound, Timeout
from .inference import Generation, InferenceEngine
from .memory.db import Database
from .sessions import SessionStore

log = logging.getLogger(__name__)

PREVIEW_CHARS = 160
StopCheck = Callable[[], str | None]


@dataclass
class QueryContext:
    """What the server hands to a query besides its args."""

    request_id: str
    deadline: float | None = None                 # time.monotonic() budget end (max_latency_ms)
    on_token: Callable[[str], None] | None = None
    should_stop: StopCheck = lambda: None
    queue_len: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def heuristic_quality(answer: str, finish_reason: str, completion_tokens: int) -> float:
    """A cheap 0..1 prior of answer quality used for the writeback gate.

    The LLM judge (learning/judge.py) rescores in idle time; this only keeps
    obviously bad answers (empty, cut off, looping, refusals) out of memory.
    """
    text = answer.strip()
    if not text:
        return 0.0
    q = 0.85
    if finish_reason != "stop":
        q -= 0.25
    words = re.findall(r"\w+", text.lower())
    if len(words) >= 12:
        distinct = len(set(words)) / len(words)
        if distinct < 0.4:
            q -= 0.4
    if re.search(r"\b(i (do not|don't|cannot|can't) (know|answer|help)|as an ai)\b", text.lower()):
        q -= 0.3
    if completion_tokens <= 1:
        q -= 0.2
    return float(min(max(q, 0.0), 1.0))


class Pipeline:
    def __init__(self, cfg: Config, db: Database, engine: InferenceEngine,
                 sessions: SessionStore, memory: Any = None, embedder: Any = None,
                 router: Any = None) -> None:
        self.cfg = cfg
        self.db = db
        self.engine = engine
        self.sessions = sessions
        self.memory = memory
        self.embedder = embedder
        self.router = router
        self.recent_quality = 0.75

    # ------------------------------------------------------------------

    def query(self, args: dict[str, Any], ctx: QueryContext) -> dict[str, Any]:
        t0 = time.perf_counter()
        lat = {"embedding": 0.0, "retrieval": 0.0, "routing": 0.0, "generation": 0.0}
        icfg = self.cfg.inference
        cons = args.get("constraints") or {}
        query: str = args["query"]
        sid = args.get("session_id")
        session = self.sessions.load(sid) if sid else None

        max_tokens = int(cons.get("max_tokens", icfg.max_tokens))
        temperature = float(cons.get("temperature", icfg.temperature))
        top_p = float(cons.get("top_p", icfg.top_p))
        routing: dict[str, Any] = {"router": "disabled", "mode": "generate",
                                   "context_k": 0, "fallback": True}
        confidence: float | None = None
        sources: list[dict[str, Any]] = []
        memory_text = ""

        # The memory and router stages plug in here (see _retrieve/_route).
        system = (session.system_prompt if session and session.system_prompt
                  else icfg.system_prompt)
        if memory_text:
            system = f"{system}\n\n{memory_text}"
        history = session.history if session else []

        t = time.perf_counter()
        plan = self.engine.plan(system, history, query, max_tokens)
        deadline = ctx.deadline

        def stop() -> str | None:
            reason = ctx.should_stop()
            if reason:
                return reason
            if deadline is not None and time.monotonic() >= deadline:
                return "deadline"
            return None

        gen: Generation = self.engine.generate(plan, temperature=temperature, top_p=top_p,
                                               on_token=ctx.on_token, should_stop=stop)
        lat["generation"] = (time.perf_counter() - t) * 1000
        if gen.finish_reason == "cancelled":
            raise Cancelled("the request was cancelled", request_id=ctx.request_id,
                            completion_tokens=gen.completion_tokens)
        if gen.finish_reason == "timeout":
            raise Timeout("the request ran past server.request_timeout_ms",
                          request_id=ctx.request_id, completion_tokens=gen.completion_tokens)

        quality = heuristic_quality(gen.text, gen.finish_reason, gen.completion_tokens)
        lat["total"] = (time.perf_counter() - t0) * 1000
        result = {
            "request_id": ctx.request_id,
            "text": gen.text,
            "confidence": confidence,
            "sources": sources,
            "routing_info": routing,
            "latency_ms": {k: round(v, 2) for k, v in lat.items()},
            "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                      "cached_tokens": gen.cached_tokens},
            "truncated": gen.truncated,
            "finish_reason": gen.finish_reason,
            "context": {"trimmed_turns": gen.trimmed_turns,
                        "max_tokens_clipped": gen.max_tokens_clipped},
        }
        if sid:
            result["session_id"] = sid
        self._record(ctx.request_id, sid, query, result, None, quality)
        if sid:
            self.sessions.append(sid, ctx.request_id, query, gen.text, None)
        return result

    # ------------------------------------------------------------------

    def _record(self, request_id: str, sid: str | None, query: str, result: dict[str, Any],
                features: np.ndarray | None, quality: float) -> None:
        """The request log row that feedback and learning refer back to."""
        with self.db.atomic() as c:
            c.execute(
                "INSERT INTO requests(id, session_id, created_at, query, answer, sources, routing, "
                "features, prompt_tokens, completion_tokens, latency_ms, truncated, status) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (request_id, sid, time.time(), query, result["text"],
                 json.dumps([{"id": s["id"], "kind": s["kind"], "relevance": s["relevance"]}
                             for s in result["sources"]]),
                 json.dumps(result["routing_info"]),
                 None if features is None else np.asarray(features, np.float32).tobytes(),
                 result["usage"]["prompt_tokens"], result["usage"]["completion_tokens"],
                 result["latency_ms"]["total"], int(result["truncated"]),
                 result["finish_reason"]))

    def feedback(self, args: dict[str, Any]) -> dict[str, Any]:
        rid = args["request_id"]
        row = self.db.read("SELECT id FROM requests WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise NotFound(f"no request {rid!r} to give feedback on", request_id=rid)
        with self.db.atomic() as c:
            cur = c.execute("INSERT INTO feedback(request_id, rating, correction, created_at) "
                            "VALUES (?, ?, ?, ?)",
                            (rid, args.get("rating"), args.get("correction"), time.time()))
            fid = cur.lastrowid
        return {"feedback_id": fid, "request_id": rid, "stored": True}


    def close(self) -> None:
        """Flush what is pending (writeback, router state) before the DB closes."""


def new_request_id() -> str:
    return uuid.uuid4().hex
