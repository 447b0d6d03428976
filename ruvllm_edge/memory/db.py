"""The one SQLite file: connection setup, migrations and the single write path.

Why this shape:
- sqlean-py ships a maintained SQLite that can load extensions on every Python
  we run on (pyenv builds cannot), and sqlite-vec is loaded into every
  connection.
- WAL lets readers (retrieval, health, stats) run while the writer commits.
  ``synchronous=NORMAL`` means a committed transaction survives a process crash
  (kill -9); a power cut can lose the last few commits but never corrupts.
- There is exactly one writer connection, serialised by a lock, and every write
  goes through ``with db.atomic() as conn:`` (BEGIN IMMEDIATE ... COMMIT), so a
  failure rolls back cleanly and no two writes interleave.
- Migrations are numbered ``.sql`` files applied in order, each in one
  transaction together with its row in ``schema_migrations``; they are
  append-only, never edited once released.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import sqlean as sqlite3
import sqlite_vec

from .. import fsutil
from ..errors import StorageError

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
DB_NAME = "memory.db"

if TYPE_CHECKING:  # sqlean-py mirrors the stdlib sqlite3 API but ships no type stubs
    from sqlite3 import Connection, Cursor
else:
    Connection = sqlite3.Connection
    Cursor = sqlite3.Cursor
DatabaseError = sqlite3.DatabaseError
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError


class CorruptDatabase(Exception):
    """The file fails SQLite's integrity check; the message names the restore command."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every bundled migration, in order."""
    out = []
    for entry in resources.files("ruvllm_edge.memory").joinpath("migrations").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    assert versions == list(range(1, len(versions) + 1)), f"migration numbers must be 1..n: {versions}"
    return out


def schema_version() -> int:
    """The schema version this package writes (the newest migration)."""
    return len(migrations())


def connect(path: str | Path, cache_mb: int = 32, readonly: bool = False) -> Connection:
    """Open a connection with sqlite-vec loaded and our pragmas set."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=30.0)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               timeout=30.0)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = {-1024 * int(cache_mb)}")
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _storage_error(exc: Exception) -> StorageError:
    msg = str(exc)
    if "full" in msg.lower():
        return StorageError(f"storage is full, nothing was written: {msg}", reason="disk_full")
    if "readonly" in msg.lower() or "read-only" in msg.lower():
        return StorageError(f"storage is read-only, nothing was written: {msg}", reason="readonly")
    return StorageError(f"storage error, nothing was written: {msg}", reason="sqlite")


CLEAN_SUFFIX = ".clean"   # beside the file: the stamp of a clean close (see _take_clean_stamp)


def _file_stamp(path: Path) -> str | None:
    """Size, mtime and inode of the file, or None while a WAL holds changes not in it."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return None
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


def _leave_clean_stamp(path: Path) -> None:
    """After the last of our connections closed: record that the file is whole as it is."""
    try:
        stamp = _file_stamp(path)
        if stamp is not None:
            fsutil.atomic_write(Path(f"{path}{CLEAN_SUFFIX}"), stamp)
    except OSError:
        pass   # no stamp: the next open checks the file, which is always safe


def _take_clean_stamp(path: Path) -> bool:
    """True when the file is exactly as a clean close left it. The stamp is used
    once: it is removed before the file is opened, so a crash from here on means
    the next open checks again."""
    marker = Path(f"{path}{CLEAN_SUFFIX}")
    try:
        stamp = marker.read_text()
        marker.unlink()
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return path.exists() and stamp == _file_stamp(path)
    except OSError:
        return False


