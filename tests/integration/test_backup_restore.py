"""Backups of a serving daemon and restores from them, through the real CLI.

- A backup taken in the middle of a write burst is one consistent snapshot:
  restored on a fresh data dir it has exactly the manifest's node, edge and
  feedback counts, every write acknowledged before the backup started, and a
  daemon serves from it.
- Restore refuses while a daemon holds the data dir.
- kill -9 of a backup half way leaves the previous backup intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import MODELS_DIR, ROOT, DaemonProcess
from ruvllm_edge import backup as bk
from ruvllm_edge.memory.db import Database, connect
from faultkit import FAST, Burst

pytestmark = pytest.mark.slow


def cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def table_rows(db_path: Path) -> dict[str, Any]:
    conn = connect(db_path, readonly=True)
    try:
        return {
            "nodes": dict(conn.execute("SELECT id, text FROM nodes")),
            "edges": {tuple(r) for r in conn.execute("SELECT src, dst, kind FROM edges")},
            "feedback": {r[0]: (r[1], r[2]) for r in
                         conn.execute("SELECT id, request_id, rating FROM feedback")},
        }
    finally:
        conn.close()


@pytest.fixture(scope="module")
def bd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    base = tmp_path_factory.mktemp("backup")
    data = base / "data"
    data.mkdir()
    cfg = {**FAST, "memory": {"writeback_quality_threshold": 0.0, "writeback_flush_ms": 50}}
    dp = DaemonProcess(data, MODELS_DIR, cfg, base / "daemon.log").start()
    yield dp
    dp.close_clients()
    assert dp.stop() == 0, dp.log()


def test_backup_during_a_write_burst_restores_one_consistent_snapshot(
        bd: DaemonProcess, tmp_path: Path) -> None:
    c = bd.client()
    for i in range(10):     # notes of three lines: contains/follows edges to back up
        c.memory_add(f"Backup test document {i}\nThe blue ferry sails at {8 + i}:15.\n"
                     f"It leaves from pier {i}.")
    sid = c.new_session()
    request_ids = [c.query(f"When does the blue ferry sail, trip {i}?", sid, max_tokens=8)
                   ["request_id"] for i in range(3)]
    c.feedback(request_ids[0], rating=5)          # drains the writeback queue
    assert table_rows(bd.data_dir / "memory.db")["edges"], "no edges to back up"
    burst = Burst(bd.endpoint, request_ids)
    burst.start()
    while burst.acked() < 30:
        time.sleep(0.02)
    with burst._lock:
        acked_before = (dict(burst.nodes), dict(burst.feedback))
    target = tmp_path / "usb" / "ruvllm-edge"
    proc = cli("backup", "--to", str(target), "--data-dir", str(bd.data_dir),
               "--config", str(bd.config_path))
    with burst._lock:
        acked_during = len(burst.nodes) + len(burst.feedback) - sum(map(len, acked_before))
    time.sleep(0.3)
    burst.join()
    assert proc.returncode == 0, proc.stderr
    assert burst.failed_after_kill == 0
    manifest = json.loads(proc.stdout)
    assert manifest["path"] == str(target / "current")
    assert "backup written" in proc.stderr

    verify = cli("backup", "--verify", str(target))
    assert verify.returncode == 0, verify.stderr
    fresh = tmp_path / "restored" / "data"
    fresh.parent.mkdir()
    res = cli("restore", "--from", str(target), "--data-dir", str(fresh))
    assert res.returncode == 0, res.stderr

    restored = table_rows(fresh / "memory.db")
    live = table_rows(bd.data_dir / "memory.db")
    for table in ("nodes", "edges", "feedback"):
        assert len(restored[table]) == manifest["counts"][table], table
    # Everything acknowledged before the backup began is in it ...
    assert acked_before[0].items() <= restored["nodes"].items()
    assert acked_before[1].items() <= restored["feedback"].items()
    # ... and it is a snapshot of the live data, not a mix of two states.
    assert restored["nodes"].items() <= live["nodes"].items()
    assert restored["feedback"].items() <= live["feedback"].items()
    assert len(live["nodes"]) + len(live["feedback"]) > len(restored["nodes"]) + \
        len(restored["feedback"]), "the burst went on after the snapshot"
    assert all(src in restored["nodes"] and dst in restored["nodes"]
               for src, dst, _ in restored["edges"])

    # A daemon runs on the restored dir and serves the same memory.
    d2 = DaemonProcess(fresh, MODELS_DIR, FAST, tmp_path / "restored.log").start()
    try:
        c2 = d2.client()
        assert c2.memory_stats()["nodes"] == manifest["counts"]["nodes"]
        nid, text = next(iter(acked_before[0].items()))
        assert c2.memory_get(nid)["text"] == text
        assert c2.health()["status"] in ("healthy", "degraded")
    finally:
        d2.close_clients()
        assert d2.stop() == 0, d2.log()
    print(f"\nbackup during burst: {acked_during} writes acknowledged while it ran; snapshot "
          f"{manifest['counts']['nodes']} nodes, {manifest['counts']['edges']} edges, "
          f"{manifest['counts']['feedback']} feedback in {manifest.get('duration_s')} s")


def test_restore_is_refused_while_the_daemon_runs(bd: DaemonProcess, tmp_path: Path) -> None:
    target = tmp_path / "bk"
    assert cli("backup", "--to", str(target), "--data-dir", str(bd.data_dir)).returncode == 0
    inode = (bd.data_dir / "memory.db").stat().st_ino
    res = cli("restore", "--from", str(target), "--data-dir", str(bd.data_dir))
    assert res.returncode == 1
    assert "daemon is running" in res.stderr and "stop it first" in res.stderr
    assert (bd.data_dir / "memory.db").stat().st_ino == inode
    assert not list(bd.data_dir.parent.glob("*.prev-*"))
    assert not list(bd.data_dir.parent.glob(".data.restore-*"))
    assert bd.client().health()["status"] in ("healthy", "degraded")


def test_the_backup_op_saves_the_router_first(bd: DaemonProcess, tmp_path: Path) -> None:
    router = bd.data_dir / "router.npz"
    router.unlink()                       # only the daemon's save can bring it back
    res = bd.client().backup(str(tmp_path / "op-backup"))
    assert router.is_file(), "the daemon did not save its router before the snapshot"
    assert "router.npz" in res["files"] and res["path"] == str(tmp_path / "op-backup" / "current")
    assert bk.verify_backup(tmp_path / "op-backup")["ok"]
    assert (tmp_path / "op-backup" / "current" / "router.npz").read_bytes() == router.read_bytes()


def test_kill9_half_way_through_a_backup_keeps_the_previous_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = Database(data / "memory.db")
    with db.atomic() as c:
        c.executemany("INSERT INTO sessions(id, created_at, last_used_at, system_prompt) "
                      "VALUES (?, 0, 0, ?)", [(f"s{i}", "p" * 4000) for i in range(15_000)])
    target = tmp_path / "bk"
    first = bk.create_backup(db, data, None, target, keep_last=3)
    db.close()
    before = {p.name: p.stat().st_mtime_ns for p in (target / "current").iterdir()}

    proc = subprocess.Popen([sys.executable, "-m", "ruvllm_edge.cli", "backup", "--to", str(target),
                             "--data-dir", str(data)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(target.glob(".incoming-*")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the backup finished before it could be killed"
    assert list(target.glob(".incoming-*")), "killed outside the window being tested"
    assert {p.name: p.stat().st_mtime_ns for p in (target / "current").iterdir()} == before
    assert bk.verify_backup(target)["created_at"] == first["created_at"]

    again = cli("backup", "--to", str(target), "--data-dir", str(data))
    assert again.returncode == 0, again.stderr
    assert not list(target.glob(".incoming-*"))
    assert os.listdir(target / "previous") == [first["stamp"]]
    assert bk.verify_backup(target)["counts"]["sessions"] == 15_000
