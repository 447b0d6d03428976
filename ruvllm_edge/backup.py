"""Backups: consistent snapshots of the data dir, their verification and restore.

Why this layout (``TARGET`` is the backup directory, e.g. a USB stick)::

    TARGET/current/{memory.db, router.npz, config.toml, manifest.json}
    TARGET/previous/<UTC stamp>/{same names}      # older backups, newest kept
    TARGET/.incoming-<stamp>/                     # being written; never read

- ``current/`` always holds the newest complete backup under the same file
  names, so ``rsync TARGET/current/ host:dir/`` sends only the changed blocks:
  SQLite's backup API keeps the page layout of the live file, so an unchanged
  page lands at the same offset in the next snapshot.
- A new backup is written and verified in ``.incoming-*`` first; only then is
  the old ``current`` renamed into ``previous/`` and the new one renamed to
  ``current``. Both are renames inside one directory, so a crash or a pulled
  USB stick leaves either the old or the new backup, never a torn one.
- ``previous/`` is pruned to ``keep_last - 1`` snapshots (``current`` is the
  last one). No symlinks or hard links: FAT/exFAT sticks support neither.

Restore verifies everything before it touches the data dir, stages the files
in a sibling directory and swaps with two renames; the old data dir stays as
``<data_dir>.prev-<stamp>``. Any failure leaves the data dir as it was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlean as sqlite3

from . import __version__, fsutil
from .errors import BadRequest, RuvError
from .memory.db import DB_NAME, Database, migrations, schema_version
from .models import sha256_file

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
CURRENT = "current"
PREVIOUS = "previous"
ROUTER_NAME = "router.npz"          # components.ROUTER_FILE; kept here to stay import-light
CONFIG_NAME = "config.toml"
LOCK_NAME = ".lock"                 # in the backup target: one writer at a time
DATA_LOCK_NAME = "ruvllm-edge.lock"  # server.LOCK_NAME: held by a running daemon
CARRY_OVER = ("backups",)           # data-dir entries that are not restored state
RESTORED_CONFIG_NAME = "config-from-backup.toml"
# Tables counted into the manifest (the ones the tests and operators compare).
COUNTED = ("nodes", "edges", "feedback", "requests", "sessions", "turns", "replay")


class BackupError(RuvError):
    """A backup could not be written or does not verify; nothing was replaced."""

    code = "internal"

    def __init__(self, message: str, problems: list[str] | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.problems = problems or [message]


class RestoreRefused(BackupError):
    """Restore checked something and said no; the data dir was not touched."""


# --------------------------------------------------------------------------- helpers


def _stamp(t: float) -> str:
    """Sortable, FAT-safe UTC stamp with microseconds (two backups a second apart differ)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds")


