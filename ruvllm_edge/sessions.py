"""Multi-turn sessions, kept in the SQLite file so they survive restarts.

A session is an ordered list of user/assistant turns plus the router's hidden
state. The full history is kept; what goes into a prompt is trimmed to the
context by tokens at generation time (inference.plan), and the number of
dropped turns is reported in the reply.

History replays what the user typed, never the memory block a turn was
answered with: memory is retrieved afresh for every turn, so a record deleted
(or corrected) since is gone from every later prompt. The price is KV-cache
reuse: a turn answered with memory is replayed shorter than it was generated,
so the next turn's cached prefix ends there.

Turns of one session run one after another (``turn``): a second request in
the same session waits until the first has stored its turn, so it sees it.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .errors import Cancelled, NotFound, Timeout
from .memory.db import Database

MAX_TURNS_LOADED = 200  # the prompt never holds more; older turns stay in the DB


@dataclass(frozen=True)
class Session:
    id: str
    created_at: float
    system_prompt: str | None
    history: list[tuple[str, str]]        # [(role, text as typed / answered)] oldest first
    router_state: np.ndarray | None        # (hidden,) float32
    turn_index: int                        # user turns so far


class SessionLocks:
    """One lock per session with a turn in progress; idle sessions hold none."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}   # sid -> (lock, holders+waiters)

    @contextmanager
    def hold(self, sid: str, should_stop: Callable[[], str | None] = lambda: None,
             poll_s: float = 0.05) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(sid, (threading.Lock(), 0))
            self._locks[sid] = (lock, users + 1)
        try:
            while not lock.acquire(timeout=poll_s):
                reason = should_stop()
                if reason == "cancelled":
                    raise Cancelled("the request was cancelled while the session's previous "
                                    "turn was running", session_id=sid)
                if reason:
                    raise Timeout("the request timed out while the session's previous turn "
                                  "was running", session_id=sid)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[sid]
                if users == 1:
                    del self._locks[sid]
                else:
                    self._locks[sid] = (lock, users - 1)

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.locks = SessionLocks()

    def turn(self, sid: str, should_stop: Callable[[], str | None] = lambda: None
             ) -> Any:
        """Hold the session for one turn: load, answer, append (context manager)."""
        return self.locks.hold(sid, should_stop)

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
            "SELECT role, content FROM (SELECT id, role, content FROM turns "
            "WHERE session_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (sid, MAX_TURNS_LOADED)).fetchall()
        n_user = self.db.read("SELECT count(*) FROM turns WHERE session_id = ? AND role = 'user'",
                              (sid,)).fetchone()[0]
        state = np.frombuffer(row[4], dtype=np.float32).copy() if row[4] else None
        return Session(id=sid, created_at=row[1], system_prompt=row[3],
                       history=[(r, c) for r, c in turns], router_state=state, turn_index=n_user)

    def append(self, sid: str, request_id: str, user: str, assistant: str,
               router_state: np.ndarray | None) -> None:
        """Store a turn pair: the user's words and the answer (no memory block: see above).

        ``turns.prompt`` (migration 0004) stays NULL: a copy of quoted memory
        there would outlive a ``memory.delete`` of the record.
        """
        now = time.time()
        with self.db.atomic() as c:
            c.execute("INSERT INTO turns(session_id, role, content, request_id, created_at) "
                      "VALUES (?, 'user', ?, ?, ?)", (sid, user, request_id, now))
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
