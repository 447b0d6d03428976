"""``backup``: a consistent online backup while serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import RuvError
from ...protocol import Arg
from .base import Op, OpContext


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Flush and save what lives in memory first, then copy the database."""
    from ... import backup

    s = ctx.s

    def before() -> None:
        if s.components.memory is not None:
            s.components.memory.flush()
        s.components.save()

    try:
        res = backup.create_backup(s.db, s.data_dir, s.cfg.source_path or None,
                                   Path(args["to"]), s.cfg.backup.keep_last, before=before)
    except RuvError:
        s.metrics.backups.labels("error").inc()
        raise
    s.metrics.backups.labels("ok").inc()
    return res


OPS = [Op("backup", "slow", {"to": Arg(str, min_len=1, max_len=4096)}, execute)]