def _fsync_dir(path: Path) -> None:
    """Make renames durable; some file systems (vfat) cannot fsync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _copy_file(src: Path, dst: Path) -> None:
    """A private (0600), synced copy: a backup holds the user's notes."""
    with open(src, "rb") as fin, fsutil.atomic_writer(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    fsutil.atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _private_dir(path: Path) -> None:
    """A new directory only its owner can read (on FAT the mount options decide)."""
    path.mkdir(mode=fsutil.DIR_MODE)


def _private_file(path: Path) -> None:
    """Create ``path`` empty and 0600, so SQLite (which keeps an existing file's mode and
    gives its journal the same) never writes the snapshot world-readable."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, fsutil.FILE_MODE))


def _uri(path: Path, query: str) -> str:
    """A file: URI with the path percent-encoded ('?', '#', '%' or spaces in a mount point)."""
    return f"{Path(path).absolute().as_uri()}?{query}"


def _open_copy(path: Path) -> sqlite3.Connection:
    """Read-only and immutable: checking a backup must never change its bytes."""
    return sqlite3.connect(_uri(path, "mode=ro&immutable=1"), uri=True)


def db_facts(path: Path) -> dict[str, Any]:
    """Schema version, migration names and row counts of a (copied) database file."""
    conn = _open_copy(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        applied: list[tuple[int, str]] = []
        if "schema_migrations" in tables:
            applied = [(int(v), str(n)) for v, n in
                       conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")]
        counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                  for t in COUNTED if t in tables}
    finally:
        conn.close()
    return {"schema_version": max((v for v, _ in applied), default=0),
            "migrations": [f"{v:04d}_{n}" for v, n in applied], "counts": counts}


def integrity_check(path: Path) -> str:
    """Full ``PRAGMA integrity_check`` of a copy; 'ok' or the first problems."""
    conn = _open_copy(path)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database: {exc}"
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:5])


def package_migrations() -> list[str]:
    return [f"{v:04d}_{n}" for v, n, _ in migrations()]


@contextmanager
def _flock(path: Path, what: str) -> Iterator[int]:
    """Exclusive non-blocking lock on ``path``; BackupError if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, fsutil.FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise BackupError(what) from None
            raise
        yield fd
    finally:
        os.close(fd)


def daemon_holds_lock(data_dir: Path) -> bool:
    """True if a daemon (any process) holds the data dir's lock right now."""
    lock = Path(data_dir) / DATA_LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)   # closing drops our probe lock
    return False


# --------------------------------------------------------------------------- create


def _snapshot_db(db: Database | Path, dst: Path) -> None:
    """The online backup API on a live Database, or a read-only open of a file."""
    _private_file(dst)
    if isinstance(db, Database):
        db.backup_to(dst)
        return
    src_path = Path(db)
    if not src_path.is_file():
        raise BackupError(f"no database at {src_path}; nothing to back up")
    try:  # read-write so a WAL left by a crash is recovered; read-only if we may not write
        src = sqlite3.connect(str(src_path), timeout=30.0)
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        src = sqlite3.connect(_uri(src_path, "mode=ro"), uri=True, timeout=30.0)
    out = sqlite3.connect(str(dst))
    try:
        src.backup(out, pages=-1)
    finally:
        out.close()
        src.close()


def _describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_file(folder / n), "size_bytes": (folder / n).stat().st_size}
            for n in names}


def _prune(previous: Path, keep: int) -> list[str]:
    """Delete the oldest snapshots in previous/ beyond ``keep``; names sort by time."""
    if not previous.is_dir():
        return []
    snaps = sorted(p for p in previous.iterdir() if p.is_dir())
    doomed = snaps[:max(0, len(snaps) - keep)]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in doomed]


