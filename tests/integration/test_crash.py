"""kill -9 in the middle of a write burst, then restart: nothing acknowledged is lost.

An acknowledgement is a reply with ok=true to memory.add or feedback. SQLite in
WAL mode with synchronous=NORMAL makes a commit survive the death of the
process, and the daemon replies only after the commit, so every acknowledged
write must be there after the restart, in a file that passes integrity_check.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from faultkit import FAST, Burst
from ruvllm_edge.memory.db import connect

pytestmark = pytest.mark.slow


def test_kill9_during_a_write_burst_loses_no_acknowledged_write(
        start_daemon: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    d = start_daemon(FAST, data_dir=data)
    c = d.client()
    request_ids = [c.query(f"Say the number {i}.", max_tokens=4)["request_id"] for i in range(2)]

    burst = Burst(d.endpoint, request_ids)
    burst.start()
    end = time.monotonic() + 60
    while burst.acked() < 120 and time.monotonic() < end:
        time.sleep(0.02)
    assert burst.acked() >= 120, "the burst did not get going"
    d.kill9()                                   # mid-burst: requests are in flight
    burst.join()
    assert burst.nodes and burst.feedback
    in_flight = burst.sent - burst.acked()

    d.close_clients()
    d.start()
    conn = connect(data / "memory.db", readonly=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(conn.execute("SELECT id, text FROM nodes"))
        fb = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, request_id, rating FROM feedback")}
    finally:
        conn.close()
    missing_nodes = {i: t for i, t in burst.nodes.items() if stored.get(i) != t}
    missing_fb = {i: v for i, v in burst.feedback.items() if fb.get(i) != v}
    assert not missing_nodes and not missing_fb, (missing_nodes, missing_fb)
    # The restarted daemon serves what it stored, by id and by meaning.
    c = d.client()
    some_id, some_text = next(iter(burst.nodes.items()))
    assert c.memory_get(some_id)["text"] == some_text
    assert some_id in [h["id"] for h in c.memory_search(some_text, k=5)]
    assert c.health()["status"] in ("healthy", "degraded")
    print(f"\nkill -9: {len(burst.nodes)} memory.add + {len(burst.feedback)} feedback acknowledged, "
          f"{in_flight} in flight at the kill; all acknowledged writes present")
