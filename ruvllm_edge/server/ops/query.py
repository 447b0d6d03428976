"""``query``: one answer, streamed or not, with or without a session."""

from __future__ import annotations

from typing import Any

from ... import protocol
from ...errors import Cancelled
from ...pipeline import QueryContext
from ...protocol import MAX_ID_CHARS, NUM, TEXT_MAX, Arg
from .base import Op, OpContext

CONFIDENCE_EMA = 0.1   # smoothing of the ruvllm_router_confidence gauge

CONSTRAINTS = {
    "max_tokens": Arg(int, lo=1, hi=32_768),
    "temperature": Arg(NUM, lo=0.0, hi=2.0),
    "top_p": Arg(NUM, lo=0.0, hi=1.0),
    "max_latency_ms": Arg(int, lo=1, hi=3_600_000),
}

ARGS = {
    "query": Arg(str, required=True, min_len=1, max_len=TEXT_MAX),
    "session_id": Arg(str, min_len=1, max_len=MAX_ID_CHARS),
    "stream": Arg(bool, default=False),
    "use_memory": Arg(bool, default=True),
    "constraints": Arg(dict, fields=CONSTRAINTS, max_len=len(CONSTRAINTS)),
}


def starts_on(args: Any) -> str | None:
    """A query without a session is planned on the fast lane (lanes.py); one with a
    session runs whole on ``gen`` under its turn lock (sessions.py)."""
    return None if args.get("session_id") else "fast"


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    job = ctx.job
    seq = 0

    def on_token(text: str) -> None:
        nonlocal seq
        ctx.send(protocol.token_event(job.req.id, seq, text,
                                      request_id=job.request_id if seq == 0 else None))
        seq += 1

    budget = (args.get("constraints") or {}).get("max_latency_ms")
    qctx = QueryContext(request_id=job.request_id,
                        deadline=job.enqueued + budget / 1000 if budget else None,
                        on_token=on_token if args.get("stream") else None,
                        should_stop=job.should_stop,
                        queue_len=ctx.s.lanes.queues["gen"].qsize(), embed=ctx.embed)
    pipeline = ctx.s.pipeline
    if job.lane != "fast":
        result = pipeline.query(args, qctx)
        record(ctx, result)
        return result
    prep = pipeline.prepare(args, qctx)
    if job.cancel.is_set():   # cancelled while planned: cancel said "queued", so no answer
        raise Cancelled("the request was cancelled before it was answered",
                        request_id=job.request_id, completion_tokens=0)

    def finish() -> dict[str, Any]:
        result = pipeline.finish(prep)
        record(ctx, result)
        return result

    if prep.needs_model:
        ctx.move_to("gen", finish)
    return finish()


def record(ctx: OpContext, result: dict[str, Any]) -> None:
    """Token, stage-latency and router metrics of one answered query."""
    m = ctx.s.metrics
    usage = result.get("usage", {})
    m.prompt_tokens.inc(usage.get("prompt_tokens", 0))
    m.cached_prompt_tokens.inc(usage.get("cached_tokens", 0))
    m.completion_tokens.inc(usage.get("completion_tokens", 0))
    for stage, ms in result.get("latency_ms", {}).items():
        if stage != "total":
            m.stage_latency.labels(stage).observe(ms / 1000)
    if result.get("confidence") is not None:   # None: the router is off
        ctx.s.confidence_ema += CONFIDENCE_EMA * (result["confidence"] - ctx.s.confidence_ema)
        m.router_confidence.set(ctx.s.confidence_ema)
        if result["routing_info"].get("fallback"):
            m.router_fallbacks.inc()


OPS = [Op("query", "gen", ARGS, execute, new_request_id=True, starts_on=starts_on,
          embeds="query")]
