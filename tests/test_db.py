"""The SQLite layer: migrations, the single write path, rollback, integrity."""

from __future__ import annotations

import threading
from typing import Any
from pathlib import Path

import pytest

from ruvllm_edge.errors import StorageError
from ruvllm_edge.memory import db as dbmod
from ruvllm_edge.memory.db import CorruptDatabase, Database


def test_migrations_are_numbered_and_recorded(tmp_path: Path) -> None:
    d = Database(tmp_path / "m.db")
    n = len(dbmod.migrations())
    assert d.version() == n == dbmod.schema_version()
    rows = d.read("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, n + 1))
    assert d.read("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert d.read("PRAGMA foreign_keys").fetchone()[0] == 1
    assert d.read("SELECT vec_version()").fetchone()[0].startswith("v")
    d.close()
    d2 = Database(tmp_path / "m.db")
    assert d2.migrate() == []           # idempotent
    d2.close()


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    good = dbmod.migrations()
    bad = good + [(len(good) + 1, "broken", "CREATE TABLE half(x); INSERT INTO nowhere VALUES(1);")]
    monkeypatch.setattr(dbmod, "migrations", lambda: bad)
    with pytest.raises(CorruptDatabase):
        Database(tmp_path / "m.db")
    monkeypatch.setattr(dbmod, "migrations", lambda: good)
    d = Database(tmp_path / "m.db")
    assert d.read("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0
    assert d.version() == len(good)
    d.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    d = Database(tmp_path / "m.db")
    with d.atomic() as c:
        c.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    d.close()
    with pytest.raises(CorruptDatabase, match="newer"):
        Database(tmp_path / "m.db")


def test_atomic_rolls_back_on_error(tmp_path: Path) -> None:
    d = Database(tmp_path / "m.db")
    with pytest.raises(RuntimeError):
        with d.atomic() as c:
            c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('a', 1, 1)")
            raise RuntimeError("boom")
    assert d.read("SELECT count(*) FROM sessions").fetchone()[0] == 0
    with d.atomic() as c:
        c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('a', 1, 1)")
        with d.atomic() as inner:  # nested: joins the outer transaction
            inner.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('b', 1, 1)")
    assert d.read("SELECT count(*) FROM sessions").fetchone()[0] == 2
    d.close()
    with pytest.raises(StorageError):
        with d.atomic():
            pass


def test_writes_from_many_threads_are_serialised(tmp_path: Path) -> None:
    d = Database(tmp_path / "m.db")

    def writer(k: int) -> None:
        for i in range(50):
            with d.atomic() as c:
                c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES (?, 1, 1)",
                          (f"{k}-{i}",))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d.read("SELECT count(*) FROM sessions").fetchone()[0] == 200
    d.close()


def test_disk_full_is_a_storage_error_and_keeps_committed_data(tmp_path: Path) -> None:
    d = Database(tmp_path / "m.db")
    with d.atomic() as c:
        c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('keep', 1, 1)")
    page = d.read("PRAGMA page_count").fetchone()[0]
    with d.atomic() as c:
        c.execute(f"PRAGMA max_page_count = {page + 2}")
    with pytest.raises(StorageError, match="full") as err:
        with d.atomic() as c:
            c.executemany("INSERT INTO sessions(id, created_at, last_used_at, system_prompt) "
                          "VALUES (?, 1, 1, ?)", [(str(i), "x" * 4000) for i in range(100)])
    assert err.value.details["reason"] == "disk_full"
    assert d.read("SELECT id FROM sessions").fetchall() == [("keep",)]
    d.close()


def test_backup_api_snapshot_is_consistent(tmp_path: Path) -> None:
    d = Database(tmp_path / "m.db")
    with d.atomic() as c:
        c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('a', 1, 1)")
    d.backup_to(tmp_path / "copy.db")
    d.close()
    copy = Database(tmp_path / "copy.db")
    assert copy.check_integrity() == "ok"
    assert copy.read("SELECT id FROM sessions").fetchall() == [("a",)]
    copy.close()


def test_fts_index_follows_inserts_updates_and_cascades(db: Any) -> None:
    """0006: the BM25 index changes in the same transaction as the nodes."""
    def add(text: str, parent: int | None = None) -> int:
        with db.atomic() as c:
            return int(c.execute(
                "INSERT INTO nodes(kind, source, text, text_hash, created_at, last_access_at, trust, "
                "parent_id) VALUES ('document', 'user', ?, ?, 0, 0, 0.8, ?)",
                (text, text, parent)).lastrowid)

    def match(q: str) -> list[int]:
        return [r[0] for r in db.read("SELECT rowid FROM nodes_fts WHERE nodes_fts MATCH ? "
                                      "ORDER BY rowid", (q,))]

    first = add("House notes")
    child = add("Tomatoes were planted in April", first)
    assert match("planting") == [child]                    # porter stemming
    with db.atomic() as c:
        c.execute("UPDATE nodes SET text = 'The shed key is red' WHERE id = ?", (child,))
    assert match("tomatoes") == [] and match("shed") == [child]
    with pytest.raises(RuntimeError):
        with db.atomic() as c:
            c.execute("UPDATE nodes SET text = 'gone' WHERE id = ?", (child,))
            raise RuntimeError("rolled back")
    assert match("shed") == [child]
    with db.atomic() as c:
        c.execute("DELETE FROM nodes WHERE id = ?", (first,))   # cascades to the child
    assert match("shed") == [] and match("house") == []
    db.read("INSERT INTO nodes_fts(nodes_fts) VALUES ('integrity-check')")
    assert db.read("SELECT count(*) FROM nodes_fts_vocab").fetchone()[0] == 0


def test_a_clean_close_skips_the_next_quick_check_once(tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "memory.db"
    db = Database(path)
    with db.atomic() as conn:
        conn.execute("CREATE TABLE t (x)")
    db.close()
    assert (tmp_path / "memory.db.clean").exists()
    checks: list[bool] = []
    real = Database.check_integrity
    monkeypatch.setattr(Database, "check_integrity",
                        lambda self, quick=False: checks.append(quick) or real(self, quick))
    Database(path)                      # clean stamp matches: no check; the stamp is used up
    assert checks == [] and not (tmp_path / "memory.db.clean").exists()
    # That open was never closed (a crash): the next open checks.
    Database(path).close()
    assert checks == [True]


def test_a_file_changed_after_a_clean_close_is_checked_and_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    db = Database(path)
    with db.atomic() as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [("y" * 500,)] * 200)
    db.close()
    assert (tmp_path / "memory.db.clean").exists()
    raw = bytearray(path.read_bytes())
    raw[4096 + 100: 4096 + 4000] = b"\xff" * 3900    # same size, a damaged page
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptDatabase):
        Database(path)
