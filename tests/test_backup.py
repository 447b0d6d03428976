"""Backups on real SQLite files: create, verify, prune, restore and every refusal.

No daemon here (tests/integration/test_backup_restore.py has that); the
database is a real file with our migrations, written through Database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3 as stdlib_sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from ruvllm_edge import __version__, backup as bk, cli
from ruvllm_edge.errors import BadRequest
from ruvllm_edge.memory.db import Database, schema_version

PAGE = 4096


# --------------------------------------------------------------------------- helpers


def seed(db: Database, n: int = 20, prompt_bytes: int = 100) -> None:
    """Rows in the tables the manifest counts: sessions, requests, feedback, nodes, edges."""
    with db.atomic() as c:
        base = c.execute("SELECT count(*) FROM sessions").fetchone()[0]
        for i in range(base, base + n):
            c.execute("INSERT INTO sessions(id, created_at, last_used_at, system_prompt) "
                      "VALUES (?, ?, ?, ?)", (f"s{i}", i, i, "p" * prompt_bytes))
            c.execute("INSERT INTO requests(id, session_id, created_at, query, answer) "
                      "VALUES (?, ?, ?, ?, ?)", (f"r{i}", f"s{i}", i, f"q{i}", f"a{i}"))
            c.execute("INSERT INTO feedback(request_id, rating, created_at) VALUES (?, ?, ?)",
                      (f"r{i}", 1 + i % 5, i))
            c.execute("INSERT INTO nodes(kind, text, text_hash, created_at, last_access_at, trust) "
                      "VALUES ('fact', ?, ?, ?, ?, 0.9)", (f"fact {i}", f"h{i}", i, i))
        ids = [r[0] for r in c.execute("SELECT id FROM nodes ORDER BY id")]
        c.executemany("INSERT OR IGNORE INTO edges(src, dst, kind, weight, created_at, updated_at) "
                      "VALUES (?, ?, 'same_topic', 0.5, 0, 0)", list(zip(ids, ids[1:])))


def counts(path: Path) -> dict[str, int]:
    conn = stdlib_sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("nodes", "edges", "feedback", "requests", "sessions")}
    finally:
        conn.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(path: Path) -> dict[str, str]:
    """Every file under path with its sha256: 'untouched' means this is unchanged."""
    return {str(p.relative_to(path)): sha(p) for p in sorted(path.rglob("*")) if p.is_file()}


def rewrite_manifest(folder: Path, **changes: Any) -> None:
    """Edit a manifest and re-hash the files, as a forger (or another version) would."""
    m = json.loads((folder / bk.MANIFEST).read_text())
    m.update(changes)
    for name in m["files"]:
        m["files"][name] = {"sha256": sha(folder / name), "size_bytes": (folder / name).stat().st_size}
    (folder / bk.MANIFEST).write_text(json.dumps(m))


def edit_copy(folder: Path, sql: str) -> None:
    conn = stdlib_sqlite3.connect(folder / "memory.db")
    conn.execute(sql)
    conn.commit()
    conn.close()
    for extra in ("memory.db-wal", "memory.db-shm"):
        (folder / extra).unlink(missing_ok=True)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    data = tmp_path / "data"
    db = Database(data / "memory.db")
    seed(db)
    (data / "router.npz").write_bytes(os.urandom(5000))
    conf = tmp_path / "edge.toml"
    conf.write_text("[backup]\nkeep_last = 3\n")
    yield {"data": data, "db": db, "conf": conf, "target": tmp_path / "usb" / "ruvllm"}
    db.close()


def backup(env: dict[str, Any], keep_last: int = 3, **kw: Any) -> dict[str, Any]:
    return bk.create_backup(env["db"], env["data"], str(env["conf"]), env["target"], keep_last, **kw)


# --------------------------------------------------------------------------- create


def test_manifest_describes_every_file(env: dict[str, Any]) -> None:
    m = backup(env)
    cur = env["target"] / "current"
    assert sorted(os.listdir(cur)) == ["config.toml", "manifest.json", "memory.db", "router.npz"]
    on_disk = json.loads((cur / "manifest.json").read_text())
    assert on_disk["files"] == m["files"]
    for name in ("memory.db", "router.npz", "config.toml"):
        assert m["files"][name] == {"sha256": sha(cur / name), "size_bytes": (cur / name).stat().st_size}
    assert (cur / "router.npz").read_bytes() == (env["data"] / "router.npz").read_bytes()
    assert (cur / "config.toml").read_text() == env["conf"].read_text()
    assert m["schema_version"] == schema_version() == m["package_schema_version"]
    assert m["migrations"] == bk.package_migrations()
    assert m["package_version"] == __version__
    assert m["source"]["data_dir"] == str(env["data"].resolve())
    assert m["source"]["host"]
    assert m["created_at"].startswith(m["stamp"][:4])
    assert {k: m["counts"][k] for k in counts(cur / "memory.db")} == counts(cur / "memory.db")
    assert counts(cur / "memory.db") == counts(env["data"] / "memory.db")
    assert counts(cur / "memory.db")["edges"] == 19


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def test_backups_and_restores_are_private_whatever_the_umask(env: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """The user's notes leave the device in backups: 0600 files, 0700 directories."""
    old = os.umask(0o022)
    try:
        backup(env)
        backup(env)                                          # current/ and previous/<stamp>/
        bk.create_backup(env["data"] / "memory.db", env["data"], str(env["conf"]),
                         tmp_path / "offline", 3)           # the no-daemon path
        fresh = tmp_path / "fresh" / "data"
        fresh.parent.mkdir()
        bk.restore_backup(env["target"], fresh)
    finally:
        os.umask(old)
    for root in (env["target"], tmp_path / "offline", fresh):
        got = modes(root)
        assert any(p.endswith("memory.db") for p in got), got
        for rel, mode in got.items():
            want = 0o700 if (root / rel).is_dir() else 0o600
            assert mode == want, (root / rel, oct(mode))


