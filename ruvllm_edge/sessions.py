"""Multi-turn sessions, kept in the SQLite file so they survive restarts.

A session is an ordered list of user/assistant turns plus the router's hidden
state. The full history is kept; what goes into a prompt is trimmed to the
context by tokens at generation time (inference.plan), and the number of
dropped turns is reported in the reply.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import NotFound
from .memory.db import Database

MAX_TURNS_LOADED = 200  # the prompt never holds more; older turns stay in the DB


@dataclass(frozen=True)
class Session:
    id: str
    created_at: float
    system_prompt: str | None
    history: list[tuple[str, str]]        # [(role, text the model saw)] oldest first
    router_state: np.ndarray | None        # (hidden,) float32
    turn_index: int                        # user turns so far


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def new(self, system_prompt: str | None = None) -> str:
        sid = uuid.uuid4().hex
        now = time.time()
        with self.db.atomic() as c:
            c.execute("INSERT INTO sessions(id, created_at, last_used_at, system_prompt) "
                      "VALUES (?, ?, ?, ?)", (sid, now, now, system_prompt))
        return sid

    def _row(self, sid: str) -> Any:
        row = self.db.read("SELECT id, created_at, closed_at, system_prompt, router_state "
                           "FROM sessions WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise NotFound(f"session {sid!r} does not exist", session_id=sid)
        if row[2] is not None:
            raise NotFound(f"session {sid!r} is closed", session_id=sid)
        return row

    def load(self, sid: str) -> Session:
        row = self._row(sid)
        turns = self.db.read(
            "SELECT role, text FROM (SELECT id, role, coalesce(prompt, content) AS text FROM turns "
            "WHERE session_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (sid, MAX_TURNS_LOADED)).fetchall()
        n_user = self.db.read("SELECT count(*) FROM turns WHERE session_id = ? AND role = 'user'",
                              (sid,)).fetchone()[0]
        state = np.frombuffer(row[4], dtype=np.float32).copy() if row[4] else None
        return Session(id=sid, created_at=row[1], system_prompt=row[3],
                       history=[(r, c) for r, c in turns], router_state=state, turn_index=n_user)

    def append(self, sid: str, request_id: str, user: str, assistant: str,
               router_state: np.ndarray | None, user_prompt: str | None = None) -> None:
        """Store a turn pair; ``user_prompt`` is what the model saw, if not ``user``."""
        now = time.time()
        prompt = user_prompt if user_prompt is not None and user_prompt != user else None
        with self.db.atomic() as c:
            c.execute("INSERT INTO turns(session_id, role, content, prompt, request_id, created_at) "
                      "VALUES (?, 'user', ?, ?, ?, ?)", (sid, user, prompt, request_id, now))
            c.execute("INSERT INTO turns(session_id, role, content, request_id, created_at) "
                      "VALUES (?, 'assistant', ?, ?, ?)", (sid, assistant, request_id, now))
            state = None if router_state is None else np.asarray(router_state, np.float32).tobytes()
            c.execute("UPDATE sessions SET last_used_at = ?, router_state = ? WHERE id = ?",
                      (now, state, sid))

    def close(self, sid: str) -> dict[str, Any]:
        self._row(sid)
        with self.db.atomic() as c:
            c.execute("UPDATE sessions SET closed_at = ? WHERE id = ?", (time.time(), sid))
        return {"session_id": sid, "closed": True}

    def history(self, sid: str) -> dict[str, Any]:
        row = self.db.read("SELECT created_at, closed_at FROM sessions WHERE id = ?",
                           (sid,)).fetchone()
        if row is None:
            raise NotFound(f"session {sid!r} does not exist", session_id=sid)
        turns = self.db.read("SELECT role, content, request_id, created_at FROM turns "
                             "WHERE session_id = ? ORDER BY id", (sid,)).fetchall()
        return {"session_id": sid, "created_at": row[0], "closed": row[1] is not None,
                "turns": [{"role": r, "content": c, "request_id": q, "created_at": t}
                          for r, c, q, t in turns]}

    def count_open(self) -> int:
        return int(self.db.read("SELECT count(*) FROM sessions WHERE closed_at IS NULL")
                   .fetchone()[0])
