"""``session.new``, ``session.close``, ``session.history``: multi-turn sessions."""

from __future__ import annotations

from typing import Any

from ...protocol import ID, Arg
from .base import Op, OpContext


def new(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": ctx.s.sessions.new(args.get("system_prompt"))}


def close(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return ctx.s.sessions.close(args["session_id"])


def history(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return ctx.s.sessions.history(args["session_id"])


OPS = [
    Op("session.new", "aux", {"system_prompt": Arg(str, min_len=1, max_len=8192)}, new),
    Op("session.close", "aux", {"session_id": ID}, close),
    Op("session.history", "aux", {"session_id": ID}, history),
]