def test_before_runs_before_the_snapshot(env: dict[str, Any]) -> None:
    db = env["db"]

    def before() -> None:   # what the daemon does here: persist in-memory state
        with db.atomic() as c:
            c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('late', 1, 1)")

    m = backup(env, before=before)
    assert m["counts"]["sessions"] == 21
    conn = stdlib_sqlite3.connect(env["target"] / "current" / "memory.db")
    assert conn.execute("SELECT count(*) FROM sessions WHERE id = 'late'").fetchone()[0] == 1
    conn.close()


def test_keep_last_keeps_current_plus_the_newest_previous(env: dict[str, Any]) -> None:
    stamps = []
    for _ in range(5):
        seed(env["db"], n=1)
        stamps.append(backup(env, keep_last=3)["stamp"])
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    prev = sorted(os.listdir(env["target"] / "previous"))
    assert prev == stamps[2:4]
    assert json.loads((env["target"] / "current" / "manifest.json").read_text())["stamp"] == stamps[4]
    for name in prev:   # every kept snapshot is complete on its own
        assert bk.verify_backup(env["target"] / "previous" / name)["ok"]
    assert [bk.verify_backup(env["target"] / "previous" / s)["counts"]["sessions"] for s in prev] \
        == [23, 24]
    assert not list(env["target"].glob(".incoming-*"))
    m = backup(env, keep_last=1)
    assert m["pruned"] == prev + stamps[4:] and os.listdir(env["target"] / "previous") == []


def test_unchanged_pages_stay_at_the_same_offsets(env: dict[str, Any]) -> None:
    """What makes `rsync current/` cheap: a small change moves a few pages, not the file."""
    seed(env["db"], n=400, prompt_bytes=3000)
    backup(env)
    with env["db"].atomic() as c:
        c.execute("UPDATE sessions SET last_used_at = 99 WHERE id = 's7'")
    backup(env)
    old = (env["target"] / "previous").iterdir().__next__() / "memory.db"
    a, b = old.read_bytes(), (env["target"] / "current" / "memory.db").read_bytes()
    pages = len(a) // PAGE
    changed = sum(a[i:i + PAGE] != b[i:i + PAGE] for i in range(0, max(len(a), len(b)), PAGE))
    assert pages > 300
    assert 1 <= changed <= 4, (changed, pages)


