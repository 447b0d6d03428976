"""Faults of the machine under a real daemon: a full disk and a missing or corrupt model.

Full disk, two honest ways:
- a 24 MB tmpfs as the data dir (needs mount rights: root, as in CI; skipped
  otherwise);
- RLIMIT_FSIZE lowered on the running daemon with prlimit (works everywhere;
  CPython ignores SIGXFSZ, so writes past the limit fail with EFBIG instead
  of killing the process).
Either way writes get a clear storage error, reads keep working, nothing
acknowledged is lost, the file passes integrity_check and writes work again
once there is room.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from conftest import MODELS_DIR, DaemonProcess
from ruvllm_edge import models as catalogue
from ruvllm_edge.errors import ClientError
from ruvllm_edge.memory.db import connect
from faultkit import FAST

pytestmark = pytest.mark.slow


_STARTED: list[DaemonProcess] = []


def _stop_all() -> None:
    while _STARTED:
        d = _STARTED.pop()
        d.close_clients()
        try:
            d.stop()
        except RuntimeError:
            pass


@pytest.fixture(autouse=True)
def stop_daemons() -> Iterator[None]:
    """Every daemon a test here started is stopped, whatever the test did."""
    yield
    _stop_all()


def start(data: Path, log: Path,
          config: dict[str, dict[str, Any]] | None = None, models: Path = MODELS_DIR
          ) -> DaemonProcess:
    data.mkdir(parents=True, exist_ok=True)
    cfg = {k: dict(v) for k, v in FAST.items()}
    for section, values in (config or {}).items():
        cfg.setdefault(section, {}).update(values)
    d = DaemonProcess(data, models, cfg, log)
    _STARTED.append(d)
    return d.start()


def integrity(db: Path) -> str:
    conn = connect(db, readonly=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def fill_until_refused(c: Any, acked: dict[int, str], limit: int = 400) -> ClientError:
    """memory.add until the daemon refuses; returns that error. Acks go into ``acked``."""
    for i in range(limit):
        text = f"disk fill record {i} {uuid.uuid4().hex} " + "lorem ipsum dolor sit amet " * 40
        try:
            ids = c.memory_add(text)["ids"]
        except ClientError as exc:
            return exc
        acked[ids[0]] = c.memory_get(ids[0])["text"]
    raise AssertionError(f"{limit} writes succeeded on a full disk")


def assert_storage_error(err: ClientError) -> None:
    assert err.code == "internal", err
    assert "nothing was written" in err.message and "storage" in err.message, err.message


# --------------------------------------------------------------------------- full disk


def _can_mount(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                          capture_output=True)
    if proc.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    if os.geteuid() != 0 or not _can_mount(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); "
                    "test_rlimit_fsize_gives_clear_errors covers the full disk instead")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        _stop_all()   # before the unmount: the daemon's files live on it
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_tmpfs_gives_clear_errors_not_corruption(small_tmpfs: Path, tmp_path: Path) -> None:
    data = small_tmpfs / "data"
    d = start(data, tmp_path / "daemon.log", {"system": {"min_free_disk_mb": 1}})
    c = d.client(timeout_s=60)
    acked: dict[int, str] = {}
    for i in range(5):
        nid = c.memory_add(f"Full disk canary {i}: the tide table is pinned by the door.")["ids"][0]
        acked[nid] = c.memory_get(nid)["text"]
    ballast = small_tmpfs / "ballast"
    with open(ballast, "wb", buffering=0) as f:   # every free block; unbuffered, so close
        # has nothing left to flush (a buffered close raised ENOSPC out of the with)
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    err = fill_until_refused(c, acked)
    assert_storage_error(err)
    assert err.details.get("reason") == "disk_full", err.details
    health = c.health()
    assert health["status"] == "degraded" and health["components"]["resources"]["status"] == "degraded"
    assert c.memory_search("where is the tide table pinned", k=3)   # reads still work
    for nid, text in acked.items():
        assert c.memory_get(nid)["text"] == text

    # Stop while the disk is still full: flushing fails, but cleanly.
    d.close_clients()
    code = d.stop(timeout_s=60)
    assert integrity(data / "memory.db") == "ok"
    ballast.unlink()
    d.start()
    c = d.client(timeout_s=60)
    for nid, text in acked.items():
        assert c.memory_get(nid)["text"] == text
    assert c.memory_add("Written after the disk had room again.")["ids"]
    assert c.health()["status"] in ("healthy", "degraded")
    assert code == 0, f"exit code {code} when stopped on a full disk:\n{d.log()}"
    print(f"\nfull tmpfs: {len(acked)} writes acknowledged, then: {err.message[:120]}")


def test_rlimit_fsize_gives_clear_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = start(data, tmp_path / "daemon.log")
    c = d.client(timeout_s=60)
    acked: dict[int, str] = {}
    for i in range(5):
        nid = c.memory_add(f"Size limit canary {i}: the spare key is under the blue pot.")["ids"][0]
        acked[nid] = c.memory_get(nid)["text"]
    proc = psutil.Process(d.proc.pid)
    soft, hard = proc.rlimit(psutil.RLIMIT_FSIZE)
    biggest = max(p.stat().st_size for p in data.glob("memory.db*"))
    proc.rlimit(psutil.RLIMIT_FSIZE, (biggest + 256 * 1024, hard))
    try:
        err = fill_until_refused(c, acked)
        assert_storage_error(err)
        assert c.health()["status"] in ("healthy", "degraded")
        assert c.memory_search("where is the spare key", k=3)
    finally:
        proc.rlimit(psutil.RLIMIT_FSIZE, (soft, hard))
    assert c.memory_add("Written after the limit was lifted.")["ids"]
    for nid, text in acked.items():
        assert c.memory_get(nid)["text"] == text
    assert integrity(data / "memory.db") == "ok"
    d.close_clients()
    assert d.stop() == 0, d.log()
    print(f"\nRLIMIT_FSIZE: {len(acked)} writes acknowledged, then: {err.message[:120]}")


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("fault", ["missing", "corrupt"])
def test_bad_model_degrades_but_memory_keeps_working(fault: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("minilm-l6-int8", "minilm-l6-int8-tokenizer"):
        src = catalogue.path_of(name, MODELS_DIR)
        (models / src.name).symlink_to(src)
    llm = catalogue.path_of(catalogue.DEFAULT_LLM, models)
    if fault == "corrupt":   # right name and size, wrong bytes
        llm.write_bytes(os.urandom(1 << 20) * (catalogue.CATALOGUE[catalogue.DEFAULT_LLM].size_bytes >> 20))
    d = start(tmp_path / "data", tmp_path / "daemon.log", models=models)
    c = d.client()
    with pytest.raises(ClientError) as err:
        c.query("What is the capital of France?", max_tokens=8)
    assert err.value.code == "model_unavailable"
    assert ("missing" if fault == "missing" else "sha256") in err.value.message
    health = c.health()
    assert health["status"] == "degraded"
    assert health["components"]["inference"]["status"] == "degraded"
    nid = c.memory_add("The greenhouse thermostat is set to 18 degrees.", kind="fact")["ids"][0]
    hits = c.memory_search("what temperature is the greenhouse", k=3)
    assert hits and hits[0]["id"] == nid
    d.close_clients()
    assert d.stop() == 0, d.log()
