"""fsutil: atomic, private file writes."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from ruvllm_edge import fsutil


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_creates_private_file_under_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "f.bin"
        fsutil.atomic_write(target, b"hello")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"hello"
    assert mode(target) == 0o600
    assert not list(tmp_path.glob(".tmp-*"))


def test_atomic_write_group_mode(tmp_path: Path) -> None:
    target = tmp_path / "g.bin"
    fsutil.atomic_write(target, "text", mode=fsutil.file_mode(group_readable=True))
    assert target.read_text() == "text"
    assert mode(target) == 0o640


def test_failed_write_keeps_old_file_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    fsutil.atomic_write(target, b"old")
    with pytest.raises(RuntimeError):
        with fsutil.atomic_writer(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".tmp-*"))


def test_concurrent_writers_never_tear(tmp_path: Path) -> None:
    """Many threads rewrite one file; every read sees one writer's whole payload."""
    target = tmp_path / "router.npz"
    payloads = [bytes([i]) * (64 * 1024 + i) for i in range(8)]
    fsutil.atomic_write(target, payloads[0])
    stop = threading.Event()
    bad: list[int] = []

    def writer(i: int) -> None:
        for _ in range(20):
            fsutil.atomic_write(target, payloads[i])

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in payloads:
                bad.append(len(data))

    r = threading.Thread(target=reader)
    r.start()
    ws = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    r.join()
    assert bad == []
    assert target.read_bytes() in payloads
    assert not list(tmp_path.glob(".tmp-*"))


def test_remove_stale_tmp_spares_fresh_files(tmp_path: Path) -> None:
    old = tmp_path / ".tmp-x.npz.abc"
    new = tmp_path / ".tmp-x.npz.def"
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    os.utime(old, (1, 1))
    assert fsutil.remove_stale_tmp(tmp_path, "x.npz") == 1
    assert not old.exists() and new.exists()


def test_make_private_dir_and_tighten_tree(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    f = d / "memory.db"
    f.write_bytes(b"x")
    os.chmod(f, 0o644)
    changed = fsutil.make_private_dir(d)
    assert mode(d) == 0o700 and changed
    changed = fsutil.tighten_tree(d)
    assert mode(f) == 0o600 and changed
    assert fsutil.tighten_tree(d) == []                 # idempotent
    fsutil.tighten_tree(d, group_readable=True)         # never widens
    assert mode(f) == 0o600


def test_private_file_creates_0600_and_narrows_an_existing_one(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        new = tmp_path / "memory.db"
        assert fsutil.private_file(new) == []
        assert mode(new) == 0o600 and new.stat().st_size == 0
        loose = tmp_path / "old.db"
        loose.write_bytes(b"data")
        os.chmod(loose, 0o644)
        changed = fsutil.private_file(loose)
        assert mode(loose) == 0o600 and loose.read_bytes() == b"data"   # content untouched
        assert changed and "0o644 -> 0o600" in changed[0]
    finally:
        os.umask(old)


def test_tighten_tree_follows_backups_down(tmp_path: Path) -> None:
    deep = tmp_path / "data" / "backups" / "current"
    deep.mkdir(parents=True)
    f = deep / "memory.db"
    f.write_bytes(b"x")
    for p in (tmp_path / "data", deep.parent, deep):
        os.chmod(p, 0o755)
    os.chmod(f, 0o644)
    changed = fsutil.tighten_tree(tmp_path / "data")
    assert len(changed) == 4
    assert mode(deep) == 0o700 and mode(f) == 0o600