def test_backup_finishes_while_a_writer_keeps_committing(env: dict[str, Any]) -> None:
    """Regression: a stepped backup restarted on every commit and never finished."""
    seed(env["db"], n=2000, prompt_bytes=4000)      # ~10 MB
    db, limit = env["db"], 20_000
    commits = [0]
    finished_at: list[int] = []

    def writer() -> None:
        while commits[0] < limit and not finished_at:
            with db.atomic() as c:
                c.execute("UPDATE sessions SET last_used_at = last_used_at + 1 WHERE id = 's1'")
            commits[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    while commits[0] < 20:
        pass
    m = backup(env)
    finished_at.append(commits[0])
    t.join()
    assert finished_at[0] < limit, "the backup only finished once the writer stopped"
    assert m["counts"]["sessions"] == 2020
    assert bk.verify_backup(env["target"])["integrity"] == "ok"


def test_a_failed_backup_keeps_the_previous_one(env: dict[str, Any]) -> None:
    backup(env)
    before = tree(env["target"] / "current")

    def broken() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(bk.BackupError, match="previous backup is kept") as err:
        backup(env, before=broken)
    assert err.value.details["reason"] == "disk_full"
    assert tree(env["target"] / "current") == before
    assert not list(env["target"].glob(".incoming-*"))


def test_one_backup_at_a_time_per_target(env: dict[str, Any]) -> None:
    env["target"].mkdir(parents=True)
    fd = os.open(env["target"] / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(bk.BackupError, match="another backup"):
            backup(env)
    finally:
        os.close(fd)
    assert backup(env)["counts"]["sessions"] == 20


def test_bad_arguments_are_refused(env: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="absolute"):
        bk.create_backup(env["db"], env["data"], None, Path("relative/dir"), 3)
    with pytest.raises(BadRequest, match="keep_last"):
        backup(env, keep_last=0)


def test_offline_backup_from_a_file_nobody_serves(env: dict[str, Any]) -> None:
    env["db"].close()
    m = bk.create_backup(env["data"] / "memory.db", env["data"], None, env["target"], 2)
    assert "config.toml" not in m["files"] and m["counts"]["feedback"] == 20
    with pytest.raises(bk.BackupError, match="no database"):
        bk.create_backup(env["data"] / "missing.db", env["data"], None, env["target"], 2)


# --------------------------------------------------------------------------- verify


def test_verify_resolves_the_target_and_current(env: dict[str, Any]) -> None:
    backup(env)
    a = bk.verify_backup(env["target"])
    b = bk.verify_backup(env["target"] / "current")
    assert a == b and a["integrity"] == "ok" and a["counts"]["nodes"] == 20
    before = tree(env["target"])
    bk.verify_backup(env["target"])
    assert tree(env["target"]) == before, "verifying must not change a byte"
    with pytest.raises(bk.BackupError, match="no backup found"):
        bk.verify_backup(env["target"].parent)


@pytest.mark.parametrize("damage, expect", [
    (lambda d: (d / "router.npz").write_bytes(b"flipped" + (d / "router.npz").read_bytes()[7:]),
     "router.npz: sha256"),
    (lambda d: (d / "memory.db").write_bytes((d / "memory.db").read_bytes()[:-PAGE]),
     "memory.db: size"),
    (lambda d: (d / "config.toml").unlink(), "config.toml: missing"),
    (lambda d: rewrite_manifest(d, schema_version=schema_version() + 1), "schema version"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "cannot read"),
])
def test_verify_names_what_is_wrong(env: dict[str, Any], damage: Any, expect: str) -> None:
    backup(env)
    damage(env["target"] / "current")
    with pytest.raises(bk.BackupError, match=expect):
        bk.verify_backup(env["target"])


def test_verify_runs_integrity_check_even_when_checksums_match(env: dict[str, Any]) -> None:
    seed(env["db"], n=300, prompt_bytes=2000)
    backup(env)
    cur = env["target"] / "current"
    raw = bytearray((cur / "memory.db").read_bytes())
    for page in (3, 4, 5):
        raw[page * PAGE + 100:page * PAGE + 400] = os.urandom(300)
    (cur / "memory.db").write_bytes(bytes(raw))
    rewrite_manifest(cur)       # checksums now match the damaged file
    with pytest.raises(bk.BackupError, match="integrity_check failed"):
        bk.verify_backup(env["target"])


def test_verify_refuses_file_names_that_leave_the_folder(env: dict[str, Any]) -> None:
    backup(env)
    cur = env["target"] / "current"
    m = json.loads((cur / "manifest.json").read_text())
    m["files"]["../escape"] = {"sha256": "0" * 64, "size_bytes": 1}
    (cur / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(bk.BackupError, match="not a plain file name"):
        bk.verify_backup(cur)


# --------------------------------------------------------------------------- restore


def test_restore_into_a_fresh_data_dir(env: dict[str, Any], tmp_path: Path) -> None:
    m = backup(env)
    fresh = tmp_path / "fresh" / "data"
    fresh.parent.mkdir()
    res = bk.restore_backup(env["target"], fresh)
    assert res["previous"] is None and res["data_dir"] == str(fresh)
    assert sha(fresh / "memory.db") == m["files"]["memory.db"]["sha256"]
    assert sha(fresh / "router.npz") == sha(env["data"] / "router.npz")
    assert (fresh / bk.RESTORED_CONFIG_NAME).read_text() == env["conf"].read_text()
    assert counts(fresh / "memory.db") == counts(env["data"] / "memory.db")
    db = Database(fresh / "memory.db")          # the daemon's own open, integrity check included
    assert db.version() == schema_version()
    db.close()
    assert not list(fresh.parent.glob(".data.restore-*"))


def test_restore_swaps_and_keeps_the_previous_data_dir(env: dict[str, Any]) -> None:
    backup(env)
    env["db"].close()
    data = env["data"]
    newer = Database(data / "memory.db")
    seed(newer, n=5)                                # newer state that the restore replaces
    newer.close()
    (data / "backups").mkdir()
    (data / "backups" / "keep-me").write_text("x")
    old = tree(data)
    res = bk.restore_backup(env["target"], data)
    prev = Path(res["previous"])
    assert prev.name.startswith("data.prev-") and prev.parent == data.parent
    assert tree(prev) == {k: v for k, v in old.items() if not k.startswith("backups")}
    assert res["carried_over"] == ["backups"] and (data / "backups" / "keep-me").read_text() == "x"
    assert counts(data / "memory.db")["sessions"] == 20
    assert counts(prev / "memory.db")["sessions"] == 25


def test_restore_can_discard_the_previous_data_dir(env: dict[str, Any]) -> None:
    backup(env)
    env["db"].close()
    res = bk.restore_backup(env["target"], env["data"], keep_previous=False)
    assert res["previous"] is None
    assert not list(env["data"].parent.glob("data.prev-*"))


def test_restore_refuses_while_a_daemon_holds_the_lock(env: dict[str, Any]) -> None:
    backup(env)
    fd = os.open(env["data"] / "ruvllm-edge.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)      # what server.py does at startup
    try:
        before = tree(env["data"])
        assert bk.daemon_holds_lock(env["data"])
        with pytest.raises(bk.RestoreRefused, match="daemon is running.*stop it first"):
            bk.restore_backup(env["target"], env["data"])
        assert tree(env["data"]) == before
    finally:
        os.close(fd)
    assert not bk.daemon_holds_lock(env["data"])


def _future_schema(folder: Path) -> None:
    edit_copy(folder, f"INSERT INTO schema_migrations VALUES ({schema_version() + 1}, 'future', 0)")
    rewrite_manifest(folder, schema_version=schema_version() + 1)


def _diverged_schema(folder: Path) -> None:
    edit_copy(folder, f"UPDATE schema_migrations SET name = 'other' WHERE version = {schema_version()}")
    rewrite_manifest(folder)


@pytest.mark.parametrize("damage, expect", [
    (_future_schema, "newer than this ruvllm-edge"),
    (_diverged_schema, "does not match this ruvllm-edge"),
    (lambda d: (d / "memory.db").write_bytes(b"x" + (d / "memory.db").read_bytes()[1:]),
     "sha256"),
])
def test_restore_refuses_and_leaves_the_data_dir_untouched(env: dict[str, Any], damage: Any,
                                                           expect: str) -> None:
    backup(env)
    env["db"].close()
    damage(env["target"] / "current")
    before = tree(env["data"])
    with pytest.raises(bk.BackupError, match=expect):
        bk.restore_backup(env["target"], env["data"])
    assert tree(env["data"]) == before
    assert sorted(p.name for p in env["data"].parent.iterdir()) == ["data", "edge.toml", "usb"]


def test_an_older_schema_is_restored_and_migrated_at_start(env: dict[str, Any],
                                                           tmp_path: Path) -> None:
    backup(env)
    cur = env["target"] / "current"
    edit_copy(cur, f"DELETE FROM schema_migrations WHERE version = {schema_version()}")
    rewrite_manifest(cur, schema_version=schema_version() - 1)
    res = bk.restore_backup(env["target"], tmp_path / "older")
    assert "will be migrated" in res["note"]


def test_a_failing_swap_puts_the_old_data_dir_back(env: dict[str, Any], monkeypatch) -> None:
    backup(env)
    env["db"].close()
    before = tree(env["data"])
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".data.restore-"):
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(bk.os, "rename", rename)
    with pytest.raises(bk.BackupError, match="was not changed"):
        bk.restore_backup(env["target"], env["data"])
    monkeypatch.undo()
    assert tree(env["data"]) == before
    assert sorted(p.name for p in env["data"].parent.iterdir()) == ["data", "edge.toml", "usb"]


# --------------------------------------------------------------------------- CLI


def test_cli_backup_verify_restore_without_a_daemon(env: dict[str, Any], tmp_path: Path,
                                                    monkeypatch, capsys) -> None:
    monkeypatch.delenv("RUVLLM_EDGE_DATA", raising=False)
    env["db"].close()
    data, target = str(env["data"]), str(env["target"])
    assert cli.main(["backup", "--to", target, "--data-dir", data, "--config", str(env["conf"])]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["counts"]["feedback"] == 20 and "via a local copy" in out.err
    assert cli.main(["backup", "--verify", target]) == 0
    assert "verified" in capsys.readouterr().err

    assert cli.main(["restore", "--from", target]) == 2
    assert "restore needs --data-dir" in capsys.readouterr().err
    fresh = tmp_path / "restored"
    assert cli.main(["restore", "--from", target, "--data-dir", str(fresh)]) == 0
    assert counts(fresh / "memory.db") == counts(env["data"] / "memory.db")

    router = env["target"] / "current" / "router.npz"
    router.write_bytes(router.read_bytes()[::-1])
    capsys.readouterr()
    assert cli.main(["backup", "--verify", target]) == 1
    assert "router.npz: sha256" in capsys.readouterr().err
    assert cli.main(["restore", "--from", target, "--data-dir", str(fresh)]) == 1
    assert "router.npz" in capsys.readouterr().err


def test_cli_backup_defaults_to_the_configured_dir(env: dict[str, Any], tmp_path: Path,
                                                   capsys) -> None:
    env["db"].close()
    conf = tmp_path / "c.toml"
    conf.write_text(f'[backup]\ndir = "{tmp_path / "nightly"}"\nkeep_last = 2\n')
    for _ in range(3):
        assert cli.main(["backup", "--data-dir", str(env["data"]), "--config", str(conf)]) == 0
    assert len(os.listdir(tmp_path / "nightly" / "previous")) == 1
    capsys.readouterr()
    shutil.rmtree(env["data"])
    assert cli.main(["backup", "--data-dir", str(env["data"]), "--config", str(conf)]) == 1
    assert "no database" in capsys.readouterr().err
