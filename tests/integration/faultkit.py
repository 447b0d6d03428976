"""Helpers shared by the fault tests: a quick daemon config and a write burst."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ruvllm_edge.client import Client
from ruvllm_edge.errors import ClientError

# One llama.cpp thread: on a busy 2-core CI box two spinning threads made 4 tokens take 20 s.
FAST = {"server": {"rate_limit_per_s": 100_000.0, "rate_limit_burst": 1_000_000},
        "learning": {"enabled": False}, "inference": {"n_threads": 1}}


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
