"""``backup``: a consistent online backup while serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ... import fsutil
from ...errors import BadRequest, RuvError
from ...protocol import Arg
from .base import Op, OpContext


def target_of(ctx: OpContext, to: str | None) -> Path:
    """``to``, or (left out) ``backup.dir``, else ``<data_dir>/backups``: the CLI's default.

    A target the daemon cannot use is the caller's error (``bad_request`` naming
    ``args.to``), not ``internal``: a client can send any path.
    """
    if to is None:
        return Path(ctx.s.cfg.backup.dir or ctx.s.data_dir / "backups").expanduser().absolute()
    target = Path(to)
    if not target.is_absolute():
        raise BadRequest(f"args.to: must be an absolute path, got {to!r}", field="args.to")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_dir():
            target.mkdir(mode=fsutil.DIR_MODE)   # private whatever the umask (0700 & ~umask)
    except OSError as exc:
        raise BadRequest(f"args.to: cannot create the backup directory: {exc.strerror}",
                         field="args.to") from None
    return target


def execute(ctx: OpContext, args: dict[str, Any]) -> dict[str, Any]:
    """Flush and save what lives in memory first, then copy the database."""
    from ... import backup

    s = ctx.s

    def before() -> None:
        if s.components.memory is not None:
            s.components.memory.flush()
        s.components.save()

    target = target_of(ctx, args.get("to"))
    try:
        res = backup.create_backup(s.db, s.data_dir, s.cfg.source_path or None,
                                   target, s.cfg.backup.keep_last, before=before)
    except RuvError:
        s.metrics.backups.labels("error").inc()
        raise
    s.metrics.backups.labels("ok").inc()
    return res


OPS = [Op("backup", "slow", {"to": Arg(str, min_len=1, max_len=4096)}, execute)]