class Database:
    """One SQLite file: one serialised writer plus per-thread readers."""

    def __init__(self, path: str | Path, cache_mb: int = 32, check: bool = True) -> None:
        self.path = Path(path)
        self.cache_mb = cache_mb
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        existed = self.path.exists() and self.path.stat().st_size > 0
        # A file this class closed cleanly, untouched since, skips the quick_check
        # (5.6 s at 1M nodes: it reads the whole file); after a crash, a restore
        # or any other writer the stamp no longer matches and the check runs.
        clean = _take_clean_stamp(self.path)
        try:
            self._writer = connect(self.path, cache_mb)
            if existed and check and not clean:
                self.check_integrity(quick=True)
            self.migrate()
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabase(
                f"the database {self.path} cannot be opened ({exc}); restore it with "
                f"`ruvllm-edge restore --from BACKUP_DIR --data-dir {self.path.parent}`") from None
        self.closed = False

    # -- integrity ---------------------------------------------------------

    def check_integrity(self, quick: bool = False) -> str:
        pragma = "quick_check" if quick else "integrity_check"
        rows = self._writer.execute(f"PRAGMA {pragma}").fetchall()
        result = "; ".join(str(r[0]) for r in rows[:5])
        if result != "ok":
            raise CorruptDatabase(
                f"the database {self.path} is corrupt ({result}); restore it with "
                f"`ruvllm-edge restore --from BACKUP_DIR --data-dir {self.path.parent}`")
        return result

    # -- migrations --------------------------------------------------------

    def version(self) -> int:
        row = self.read("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> list[int]:
        """Apply pending migrations, each in one transaction with its record."""
        w = self._writer
        w.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                  "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
        done = {r[0] for r in w.execute("SELECT version FROM schema_migrations")}
        known = migrations()
        newest = max(done, default=0)
        if newest > len(known):
            raise CorruptDatabase(
                f"the database {self.path} has schema version {newest}, newer than this "
                f"package's {len(known)}; upgrade ruvllm-edge or restore an older backup")
        applied = []
        for version, name, sql in known:
            if version in done:
                continue
            with self._lock:
                script = (f"BEGIN IMMEDIATE;\n{sql}\n;INSERT INTO schema_migrations"
                          f"(version, name, applied_at) VALUES ({version}, '{name}', {time.time()});"
                          "\nCOMMIT;")
                try:
                    w.executescript(script)
                except Exception:
                    if w.in_transaction:
                        w.execute("ROLLBACK")
                    raise
            log.info("migration applied", extra={"version": version, "migration": name})
            applied.append(version)
        return applied

    # -- writes ------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[Connection]:
        """The single write path: BEGIN IMMEDIATE ... COMMIT, rolled back on error.

        Nested use on the same thread joins the outer transaction.
        """
        if self.closed:
            raise StorageError("the database is closed", reason="closed")
        with self._lock:
            w = self._writer
            if w.in_transaction:  # re-entrant: part of the caller's transaction
                yield w
                return
            try:
                w.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _storage_error(exc) from exc
            try:
                yield w
                w.execute("COMMIT")
            except BaseException as exc:
                if w.in_transaction:
                    try:
                        w.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("rollback failed")
                if isinstance(exc, sqlite3.OperationalError):
                    raise _storage_error(exc) from exc
                raise

    # -- reads -------------------------------------------------------------

    def reader(self) -> Connection:
        """This thread's read connection (WAL: sees the last committed state)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.cache_mb)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def release_reader(self) -> None:
        """Close this thread's read connection; call it when a short-lived thread ends."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._readers_lock:
            if conn in self._readers:
                self._readers.remove(conn)
        conn.close()

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        if self.closed:
            raise StorageError("the database is closed", reason="closed")
        return self.reader().execute(sql, params)

    # -- lifecycle ---------------------------------------------------------

    def checkpoint(self) -> None:
        """Fold the WAL into the file; on a full disk a StorageError, like every write."""
        with self._lock:
            try:
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:
                raise _storage_error(exc) from exc

    def backup_to(self, target: str | Path, pages_per_step: int = -1) -> None:
        """Consistent online snapshot through SQLite's backup API.

        One step (-1) by default: the copy runs inside one WAL read transaction,
        which never blocks the writer. A stepped copy is restarted by SQLite
        whenever another connection (our writer) commits between two steps, so
        under a steady write load it never finishes (seen with a 40 MB file and
        a commit every few ms).
        """
        dst = sqlite3.connect(str(target))
        try:
            src = connect(self.path, self.cache_mb)
            try:
                src.backup(dst, pages=pages_per_step, sleep=0.005)
            finally:
                src.close()
        finally:
            dst.close()

    def close(self) -> None:
        if self.closed:
            return
        with self._lock:
            self.closed = True
            with self._readers_lock:
                for c in self._readers:
                    try:
                        c.close()
                    except sqlite3.Error:
                        pass
                self._readers.clear()
            try:
                self._writer.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._writer.close()
            _leave_clean_stamp(self.path)
