"""The query path: embed -> retrieve -> route -> prompt -> generate -> record.

This module composes the parts (memory, router, inference, sessions) and
returns plain data; it does no socket I/O. The server runs it on a worker
thread and passes in the callbacks that stream tokens and check for cancel or
deadline. Each stage is timed, because ``latency_ms`` in every reply is how
users see where the time goes on a slow device.

The same answering core (``_answer``) serves live queries and the idle-time
explorer (``answer_with``), so what the router learns from counterfactual
runs is exactly what a live request would have produced - minus the
recording: exploration writes nothing to sessions, memory or the request log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import psutil

from .config import Config
from .errors import Cancelled, Timeout
from .feedback import FeedbackLog
from .inference import Generation, InferenceEngine
from .learning.explore import Outcome
from .learning.utility import ReplaySample
from .answer import compose, policy, support
from .answer.prompt import fit_notes, notes_turn, strip_framing
from .answer.text import capitalised_names
from .memory.db import Database
from .memory.retrieval import Candidate, Retrieval
from .memory.writeback import Interaction
from .router.features import FeatureInputs, build_features
from .router.policy import CONTEXT_CLASSES, MODES, Decision, context_class_of
from .sessions import SessionStore

log = logging.getLogger(__name__)

PREVIEW_CHARS = 160
StopCheck = Callable[[], str | None]
# Answering straight from memory needs a trusted record that matches this well.
MEMORY_ANSWER_MIN_SIM = 0.55
MEMORY_ANSWER_MIN_TRUST = 0.9
QUALITY_EMA = 0.1
RSS_EVERY_S = 0.5


@dataclass
class QueryContext:
    """What the server hands to a query besides its args."""

    request_id: str
    deadline: float | None = None                 # time.monotonic() budget end (max_latency_ms)
    on_token: Callable[[str], None] | None = None
    should_stop: StopCheck = lambda: None
    queue_len: int = 0
    embed: Callable[[str], np.ndarray] | None = None   # batches with concurrent requests


@dataclass
class Prepared:
    """A query up to its plan (``Pipeline.prepare``): what ``finish`` needs."""

    ctx: QueryContext
    t0: float                                   # perf_counter at the start (latency_ms.total)
    lat: dict[str, float]
    query: str
    sid: str | None
    session: Any                                # sessions.Session | None
    use_memory: bool
    qvec: np.ndarray | None
    retrieval: Retrieval | None
    x: np.ndarray | None
    decision: Any
    h_next: np.ndarray | None
    answer: Answer | None                       # set: answered without the model
    later: Callable[[], Answer]                 # the generation when ``answer`` is None

    @property
    def needs_model(self) -> bool:
        return self.answer is None


@dataclass
class Answer:
    text: str
    finish_reason: str
    sources: list[Candidate] = field(default_factory=list)
    gen: Generation | None = None
    cut_ids: list[int] = field(default_factory=list)
    dropped_ids: list[int] = field(default_factory=list)
    plan: str = "general"          # answer | decline | general (answer/policy.py)
    grounded: bool = False         # generated and every value found in a user-given record
    fallback: bool = False         # generated, not grounded, so the record was quoted instead

    @property
    def completion_tokens(self) -> int:
        return self.gen.completion_tokens if self.gen else 0


def heuristic_quality(answer: str, finish_reason: str, completion_tokens: int) -> float:
    """A cheap 0..1 prior of answer quality used for the writeback gate.

    The LLM judge (learning/judge.py) rescores in idle time; this only keeps
    obviously bad answers (empty, cut off, looping, refusals) out of memory.
    """
    text = answer.strip()
    if not text:
        return 0.0
    if finish_reason == "memory":
        return 1.0
    q = 0.85
    if finish_reason != "stop":
        q -= 0.25
    words = re.findall(r"\w+", text.lower())
    if len(words) >= 12 and len(set(words)) / len(words) < 0.4:
        q -= 0.4
    if re.search(r"\b(i (do not|don't|cannot|can't) (know|answer|help)|as an ai)\b", text.lower()):
        q -= 0.3
    if completion_tokens <= 1:
        q -= 0.2
    return float(min(max(q, 0.0), 1.0))


def trusted_hit(cands: Sequence[Candidate], similarity_margin: float = 0.1) -> Candidate | None:
    """The record an answer-from-memory may quote: trusted, a close match, and
    not clearly beaten by another record (a document that matches the question
    better must not be answered over by a nearby fact)."""
    hits = [c.similarity for c in cands if c.hop == 0]
    best = max(hits) if hits else 0.0
    for c in cands:
        if (c.trust >= MEMORY_ANSWER_MIN_TRUST and c.similarity >= MEMORY_ANSWER_MIN_SIM
                and c.similarity >= best - similarity_margin):
            return c
    return None


def source_row(c: Candidate) -> dict[str, Any]:
    return {"id": c.id, "kind": c.kind, "preview": c.text[:PREVIEW_CHARS],
            "relevance": round(float(c.relevance), 4), "source": c.source}


class Pipeline:
    def __init__(self, cfg: Config, db: Database, engine: InferenceEngine,
                 sessions: SessionStore, *, memory: Any = None, embedder: Any = None,
                 router: Any = None, replay: Any = None) -> None:
        self.cfg = cfg
        self.db = db
        self.engine = engine
        self.sessions = sessions
        self.memory = memory          # memory.store.MemoryStore | None
        self.embedder = embedder      # embedding.Embedder | None
        self.router = router          # router.policy.Router | None
        self.replay = replay          # learning.replay.ReplayBuffer | None
        self.feedback_log = FeedbackLog(db, memory, replay)
        self.recent_quality = 0.75
        self._router_lock = threading.Lock()
        self._proc = psutil.Process()
        self._rss = (-1e9, 0.0)       # (monotonic time, MB): read at most every RSS_EVERY_S

    # ------------------------------------------------------------------ stages

    def _embed(self, query: str, embed: Callable[[str], np.ndarray] | None = None
               ) -> np.ndarray | None:
        """(384,) float32; ``embed`` is the server's batching embed (embed_batch.py)."""
        if self.embedder is None:
            return None
        return (embed or self.embedder.embed)(query)

    def _retrieve(self, query: str, qvec: np.ndarray | None, use_memory: bool) -> Retrieval | None:
        if not use_memory or self.memory is None or qvec is None:
            return None
        k = max(self.cfg.memory.knn_k, 16)
        return self.memory.retrieve(query, qvec, k)

    def _features(self, query: str, qvec: np.ndarray, retrieval: Retrieval | None,
                  turn_index: int, queue_len: int, cons: dict[str, Any]) -> np.ndarray:
        rss_mb = self._rss_mb()
        inp = FeatureInputs(
            query=query, query_tokens=self.engine.count_tokens(query), query_vec=qvec,
            retrieval=retrieval.stats if retrieval else {}, turn_index=turn_index,
            memory_pressure=min(rss_mb / self.cfg.system.max_memory_mb, 1.0),
            queue_len=queue_len, model_loaded=self.engine.loaded,
            latency_budget_ms=cons.get("max_latency_ms"), max_tokens=cons.get("max_tokens"),
            recent_quality=self.recent_quality)
        return build_features(inp)                              # (N_FEATURES,) float32

    def _rss_mb(self) -> float:
        """The process RSS for the memory-pressure feature, read from /proc at most every
        RSS_EVERY_S: at 100+ answers/s the read was a tenth of an answer from memory."""
        now = time.monotonic()
        t, mb = self._rss
        if now - t >= RSS_EVERY_S:
            mb = self._proc.memory_info().rss / 1_048_576
            self._rss = (now, mb)
        return mb

    def _route(self, x: np.ndarray | None, h: np.ndarray | None, defaults: dict[str, Any]
               ) -> tuple[Any, np.ndarray | None]:
        """(Decision, next hidden state); a fixed default policy when the router is off."""
        if self.router is None or x is None:
            k = self.cfg.router.fallback_context_k if self.memory is not None else 0
            k = min(CONTEXT_CLASSES, key=lambda c: abs(c - k))
            return Decision(context_k=k, mode="long", max_tokens=int(defaults["max_tokens"]),
                            temperature=float(defaults["temperature"]),
                            top_p=float(defaults["top_p"]), confidence=0.0, fallback=True,
                            context_class=context_class_of(k), mode_class=MODES.index("long")), None
        with self._router_lock:
            return self.router.decide(x, h, defaults)

    def _answer(self, query: str, system_base: str, history: Sequence[tuple[str, str]],
                retrieval: Retrieval | None, decision: Any, *,
                on_token: Callable[[str], None] | None, should_stop: StopCheck) -> Answer:
        """Plan (answer / decline / general), then quote, generate or decline (docs/answers.md)."""
        now, later = self._answer_steps(query, system_base, history, retrieval, decision,
                                        on_token=on_token, should_stop=should_stop)
        return now if now is not None else later()

    def _answer_steps(self, query: str, system_base: str, history: Sequence[tuple[str, str]],
                      retrieval: Retrieval | None, decision: Any, *,
                      on_token: Callable[[str], None] | None, should_stop: StopCheck
                      ) -> tuple[Answer | None, Callable[[], Answer]]:
        """``_answer`` in two steps: (the answer, when the plan needs no model; else None,
        and the generation that finishes it). The server answers the first kind
        without waiting for the model (a quote or a decline costs milliseconds)."""
        def none() -> Answer:
            raise AssertionError("answered without the model")

        cands = list(retrieval.candidates) if retrieval else []
        if self.cfg.answer.policy == "naive":
            return None, lambda: self._naive(query, system_base, history, cands, decision,
                                             on_token, should_stop)
        if retrieval is None:
            # Memory off (use_memory: false, or no memory component): the plain
            # model with the session's history, nothing planned or quoted.
            return None, lambda: self._generate(query, system_base, history, [], decision,
                                                on_token, should_stop, plan="general")
        said = compose.statements(history)
        records = [compose.record_of(c) for c in cands]
        vocab = support.Vocabulary(dict(retrieval.df), retrieval.n_docs)
        session = self._session_records(query, said)
        acfg = self.cfg.answer
        plan = policy.plan(query, records, vocab, session,
                           known_names=capitalised_names([r.text for r in records]),
                           min_cosine=acfg.min_cosine, min_cover=acfg.min_cover)
        if plan.action == "decline":
            if on_token:
                on_token(policy.DECLINE)
            return Answer(policy.DECLINE, "declined", plan="decline"), none
        if plan.action == "general":
            return None, lambda: self._generate(query, system_base, history, [], decision,
                                                on_token, should_stop, plan="general")
        by_id = {c.id: c for c in cands}
        chosen = list(plan.records[:acfg.max_records])
        sources = [by_id[r.id] for r in chosen if r.id in by_id]
        if compose.should_quote(plan, decision.mode, acfg.quote_max_words):
            return self._quote(chosen[0], by_id, on_token, fallback=False), none

        def grounded() -> Answer:
            ans = self._generate(query, system_base, history, chosen, decision, None,
                                 should_stop, plan="answer")
            if ans.finish_reason in ("cancelled", "timeout"):
                return ans
            text, ok = compose.accept_generated(ans.text, chosen, query)
            if not ok:
                return self._quote(chosen[0], by_id, on_token, fallback=True)
            if on_token:
                on_token(text)
            return dataclasses.replace(ans, text=text, sources=sources, grounded=True)
        return None, grounded

    def _quote(self, r: policy.Record, by_id: dict[int, Candidate],
               on_token: Callable[[str], None] | None, *, fallback: bool) -> Answer:
        text = compose.quote(r)
        if on_token:
            on_token(text)
        return Answer(text, "memory", [by_id[r.id]] if r.id in by_id else [], plan="answer",
                      fallback=fallback)

    def _session_records(self, query: str, said: list[str]) -> list[policy.Record]:
        """The user's statements earlier in this session, with their cosine to the question."""
        if not said or self.embedder is None:
            return []
        vecs = self.embedder.embed_batch(said)                   # (n, d)
        q = self.embedder.embed(query)                           # (d,)
        return compose.session_records(said, (vecs @ q).tolist())

    def _generate(self, query: str, system_base: str, history: Sequence[tuple[str, str]],
                  records: Sequence[policy.Record], decision: Any,
                  on_token: Callable[[str], None] | None, should_stop: StopCheck, *,
                  plan: str) -> Answer:
        """The model's answer, with ``records`` (best first) right before the question."""
        notes = compose.notes(records)
        kept, dropped = (fit_notes(notes, query, self.cfg.memory.context_budget_tokens,
                                   self.engine.count_tokens)
                         if notes and self.cfg.memory.context_budget_tokens > 0 else ([], []))
        # The records go in the user turn, right before the question: SmolLM2
        # answered 94 % of memory questions right this way and 79 % with the
        # same records in the system prompt.
        user = notes_turn(kept, query)
        gplan = self.engine.plan(system_base, history, user, decision.max_tokens)
        gen = self.engine.generate(gplan, temperature=decision.temperature, top_p=decision.top_p,
                                   on_token=on_token, should_stop=should_stop)
        return Answer(strip_framing(gen.text) if gen.finish_reason not in ("cancelled", "timeout")
                      else gen.text, gen.finish_reason, [], gen, [], list(dropped), plan=plan)

    def _naive(self, query: str, system_base: str, history: Sequence[tuple[str, str]],
               cands: list[Candidate], decision: Any, on_token: Callable[[str], None] | None,
               should_stop: StopCheck) -> Answer:
        """The baseline: the top records in the prompt, whatever the model says is kept."""
        used = cands[:decision.context_k]
        recs = [compose.record_of(c) for c in used]
        ans = self._generate(query, system_base, history, recs, decision, on_token, should_stop,
                             plan="naive")
        return dataclasses.replace(ans, sources=used)

    # ------------------------------------------------------------------ query

    def query(self, args: dict[str, Any], ctx: QueryContext) -> dict[str, Any]:
        """One answer; turns of one session run one at a time (each sees the one before)."""
        sid = args.get("session_id")
        if not sid:
            return self.finish(self.prepare(args, ctx))
        with self.sessions.turn(sid, ctx.should_stop):
            return self.finish(self.prepare(args, ctx))

    def prepare(self, args: dict[str, Any], ctx: QueryContext) -> "Prepared":
        """Embed, retrieve, route and plan; answered already when the plan needs no model.

        The server runs this for a query without a session on its fast lane and
        ``finish`` there too when ``needs_model`` is False; otherwise ``finish``
        runs on the generation lane. A query with a session runs both under the
        session's turn lock (``query``).
        """
        t0 = time.perf_counter()
        lat = {"embedding": 0.0, "retrieval": 0.0, "routing": 0.0, "generation": 0.0}
        icfg = self.cfg.inference
        cons = dict(args.get("constraints") or {})
        query: str = args["query"]
        sid = args.get("session_id")
        session = self.sessions.load(sid) if sid else None
        use_memory = bool(args.get("use_memory", True)) and self.cfg.memory.enabled

        t = time.perf_counter()
        qvec = (self._embed(query, ctx.embed) if (use_memory and self.memory) or self.router
                else None)
        lat["embedding"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        retrieval = self._retrieve(query, qvec, use_memory)
        lat["retrieval"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        defaults = {"max_tokens": int(cons.get("max_tokens", icfg.max_tokens)),
                    "temperature": float(cons.get("temperature", icfg.temperature)),
                    "top_p": float(cons.get("top_p", icfg.top_p))}
        x = None
        if self.router is not None and qvec is not None:
            x = self._features(query, qvec, retrieval, session.turn_index if session else 0,
                               ctx.queue_len, cons)
        decision, h_next = self._route(x, session.router_state if session else None, defaults)
        # What the caller set explicitly wins over the router's choice; the
        # router decides what the caller left open (and always the memory use).
        explicit = {k: defaults[k] for k in ("max_tokens", "temperature", "top_p") if k in cons}
        if explicit:
            decision = dataclasses.replace(decision, **explicit)
        lat["routing"] = (time.perf_counter() - t) * 1000

        system = session.system_prompt if session and session.system_prompt else icfg.system_prompt
        deadline = ctx.deadline

        def stop() -> str | None:
            reason = ctx.should_stop()
            if reason:
                return reason
            if deadline is not None and time.monotonic() >= deadline:
                return "deadline"
            return None

        t = time.perf_counter()
        ans, later = self._answer_steps(query, system, session.history if session else [],
                                        retrieval, decision, on_token=ctx.on_token,
                                        should_stop=stop)
        lat["generation"] = (time.perf_counter() - t) * 1000
        return Prepared(ctx, t0, lat, query, sid, session, use_memory, qvec, retrieval, x,
                        decision, h_next, ans, later)

    def finish(self, p: "Prepared") -> dict[str, Any]:
        """Generate when the plan needs it, then shape, log and hand off the answer."""
        ctx, lat, query, sid, session = p.ctx, p.lat, p.query, p.sid, p.session
        decision, x, retrieval = p.decision, p.x, p.retrieval
        ans = p.answer
        if ans is None:
            t = time.perf_counter()
            ans = p.later()
            lat["generation"] += (time.perf_counter() - t) * 1000
        t0 = p.t0
        gen = ans.gen
        if ans.finish_reason == "cancelled":
            raise Cancelled("the request was cancelled", request_id=ctx.request_id,
                            completion_tokens=ans.completion_tokens)
        if ans.finish_reason == "timeout":
            raise Timeout("the request ran past server.request_timeout_ms",
                          request_id=ctx.request_id, completion_tokens=ans.completion_tokens)

        quality = heuristic_quality(ans.text, ans.finish_reason, ans.completion_tokens)
        self.recent_quality = (1 - QUALITY_EMA) * self.recent_quality + QUALITY_EMA * quality
        lat["total"] = (time.perf_counter() - t0) * 1000
        routing = {"router": "fastgrnn" if self.router is not None and x is not None
                   else "disabled", **decision.to_info()}
        result: dict[str, Any] = {
            "request_id": ctx.request_id,
            "text": ans.text,
            "confidence": round(float(decision.confidence), 4) if self.router is not None
            and x is not None else None,
            "sources": [source_row(c) for c in ans.sources],
            "routing_info": routing,
            "latency_ms": {k: round(v, 2) for k, v in lat.items()},
            "usage": {"prompt_tokens": gen.prompt_tokens if gen else 0,
                      "completion_tokens": ans.completion_tokens,
                      "cached_tokens": gen.cached_tokens if gen else 0},
            "truncated": bool(gen.truncated) if gen else False,
            "finish_reason": ans.finish_reason,
            "context": {"trimmed_turns": gen.trimmed_turns if gen else 0,
                        "max_tokens_clipped": gen.max_tokens_clipped if gen else False,
                        "memory_nodes": len(ans.sources), "cut_nodes": ans.cut_ids,
                        "dropped_nodes": ans.dropped_ids, "plan": ans.plan,
                        "grounded": ans.grounded, "fallback": ans.fallback},
        }
        if retrieval is not None:
            result["context"]["retrieval_ms"] = {k: round(v, 2) for k, v in
                                                 retrieval.timings_ms.items()}
        if sid:
            result["session_id"] = sid
        self._record(ctx.request_id, sid, query, result, x)
        if sid:
            self.sessions.append(sid, ctx.request_id, query, ans.text, p.h_next)
        self._after_answer(ctx.request_id, sid, query, ans, p.qvec, quality, x, decision,
                           lat["total"] / 1000, session.turn_index if session else 0,
                           p.use_memory)
        return result

    def _after_answer(self, request_id: str, sid: str | None, query: str, ans: Answer,
                      qvec: np.ndarray | None, quality: float, x: np.ndarray | None,
                      decision: Any, latency_s: float, turn_index: int,
                      use_memory: bool) -> None:
        """Learning hand-offs; a failure here must never fail the answered request."""
        try:
            # A query that opted out of memory is not remembered either. Only
            # a grounded answer becomes a qa_pair (writeback.py checks the
            # flag); the others only count the use of the records shown.
            if (self.memory is not None and qvec is not None and use_memory
                    and ans.finish_reason not in ("memory", "declined")):
                self.memory.record_interaction(Interaction(
                    request_id=request_id, session_id=sid, query=query, answer=ans.text,
                    query_vec=qvec, used_node_ids=[c.id for c in ans.sources], quality=quality,
                    grounded=ans.grounded, naive=ans.plan == "naive"))
            if self.replay is not None and x is not None:
                self.replay.add(ReplaySample(
                    request_id=request_id, features=x, context_class=decision.context_class,
                    mode_class=decision.mode_class, temperature=decision.temperature,
                    top_p=decision.top_p, latency_s=latency_s,
                    completion_tokens=ans.completion_tokens, session_id=sid,
                    turn_index=turn_index))
        except Exception:  # noqa: BLE001
            log.exception("post-answer learning hand-off failed", extra={"request_id": request_id})

    # ------------------------------------------------------------------ exploration

    def answer_with(self, query: str, decision: Any, should_stop: StopCheck | None = None) -> Any:
        """Answer a past query under a given decision, recording nothing (idle-time explorer)."""
        t = time.monotonic()
        qvec = self._embed(query)
        retrieval = self._retrieve(query, qvec, True)
        ans = self._answer(query, self.cfg.inference.system_prompt, [], retrieval, decision,
                           on_token=None, should_stop=should_stop or (lambda: None))
        return Outcome(ans.text, ans.completion_tokens, time.monotonic() - t, ans.finish_reason)

    # ------------------------------------------------------------------ log & feedback

    def _record(self, request_id: str, sid: str | None, query: str, result: dict[str, Any],
                features: np.ndarray | None) -> None:
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
        """Store the feedback row first (the acknowledgement), then apply it (feedback.py)."""
        return self.feedback_log.submit(args, self.cfg.learning)

    def close(self) -> None:
        """Flush what is pending (writeback) before the DB closes."""
        if self.memory is not None:
            self.memory.close()


def new_request_id() -> str:
    return uuid.uuid4().hex
