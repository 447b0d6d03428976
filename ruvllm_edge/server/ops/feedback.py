"""``feedback``: a rating and/or correction of an answered request."""

from __future__ import annotations

from typing import Any

from ...protocol import ID, TEXT_MAX, Arg
from ..services import Services
from .base import Op, OpContext

ARGS = {
    "request_id": ID,
    "rating": Arg(int, lo=1, hi=5),
    "correction": Arg(str, min_len=1, max_len=TEXT_MAX),
}


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    return ctx.s.pipeline.feedback(args)


def apply_pending(s: Services) -> None:
    """A periodic task on the aux lane (at start-up, then every minute): the outbox.

    Stored feedback that a crash or an error left unapplied is applied now;
    on the aux lane it never runs at the same time as a feedback op.
    """
    s.pipeline.feedback_log.apply_pending(s.cfg.learning)


OPS = [Op("feedback", "aux", ARGS, execute)]