def create_backup(db: Database | Path, data_dir: Path, config_path: str | None, target: Path,
                  keep_last: int, before: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write a verified backup into ``target/current`` and return its manifest.

    ``db`` is the daemon's open Database (online backup API, consistent while
    it serves) or the path of a database file nobody is serving. ``before``
    runs first: the daemon saves its router there so the copy matches memory.
    The returned dict is the manifest plus ``path`` and ``pruned``.
    """
    if keep_last < 1:
        raise BadRequest(f"keep_last must be at least 1, got {keep_last}")
    target = Path(target).expanduser()
    if not target.is_absolute():
        raise BadRequest(f"backup target must be an absolute path, got {str(target)!r}")
    data_dir = Path(data_dir)
    t0 = time.time()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_dir():
            _private_dir(target)
    except OSError as exc:
        raise BackupError(f"cannot create backup directory {target}: {exc}") from None
    with _flock(target / LOCK_NAME, f"another backup is being written to {target}"):
        for stale in target.glob(".incoming-*"):
            shutil.rmtree(stale, ignore_errors=True)
        stamp = _stamp(t0)
        staging = target / f".incoming-{stamp}"
        try:
            _private_dir(staging)
            if before is not None:
                before()
            _snapshot_db(db, staging / DB_NAME)
            _fsync_file(staging / DB_NAME)
            names = [DB_NAME]
            router = data_dir / ROUTER_NAME
            if router.is_file():
                _copy_file(router, staging / ROUTER_NAME)
                names.append(ROUTER_NAME)
            if config_path and Path(config_path).is_file():
                _copy_file(Path(config_path), staging / CONFIG_NAME)
                names.append(CONFIG_NAME)
            facts = db_facts(staging / DB_NAME)
            manifest: dict[str, Any] = {
                "format": FORMAT, "kind": "ruvllm-edge-backup", "stamp": stamp,
                "created_at": _iso(t0), "created_at_epoch": round(t0, 6),
                "package_version": __version__, "package_schema_version": schema_version(),
                "schema_version": facts["schema_version"], "migrations": facts["migrations"],
                "counts": facts["counts"],
                "source": {"host": socket.gethostname(), "data_dir": str(data_dir.resolve()),
                           "config_path": config_path or None},
                "files": _describe_files(staging, names),
            }
            _write_json(staging / MANIFEST, manifest)
            _fsync_dir(staging)
            verify_backup(staging)
            current, previous = target / CURRENT, target / PREVIOUS
            if current.exists():
                if not previous.is_dir():
                    _private_dir(previous)
                old = _read_manifest(current, strict=False)
                name = str(old.get("stamp") or _stamp(current.stat().st_mtime))
                dest = previous / name
                n = 1
                while dest.exists():
                    dest = previous / f"{name}-{n}"
                    n += 1
                os.rename(current, dest)
            os.rename(staging, current)
            _fsync_dir(target)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, RuvError):
                raise
            if isinstance(exc, (OSError, sqlite3.Error)):
                reason = "disk_full" if getattr(exc, "errno", None) == errno.ENOSPC \
                    or "full" in str(exc).lower() else "io"
                raise BackupError(f"backup to {target} failed, the previous backup is kept: {exc}",
                                  reason=reason) from exc
            raise
        pruned = _prune(target / PREVIOUS, keep_last - 1)
    manifest["duration_s"] = round(time.time() - t0, 3)
    log.info("backup written", extra={"target": str(target), "stamp": stamp,
                                      "bytes": sum(f["size_bytes"] for f in manifest["files"].values()),
                                      "s": manifest["duration_s"], "pruned": len(pruned)})
    return {**manifest, "path": str(target / CURRENT), "pruned": pruned}


# --------------------------------------------------------------------------- verify


def _read_manifest(folder: Path, strict: bool = True) -> dict[str, Any]:
    try:
        obj = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if not strict:
            return {}
        raise BackupError(f"cannot read {folder / MANIFEST}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("kind") != "ruvllm-edge-backup":
        if not strict:
            return {}
        raise BackupError(f"{folder / MANIFEST} is not a ruvllm-edge backup manifest")
    return obj


def resolve_backup_dir(path: Path) -> Path:
    """DIR itself if it holds a manifest, else DIR/current; a clear error otherwise."""
    path = Path(path).expanduser()
    if (path / MANIFEST).is_file():
        return path
    if (path / CURRENT / MANIFEST).is_file():
        return path / CURRENT
    snaps = sorted(p.name for p in (path / PREVIOUS).glob("*") if (p / MANIFEST).is_file())
    hint = (f"; older snapshots are in {path / PREVIOUS}: {', '.join(snaps[-3:])}" if snaps else "")
    raise BackupError(f"no backup found in {path} (no {MANIFEST} there or in {CURRENT}/){hint}")


def verify_backup(path: Path) -> dict[str, Any]:
    """Checksums and sizes of every file, then ``PRAGMA integrity_check`` on the copy.

    Returns a summary; raises BackupError listing every problem found.
    """
    folder = resolve_backup_dir(Path(path))
    manifest = _read_manifest(folder)
    problems: list[str] = []
    if manifest.get("format") != FORMAT:
        problems.append(f"manifest format {manifest.get('format')!r} is not {FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or DB_NAME not in files:
        raise BackupError(f"{folder / MANIFEST} lists no {DB_NAME}")
    for name, meta in sorted(files.items()):
        f = folder / name
        if Path(name).name != name:
            problems.append(f"{name}: not a plain file name")
            continue
        if not f.is_file():
            problems.append(f"{name}: missing")
            continue
        size = f.stat().st_size
        if size != meta.get("size_bytes"):
            problems.append(f"{name}: size {size} bytes, manifest says {meta.get('size_bytes')}")
            continue
        got = sha256_file(f)
        if got != meta.get("sha256"):
            problems.append(f"{name}: sha256 {got} does not match the manifest's {meta.get('sha256')}")
    integrity = "not checked"
    facts: dict[str, Any] = {}
    if not any(p.startswith(f"{DB_NAME}:") for p in problems):
        integrity = integrity_check(folder / DB_NAME)
        if integrity != "ok":
            problems.append(f"{DB_NAME}: integrity_check failed: {integrity}")
        else:
            facts = db_facts(folder / DB_NAME)
            if facts["schema_version"] != manifest.get("schema_version"):
                problems.append(f"{DB_NAME}: schema version {facts['schema_version']} does not match "
                                f"the manifest's {manifest.get('schema_version')}")
    if problems:
        raise BackupError(f"backup {folder} failed verification: " + "; ".join(problems),
                          problems=problems, path=str(folder))
    return {"ok": True, "path": str(folder), "created_at": manifest.get("created_at"),
            "package_version": manifest.get("package_version"),
            "schema_version": facts["schema_version"], "migrations": facts["migrations"],
            "counts": facts["counts"], "integrity": integrity,
            "files": {n: m["size_bytes"] for n, m in files.items()}}


# --------------------------------------------------------------------------- restore


def check_schema(backup_migrations: list[str]) -> str | None:
    """None if this package can run the backup's schema; else why not.

    Migrations are append-only, so an older backup is a prefix of ours and is
    migrated at the next start. A newer or diverging one is refused.
    """
    ours = package_migrations()
    if len(backup_migrations) > len(ours):
        return (f"the backup has schema version {len(backup_migrations)}, newer than this "
                f"ruvllm-edge's {len(ours)} (package {__version__}); upgrade ruvllm-edge first, "
                "then restore again")
    for theirs, mine in zip(backup_migrations, ours):
        if theirs != mine:
            return (f"the backup's schema does not match this ruvllm-edge: migration {theirs} in the "
                    f"backup is {mine} here; restore it with the ruvllm-edge version that wrote it "
                    "(see package_version in its manifest.json)")
    return None


def _restored_name(name: str) -> str:
    """The config is not part of the data dir: it lands beside the data for a manual diff."""
    return RESTORED_CONFIG_NAME if name == CONFIG_NAME else name


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for n in dirnames + filenames:
            os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


def restore_backup(src: Path, data_dir: Path, *, keep_previous: bool = True) -> dict[str, Any]:
    """Replace ``data_dir`` with a verified backup, atomically; refuse loudly otherwise.

    Order: verify the backup (checksums, integrity, schema) -> take the data
    dir's lock (a running daemon holds it) -> stage the files in a sibling
    directory and re-check their checksums -> rename the data dir to
    ``<data_dir>.prev-<stamp>`` and the staging dir to ``data_dir``. Until the
    last rename nothing in ``data_dir`` has changed; if that rename fails the
    first one is undone.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    summary = verify_backup(Path(src))
    folder = Path(summary["path"])
    manifest = _read_manifest(folder)
    why = check_schema(summary["migrations"])
    if why:
        raise RestoreRefused(f"restore refused: {why}")
    parent = data_dir.parent
    if not parent.is_dir():
        raise RestoreRefused(f"restore refused: {parent} does not exist")
    need = sum(int(m["size_bytes"]) for m in manifest["files"].values())
    free = shutil.disk_usage(parent).free
    if free < need + (16 << 20):
        raise RestoreRefused(f"restore refused: {free >> 20} MB free in {parent}, the backup needs "
                             f"{(need >> 20) + 16} MB")
    stamp = _stamp(time.time())
    old_lock_fd: int | None = None
    if (data_dir / DATA_LOCK_NAME).exists():
        old_lock_fd = os.open(data_dir / DATA_LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(old_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(old_lock_fd)
            raise RestoreRefused(
                f"restore refused: a ruvllm-edge daemon is running on {data_dir}; stop it first "
                "(`systemctl stop ruvllm-edge`, or SIGTERM), then restore") from None
    staging = parent / f".{data_dir.name}.restore-{stamp}"
    prev = parent / f"{data_dir.name}.prev-{stamp}"
    new_lock_fd: int | None = None
    swapped = False
    had_old = data_dir.exists()
    if had_old and not data_dir.is_dir():
        raise RestoreRefused(f"restore refused: {data_dir} exists and is not a directory")
    try:
        _private_dir(staging)
        for name in manifest["files"]:
            _copy_file(folder / name, staging / _restored_name(name))
        for name, meta in manifest["files"].items():
            dst = staging / _restored_name(name)
            if sha256_file(dst) != meta["sha256"]:
                raise BackupError(f"restore aborted: the staged copy of {name} does not match its "
                                  "checksum (failing storage?); nothing was changed")
        new_lock_fd = os.open(staging / DATA_LOCK_NAME, os.O_RDWR | os.O_CREAT, fsutil.FILE_MODE)
        fcntl.flock(new_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.geteuid() == 0:   # keep the service user's ownership when run as root
            st = (data_dir if data_dir.exists() else parent).stat()
            _chown_tree(staging, st.st_uid, st.st_gid)
        if data_dir.exists():   # keep the data dir's mode, less anything others could read
            st = data_dir.stat()
            os.chmod(staging, st.st_mode & 0o7770)
        _fsync_dir(staging)
        if had_old:
            os.rename(data_dir, prev)
        try:
            os.rename(staging, data_dir)
        except OSError:
            if had_old:
                os.rename(prev, data_dir)
            raise
        swapped = True
        _fsync_dir(parent)
    except BaseException as exc:
        if not swapped:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, RuvError):
            raise
        if isinstance(exc, OSError):
            raise BackupError(f"restore failed, {data_dir} was not changed: {exc}") from exc
        raise
    finally:
        if new_lock_fd is not None:
            os.close(new_lock_fd)
        if old_lock_fd is not None:
            os.close(old_lock_fd)
    carried = []
    if had_old:
        for name in CARRY_OVER:
            if (prev / name).exists() and not (data_dir / name).exists():
                try:
                    os.rename(prev / name, data_dir / name)
                    carried.append(name)
                except OSError as exc:
                    log.warning("could not carry over", extra={"entry": name, "error": str(exc)})
        if not keep_previous:
            shutil.rmtree(prev, ignore_errors=True)
    result = {
        "restored_from": str(folder), "data_dir": str(data_dir),
        "previous": str(prev) if had_old and keep_previous else None,
        "backup_created_at": manifest.get("created_at"),
        "schema_version": summary["schema_version"], "package_schema_version": schema_version(),
        "counts": summary["counts"], "carried_over": carried,
        "config_copy": str(data_dir / RESTORED_CONFIG_NAME)
        if CONFIG_NAME in manifest["files"] else None,
    }
    if summary["schema_version"] < schema_version():
        result["note"] = (f"schema {summary['schema_version']} will be migrated to "
                          f"{schema_version()} when the daemon starts")
    log.info("backup restored", extra={"from": str(folder), "data_dir": str(data_dir),
                                       "previous": result["previous"]})
    return result
