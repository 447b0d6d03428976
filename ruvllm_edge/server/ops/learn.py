"""``learn``: run the idle-time learning jobs now."""

from __future__ import annotations

from typing import Any

from ...errors import NotFound
from ...protocol import Arg
from .base import Op, OpContext


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    if ctx.s.scheduler is None:
        raise NotFound("learning is disabled (learning.enabled = false or no router)")
    return {"jobs": ctx.s.scheduler.run_now(wait=bool(args.get("wait")))}


OPS = [Op("learn", "slow", {"wait": Arg(bool, default=False)}, execute)]
