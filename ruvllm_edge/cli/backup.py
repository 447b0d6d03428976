"""`ruvllm-edge backup` and `ruvllm-edge restore`.

``backup --to DIR`` asks a running daemon to write the backup (op ``backup``),
so the router it has in memory is saved first and the snapshot comes from
the daemon's own database handle. With no daemon running it copies the files
itself. ``restore`` only ever runs with the daemon stopped: it checks the
data dir's lock and refuses otherwise.

Exit codes follow the CLI's: 0 ok, 1 refused or failed (the message says why),
2 bad usage, 3 the daemon holds the data dir but does not answer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .. import backup as bk
from ..config import ENV_DATA
from ..errors import ClientError, ClientTimeout, RuvError
from ..memory.db import DB_NAME
from .common import client, load_config, print_json


def _fail(exc: RuvError) -> int:
    problems = getattr(exc, "problems", None) or [exc.message]
    if len(problems) == 1:
        print(f"ruvllm-edge: {problems[0]}", file=sys.stderr)
    else:
        print(f"ruvllm-edge: {exc.message.split(':', 1)[0]}:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    return 1


def _summary(res: dict[str, Any], via: str) -> str:
    size = sum(f["size_bytes"] for f in res.get("files", {}).values()) / 1_048_576
    counts = ", ".join(f"{k} {v}" for k, v in res.get("counts", {}).items())
    return (f"backup written to {res.get('path')} via {via}: {size:.1f} MB, schema "
            f"{res.get('schema_version')}, {counts}")


def cmd_backup(ns: argparse.Namespace) -> int:
    cfg = load_config(ns)
    if ns.verify:
        try:
            res = bk.verify_backup(Path(ns.verify))
        except RuvError as exc:
            return _fail(exc)
        print_json(res)
        print(f"backup {res['path']} verified: checksums ok, integrity_check ok, schema "
              f"{res['schema_version']}", file=sys.stderr)
        return 0
    data_dir = Path(cfg.data_dir).absolute()
    target = Path(ns.to or cfg.backup.dir or data_dir / "backups").expanduser().absolute()
    keep = ns.keep_last or cfg.backup.keep_last
    if not ns.offline and bk.daemon_holds_lock(data_dir):
        try:
            with client(ns, timeout_s=max(ns.timeout, 600.0)) as c:
                res = c.backup(str(target))
            print_json(res)
            print(_summary(res, "the daemon"), file=sys.stderr)
            return 0
        except ClientTimeout as exc:
            print(f"ruvllm-edge: a daemon holds {data_dir} but did not answer ({exc.message}); "
                  "retry, or stop it and run the backup again", file=sys.stderr)
            return 3
        except ClientError as exc:
            if exc.code not in ("not_found", "unknown_op"):
                print(f"ruvllm-edge: backup failed: {exc.code}: {exc.message}", file=sys.stderr)
                return 1
            # An older daemon without the op: SQLite's backup API is safe next to it.
            print("ruvllm-edge: the daemon has no backup op; copying with SQLite's online "
                  "backup API instead", file=sys.stderr)
    db_path = data_dir / DB_NAME
    if not db_path.is_file():
        print(f"ruvllm-edge: no database at {db_path}; is --data-dir (or {ENV_DATA}) right?",
              file=sys.stderr)
        return 1
    try:
        res = bk.create_backup(db_path, data_dir, cfg.source_path or None, target, keep)
    except RuvError as exc:
        return _fail(exc)
    print_json(res)
    print(_summary(res, "a local copy"), file=sys.stderr)
    return 0


def cmd_restore(ns: argparse.Namespace) -> int:
    # No guessing here: restoring into ./data by accident would hide the real data dir.
    if not (ns.data_dir or os.environ.get(ENV_DATA)):
        print(f"ruvllm-edge: restore needs --data-dir (or {ENV_DATA}): the daemon's data dir, "
              "e.g. /var/lib/ruvllm-edge/data under systemd", file=sys.stderr)
        return 2
    cfg = load_config(ns)
    data_dir = Path(cfg.data_dir).absolute()
    try:
        res = bk.restore_backup(Path(ns.source), data_dir, keep_previous=not ns.discard_previous)
    except RuvError as exc:
        return _fail(exc)
    print_json(res)
    lines = [f"restored {res['restored_from']} into {data_dir}"]
    if res.get("previous"):
        lines.append(f"the previous data dir is kept as {res['previous']}; delete it when the "
                     "daemon runs well")
    if res.get("note"):
        lines.append(res["note"])
    if res.get("config_copy"):
        lines.append(f"the backup's config is in {res['config_copy']} (compare it with yours)")
    lines.append("start the daemon again: `systemctl start ruvllm-edge` or `ruvllm-edge serve`")
    print("\n".join(lines), file=sys.stderr)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("backup", parents=[common],
                       help="back up memory, router and config (works while the daemon serves)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--to", metavar="DIR",
                   help="backup directory (default: backup.dir, else <data_dir>/backups)")
    g.add_argument("--verify", metavar="DIR", help="check a backup's checksums and integrity")
    s.add_argument("--keep-last", type=int, metavar="N",
                   help="snapshots to keep when copying locally (default: backup.keep_last)")
    s.add_argument("--offline", action="store_true",
                   help="copy the files here even if a daemon is running")
    s.set_defaults(func=cmd_backup)

    r = sub.add_parser("restore", parents=[common],
                       help="replace the data dir with a backup (the daemon must be stopped)")
    r.add_argument("--from", dest="source", required=True, metavar="DIR",
                   help="a backup directory (DIR/current is used if DIR holds several)")
    r.add_argument("--discard-previous", action="store_true",
                   help="delete the old data dir after success (default: keep <data_dir>.prev-*)")
    r.set_defaults(func=cmd_restore)
