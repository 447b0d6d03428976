"""Sessions in the SQLite file: turns, router state, close."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.errors import Cancelled, NotFound, Timeout
from ruvllm_edge.memory.db import Database
from ruvllm_edge.sessions import SessionStore


def test_session_lifecycle(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    s = SessionStore(db)
    sid = s.new("be terse")
    s.append(sid, "r1", "hello", "hi there", np.arange(4, dtype=np.float32))
    s.append(sid, "r2", "how are you", "fine", None)
    sess = s.load(sid)
    assert sess.history == [("user", "hello"), ("assistant", "hi there"), ("user", "how are you"),
                            ("assistant", "fine")]
    assert sess.turn_index == 2 and sess.system_prompt == "be terse"
    assert sess.router_state is None
    s.append(sid, "r3", "x", "y", np.arange(4, dtype=np.float32))
    assert np.array_equal(s.load(sid).router_state, np.arange(4, dtype=np.float32))
    assert s.count_open() == 1
    s.close(sid)
    with pytest.raises(NotFound, match="closed"):
        s.load(sid)
    assert s.history(sid)["closed"] is True and len(s.history(sid)["turns"]) == 6
    with pytest.raises(NotFound):
        s.history("nope")
    db.close()
    # Survives reopening the file.
    db2 = Database(tmp_path / "m.db")
    assert len(SessionStore(db2).history(sid)["turns"]) == 6
    db2.close()


def test_history_replays_the_users_words_and_keeps_no_memory_block(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    s = SessionStore(db)
    sid = s.new()
    s.append(sid, "r1", "What is the gate code?", "7341", None)
    assert s.load(sid).history == [("user", "What is the gate code?"), ("assistant", "7341")]
    stored = db.read("SELECT prompt FROM turns WHERE session_id = ?", (sid,)).fetchall()
    assert stored == [(None,), (None,)]
    db.close()


def test_turns_of_one_session_wait_for_each_other_and_locks_go_away(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    s = SessionStore(db)
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with s.turn("a"):
            inside.set()
            time.sleep(0.3)
            order.append("first")

    def second() -> None:
        inside.wait(5)
        with s.turn("a"):
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(5)
    with s.turn("b"):                 # another session is not held up
        order.append("other")
    for t in threads:
        t.join(5)
    assert order == ["other", "first", "second"]
    assert len(s.locks) == 0          # no lock is kept for idle sessions

    with s.turn("a"):
        with pytest.raises(Cancelled):
            with s.turn("a", should_stop=lambda: "cancelled"):
                pass
        with pytest.raises(Timeout):
            with s.turn("a", should_stop=lambda: "timeout"):
                pass
    assert len(s.locks) == 0
    db.close()
