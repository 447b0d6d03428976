"""``feedback``: a rating and/or correction of an answered request."""

from __future__ import annotations

from typing import Any

from ...protocol import ID, TEXT_MAX, Arg
from .base import Op, OpContext

ARGS = {
    "request_id": ID,
    "rating": Arg(int, lo=1, hi=5),
    "correction": Arg(str, min_len=1, max_len=TEXT_MAX),
}


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return ctx.s.pipeline.feedback(args)


OPS = [Op("feedback", "aux", ARGS, execute)]
