"""`ruvllm-edge status`: the screen's layout, and the real command against a real daemon."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from ruvllm_edge.cli import admin

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_render_status_names_every_part() -> None:
    now = 1_800_000_000.0
    health = {"status": "degraded", "version": "9.9", "uptime_s": 3725.0, "components": {
        "inference": {"status": "healthy"},
        "router": {"status": "healthy", "version": 3, "size_bytes": 4208},
        "resources": {"status": "healthy", "rss_mb": 512.4, "budget_mb": 2048,
                      "mem_available_mb": 900.0, "disk_free_mb": 1234.0},
        "queue": {"status": "healthy", "gen": 2, "aux": 1, "slow": 0, "max": 16, "active": 1},
        "memory": {"status": "degraded", "error": "embedder missing"}}}
    stats = {"endpoint": "ipc:///x.sock", "data_dir": "/data",
             "model": {"model": "m", "state": "loaded", "idle_s": 4.0, "keep_alive_s": 300,
                       "n_ctx": 2048, "n_threads": 2, "loads": 1},
             "requests": {"query/ok": 5.0, "health/ok": 2.0}, "errors": {"query/busy": 1.0},
             "tokens": {"prompt": 100.0, "cached": 40.0, "completion": 60.0},
             "learning": {"router_training": {"runs": 2, "failed": 0, "last_status": "ok",
                                              "last_at": now - 7200, "last_s": 3.2,
                                              "last_report": {"router_version": 3}},
                          "eviction": {"runs": 0}}}
    backup = {"path": "/usb/current", "created_at_epoch": now - 600, "size_bytes": 5 * 1_048_576,
              "counts": {"nodes": 1200}}
    text = admin.render_status(health, stats, None, backup, now)
    lines = dict(line.split(None, 1) if not line.startswith("last ") else
                 (" ".join(line.split()[:2]), line.split(None, 2)[2]) for line in text.splitlines())
    assert lines["daemon"].startswith("degraded, version 9.9, up 1h 02m, ipc:///x.sock")
    assert lines["model"].startswith("m: loaded, idle 4 s, unloads after 300 s idle")
    assert lines["memory"] == "unavailable: embedder missing"
    assert lines["router"] == "version 3, 4,208 bytes"
    assert lines["queue"].startswith("1 active; queued: generation 2 (of 16)")
    assert lines["requests"].startswith("7 ok, 1 errors")
    assert lines["problems"] == "memory degraded (embedder missing)"
    assert lines["last backup"].endswith("(10 min ago), 5.0 MB, 1,200 nodes, in /usb/current")
    assert lines["last learning"].startswith("router_training: ok ")
    assert "(2.0 h ago), 3.2 s; 2 runs, 0 failed; router version 3" in lines["last learning"]
    down = admin.render_status(None, None, None, None, now, "ipc:///gone.sock", "/data/backups")
    assert "not reachable at ipc:///gone.sock" in down
    assert "none found in /data/backups" in down and "last learning" not in down


def test_status_against_a_real_daemon(start_daemon) -> None:
    d = start_daemon(config={"learning": {"explore_per_run": 0}})
    flags = ["--endpoint", d.endpoint, "--data-dir", str(d.data_dir)]
    before = _cli("status", *flags)
    assert before.returncode == 0, before.stderr
    assert re.search(r"^last backup +none found in ", before.stdout, re.M)
    assert "no run since the daemon started" in before.stdout

    c = d.client()
    c.memory_add("The spare key is under the blue flower pot.", kind="fact")
    c.query("Where is the spare key?", max_tokens=16)
    c.backup(str(d.data_dir / "backups"))
    c.learn(wait=True, timeout_s=300)
    t0 = time.time()
    r = _cli("status", *flags)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("daemon")
    assert "healthy, version" in out and d.endpoint in out
    assert "smollm2-135m-instruct-q4_1: loaded" in out
    assert "1 nodes" in out or "2 nodes" in out            # the fact (and maybe its answer)
    assert f"in {d.data_dir / 'backups' / 'current'}" in out and "s ago" in out
    assert "router_training: ok" in out and "edge_decay: ok" in out

    facts = json.loads(_cli("status", "--json", *flags).stdout)
    assert facts["health"]["status"] == "healthy"
    assert facts["memory"]["nodes"] >= 1 and facts["last_backup"]["counts"]["nodes"] >= 1
    assert abs(facts["last_backup"]["created_at_epoch"] - t0) < 600
    assert facts["stats"]["learning"]["router_training"]["runs"] == 1

    d.close_clients()
    assert d.stop() == 0
    down = _cli("status", *flags, "--timeout", "1")
    assert down.returncode == 3
    assert "not reachable" in down.stdout and "last backup" in down.stdout
    assert str(d.data_dir / "backups" / "current") in down.stdout   # still found on disk
