"""Sessions in the SQLite file: turns, router state, close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.errors import NotFound
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


def test_the_prompt_the_model_saw_is_replayed_but_history_shows_the_users_text(
        tmp_path: Path) -> None:
    db = Database(tmp_path / "m.db")
    s = SessionStore(db)
    sid = s.new()
    s.append(sid, "r1", "What is the gate code?", "7341", None,
             user_prompt="MEMORY: > The gate code is 7341.\n\nQuestion: What is the gate code?")
    s.append(sid, "r2", "Thanks", "You're welcome", None, user_prompt="Thanks")
    assert s.load(sid).history[0] == ("user", "MEMORY: > The gate code is 7341.\n\n"
                                              "Question: What is the gate code?")
    assert s.load(sid).history[2] == ("user", "Thanks")
    turns = s.history(sid)["turns"]
    assert turns[0]["content"] == "What is the gate code?" and turns[2]["content"] == "Thanks"
    stored = db.read("SELECT prompt FROM turns WHERE request_id = 'r2' AND role = 'user'").fetchone()
    assert stored[0] is None   # same as the user's text: not stored twice
    db.close()
