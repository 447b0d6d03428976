"""kill -9 in the middle of a write burst, then restart: nothing acknowledged is lost.

Also home of the helpers the other fault tests share (seed_router, Burst).

An acknowledgement is a reply with ok=true to memory.add or feedback. SQLite in
WAL mode with synchronous=NORMAL makes a commit survive the death of the
process, and the daemon replies only after the commit, so every acknowledged
write must be there after the restart, in a file that passes integrity_check.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ruvllm_edge.client import Client
from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.errors import ClientError
from ruvllm_edge.memory.db import connect

pytestmark = pytest.mark.slow

# One llama.cpp thread: on a busy 2-core CI box two spinning threads made 4 tokens take 20 s.
FAST = {"server": {"rate_limit_per_s": 100_000.0, "rate_limit_burst": 1_000_000},
        "learning": {"enabled": False}, "inference": {"n_threads": 1}}


def seed_router(factory: pytest.TempPathFactory) -> Path:
    """One router.npz per session: copied into a data dir it skips the first-start curriculum."""
    path = factory.getbasetemp() / "router-seed.npz"
    if not path.exists():
        from ruvllm_edge.router.policy import Router
        Router.init(RouterConfig(), LearningConfig()).save(path)
    return path


class Burst:
    """Writer threads, each on its own connection, recording what was acknowledged."""

    def __init__(self, endpoint: str, request_ids: list[str]) -> None:
        self.endpoint = endpoint
        self.request_ids = request_ids
        self.stop = threading.Event()
        self.nodes: dict[int, str] = {}         # acknowledged memory.add: node id -> text
        self.feedback: dict[int, tuple[str, int]] = {}  # feedback id -> (request id, rating)
        self.sent = 0
        self.failed_after_kill = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._adder, args=(i,)) for i in range(2)]
        self.threads.append(threading.Thread(target=self._rater))

    def _run(self, one: Any) -> None:
        with Client(self.endpoint, timeout_s=5) as c:
            i = 0
            while not self.stop.is_set():
                with self._lock:
                    self.sent += 1
                try:
                    one(c, i)
                except ClientError:     # the daemon died under this request
                    with self._lock:
                        self.failed_after_kill += 1
                    return
                i += 1

    def _adder(self, n: int) -> None:
        def one(c: Client, i: int) -> None:
            text = f"crash test fact {n}-{i} {uuid.uuid4().hex}: the ferry leaves at {i % 24}:00"
            ids = c.memory_add(text, kind="fact")["ids"]
            with self._lock:
                self.nodes[ids[0]] = text
        self._run(one)

    def _rater(self) -> None:
        def one(c: Client, i: int) -> None:
            rid = self.request_ids[i % len(self.request_ids)]
            rating = 1 + i % 5
            fid = c.feedback(rid, rating=rating)["feedback_id"]
            with self._lock:
                self.feedback[fid] = (rid, rating)
        self._run(one)

    def acked(self) -> int:
        with self._lock:
            return len(self.nodes) + len(self.feedback)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_kill9_during_a_write_burst_loses_no_acknowledged_write(
        start_daemon: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "router.npz").write_bytes(seed_router(tmp_path_factory).read_bytes())
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
