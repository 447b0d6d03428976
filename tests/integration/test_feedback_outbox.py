"""Feedback is an outbox: stored, then applied; a crash in between is repaired at restart.

The daemon is made to die (os._exit, like kill -9: no cleanup) at the exact
point after the feedback row is committed and before it is applied, through
the test-only crash point RUVLLM_EDGE_CRASH_AT (ruvllm_edge/faults.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ruvllm_edge.faults import CRASH_EXIT, ENV_CRASH_AT
from ruvllm_edge.memory.db import connect

from faultkit import FAST

pytestmark = pytest.mark.slow

CORRECTION = "The night ferry to Halvik leaves from pier two at 21:15."


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = connect(db, readonly=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def test_feedback_stored_before_a_crash_is_applied_after_restart(
        start_daemon: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    db = data / "memory.db"
    monkeypatch.setenv(ENV_CRASH_AT, "feedback.stored")
    d = start_daemon(FAST, data_dir=data)
    c = d.client(timeout_s=60)
    rid = c.query("When does the night ferry to Halvik leave?", max_tokens=4)["request_id"]
    c.send("feedback", {"request_id": rid, "rating": 1, "correction": CORRECTION})
    assert d.proc is not None and d.proc.wait(60) == CRASH_EXIT, d.log()   # no reply comes
    fact_sql = "SELECT id FROM nodes WHERE kind = 'fact' AND text = ?"
    assert rows(db, "SELECT request_id, applied_at FROM feedback") == [(rid, None)]
    assert rows(db, fact_sql, CORRECTION) == [], "applied before the crash: proves nothing"

    monkeypatch.delenv(ENV_CRASH_AT)
    d.close_clients()
    d.start()
    end = time.monotonic() + 60
    while rows(db, "SELECT applied_at FROM feedback")[0][0] is None:
        assert time.monotonic() < end, f"the stored feedback was never applied:\n{d.log()}"
        time.sleep(0.1)
    facts = rows(db, fact_sql, CORRECTION)
    assert len(facts) == 1
    c = d.client()
    assert facts[0][0] in [h["id"] for h in c.memory_search("night ferry Halvik pier", k=3)]
    d.close_clients()
    assert d.stop() == 0
    d.start()                                       # applied once: a restart adds nothing
    assert len(rows(db, fact_sql, CORRECTION)) == 1
