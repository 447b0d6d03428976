"""Server pieces that need no running process: rate limit, endpoint policy, dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dataclasses
import threading
import time

import msgpack
import pytest

from ruvllm_edge import config, protocol
from ruvllm_edge.learning.scheduler import Job as SchedulerJob
from ruvllm_edge.server import Daemon, StartupError, TokenBucket, check_endpoint_security
from ruvllm_edge.server.lanes import Job
from ruvllm_edge.server.ops import SCHEMAS


def test_token_bucket_allows_burst_then_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3)
    assert [b.allow(b"c", 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.allow(b"c", 0.5) is True      # one token refilled after 0.5 s at 2/s
    assert b.allow(b"c", 0.5) is False
    assert b.allow(b"other", 0.5) is True  # per client
    b.purge(1000.0)
    assert b._state == {}


def test_token_bucket_gives_each_refusal_its_own_slot() -> None:
    b = TokenBucket(rate=4.0, burst=1)
    assert b.take(b"c", 0.0) == 0.0
    hints = [b.take(b"c", 0.0) for _ in range(3)]       # a pipelined burst, refused
    assert hints == pytest.approx([0.25, 0.5, 0.75])    # successive slots, 1/rate apart
    assert b.take(b"c", 0.1) == pytest.approx(0.9)      # a newcomer queues behind them
    # Each retried after its own hint is let through, none refused again.
    assert [b.take(b"c", t) for t in (0.25, 0.5, 0.75, 1.0)] == [0.0] * 4
    assert b.take(b"d", 0.0) == 0.0                     # per connection


@pytest.mark.parametrize("endpoint, curve, ok", [
    ("ipc:///tmp/x.sock", False, True),
    ("tcp://127.0.0.1:5555", False, True),
    ("tcp://localhost:5555", False, True),
    ("tcp://[::1]:5555", False, True),
    ("tcp://0.0.0.0:5555", False, False),
    ("tcp://192.168.1.4:5555", False, False),
    ("tcp://eth0:5555", False, False),
    ("tcp://0.0.0.0:5555", True, True),
])
def test_non_loopback_tcp_needs_curve(endpoint: str, curve: bool, ok: bool) -> None:
    if ok:
        check_endpoint_security(endpoint, curve)
    else:
        with pytest.raises(StartupError, match="CURVE|curve"):
            check_endpoint_security(endpoint, curve)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(frames)

    def replies(self) -> list[dict[str, Any]]:
        return [msgpack.unpackb(f[-1], raw=False) for f in self.sent]


@pytest.fixture
def daemon(tmp_path: Path, models_dir: Path) -> Daemon:
    cfg = config.load(env={}, data_dir=str(tmp_path / "d"), models_dir=str(models_dir))
    d = Daemon(cfg)
    yield d
    d.db.close()
    d.lock.release()


def send(d: Daemon, sock: "FakeSocket", *frames: bytes, accepting: bool = True) -> None:
    d.transport.on_message(sock, list(frames), accepting)


def test_dispatch_inline_ops_and_errors_without_a_socket_loop(daemon: Daemon) -> None:
    s = FakeSocket()
    send(daemon, s, b"id1", protocol.pack(protocol.make_request("h", "health")))
    send(daemon, s, b"id1", b"", protocol.pack(protocol.make_request("r", "stats")))
    send(daemon, s, b"id1", b"\x93garbage")
    send(daemon, s, b"id1", b"a", b"b", b"c")   # bad framing: error, counted
    r = s.replies()
    assert r[0]["ok"] and r[0]["id"] == "h" and r[0]["result"]["status"] in ("healthy", "degraded")
    assert s.sent[1][1] == b"" and r[1]["ok"]                 # REQ envelope preserved
    assert r[2]["ok"] is False and r[2]["error"]["code"] == "bad_request"
    assert len(s.sent) == 4 and len(s.sent[3]) == 2           # replied as to a DEALER
    assert r[3]["error"]["code"] == "bad_request" and "frame" in r[3]["error"]["message"]
    assert sum(r[1]["result"]["malformed"].values()) == 0
    send(daemon, s, b"id1", protocol.pack(protocol.make_request("again", "stats")))
    assert sum(s.replies()[-1]["result"]["malformed"].values()) == 2


def test_queued_ops_get_busy_when_the_queue_is_full(daemon: Daemon) -> None:
    s = FakeSocket()
    for i in range(daemon.cfg.server.max_queue + 1):
        send(daemon, s, b"c", protocol.pack(protocol.make_request(
            f"q{i}", "query", {"query": "hi"})))
    r = s.replies()
    assert len(r) == 1 and r[0]["error"]["code"] == "busy" and r[0]["id"] == f"q{i}"
    # A query without a session is planned on the fast lane first (lanes.py).
    assert r[0]["error"]["details"]["lane"] == "fast"
    assert daemon.services.lanes.queues["fast"].qsize() == daemon.cfg.server.max_queue


def test_shutdown_refuses_new_work_with_busy(daemon: Daemon) -> None:
    s = FakeSocket()
    send(daemon, s, b"c", protocol.pack(protocol.make_request("q", "query", {"query": "hi"})),
         accepting=False)
    assert s.replies()[0]["error"]["code"] == "busy"
    assert "shutting down" in s.replies()[0]["error"]["message"]


def test_rate_limit_answers_rate_limited(daemon: Daemon) -> None:
    daemon.transport.rate = TokenBucket(rate=0.001, burst=2)
    s = FakeSocket()
    for i in range(3):
        send(daemon, s, b"c", protocol.pack(protocol.make_request(f"h{i}", "health")))
    codes = [r.get("error", {}).get("code") for r in s.replies()]
    assert codes == [None, None, "rate_limited"]
    err = s.replies()[2]
    assert err["id"] == "h2"
    assert err["error"]["details"]["retry_after_ms"] > 0
    assert err["error"]["details"]["rate_per_s"] == 0.001 and err["error"]["details"]["burst"] == 2


def test_busy_details_name_the_lane_and_the_wait(daemon: Daemon) -> None:
    s = FakeSocket()
    for i in range(daemon.cfg.server.max_queue + 1):
        send(daemon, s, b"c", protocol.pack(protocol.make_request(
            f"m{i}", "memory.stats")))
    details = s.replies()[0]["error"]["details"]
    assert details == {"lane": "aux", "queue": daemon.cfg.server.max_queue,
                       "retry_after_ms": 500}


def test_a_duplicate_in_flight_id_is_refused_on_its_connection_only(daemon: Daemon) -> None:
    s = FakeSocket()
    q = protocol.pack(protocol.make_request("same", "query", {"query": "hi"}))
    send(daemon, s, b"c", q)
    send(daemon, s, b"c", q)
    send(daemon, s, b"c", protocol.pack(protocol.make_request("same", "health")))
    send(daemon, s, b"other", q)                        # another connection: its own ids
    r = s.replies()
    assert len(r) == 2 and all(x["id"] == "same" for x in r)
    for x in r:
        assert x["error"]["code"] == "bad_request"
        assert x["error"]["details"] == {"field": "id", "in_flight": True}
    first = daemon.services.lanes.queues["fast"].get_nowait()
    daemon.services.lanes.jobs.remove(first)            # the first one finished...
    send(daemon, s, b"c", q)                            # ...so its id is free again
    assert len(s.replies()) == 2


def test_stream_on_a_req_socket_names_the_field(daemon: Daemon) -> None:
    s = FakeSocket()
    send(daemon, s, b"c", b"", protocol.pack(protocol.make_request(
        "st", "query", {"query": "hi", "stream": True})))
    err = s.replies()[0]["error"]
    assert err["code"] == "bad_request" and err["details"]["field"] == "args.stream"


def test_bad_requests_reach_the_wire_with_field_and_id(daemon: Daemon) -> None:
    s = FakeSocket()
    send(daemon, s, b"c", protocol.pack({"v": 1, "id": "e1", "op": "health", "junk": 1}))
    send(daemon, s, b"c", protocol.pack({"v": 1, "id": "e2", "op": "query",
                                         "args": {"query": "q", "constraints": {"fast": 1}}}))
    send(daemon, s, b"c", protocol.pack({"v": 1, "id": "e3", "op": "backup", "args": {"to": "rel"}}))
    r = s.replies()
    assert [x["id"] for x in r[:2]] == ["e1", "e2"]
    assert r[0]["error"]["details"]["field"] == "junk"
    assert r[1]["error"]["details"]["field"] == "args.constraints.fast"
    assert len(r) == 2                                  # backup was queued (slow lane)
    job = daemon.services.lanes.queues["slow"].get_nowait()
    daemon.dispatcher.run(job, lambda m: s.sent.append([m and protocol.pack(m)]))
    assert s.replies()[2]["error"]["details"]["field"] == "args.to"


def test_a_request_cancelled_before_it_starts_names_itself(daemon: Daemon) -> None:
    s = FakeSocket()
    send(daemon, s, b"c", protocol.pack(protocol.make_request("cq", "query", {"query": "hi"})))
    job = daemon.services.lanes.queues["fast"].get_nowait()
    job.cancel.set()
    in_table_at_send: list[bool] = []

    def capture(m: dict[str, Any]) -> None:
        in_table_at_send.append(daemon.services.lanes.jobs.find_by_client(b"c", "cq") is not None)
        s.sent.append([protocol.pack(m)])

    daemon.dispatcher.run(job, capture)
    # The final reply leaves the job table before it is sent: the id is free on arrival.
    assert in_table_at_send == [False]
    err = s.replies()[0]["error"]
    assert err["code"] == "cancelled"
    assert err["details"] == {"request_id": job.request_id, "completion_tokens": 0}


def test_a_crashing_handler_becomes_an_internal_error(daemon: Daemon) -> None:
    def boom(ctx: Any, args: Any) -> dict[str, Any]:
        raise ZeroDivisionError("bug")

    daemon.dispatcher.ops["stats"] = dataclasses.replace(daemon.dispatcher.ops["stats"],
                                                         execute=boom)
    s = FakeSocket()
    send(daemon, s, b"c", protocol.pack(protocol.make_request("x", "stats")))
    r = s.replies()[0]
    assert r["ok"] is False and r["error"]["code"] == "internal" and "ZeroDivisionError" in \
        r["error"]["message"]


def test_data_dir_lock_refuses_a_second_daemon(daemon: Daemon) -> None:
    with pytest.raises(StartupError, match="another ruvllm-edge daemon"):
        Daemon(daemon.cfg)


def test_corrupt_database_refuses_start_and_names_restore(tmp_path: Path, models_dir: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "memory.db").write_bytes(b"SQLite format 3\0" + b"\xff" * 8192)
    cfg = config.load(env={}, data_dir=str(d), models_dir=str(models_dir))
    with pytest.raises(StartupError, match="ruvllm-edge restore"):
        Daemon(cfg)


def test_a_metrics_scrape_reads_no_table_on_the_socket_thread(daemon: Daemon) -> None:
    """Node counts come from a snapshot a worker lane refreshes, not from SQL on the loop."""
    daemon.services.components.memory.add("The blue kayak is in shed four.", kind="fact")
    statements: list[str] = []
    daemon.db.reader().set_trace_callback(statements.append)   # this (the socket) thread
    s = FakeSocket()
    send(daemon, s, b"c", protocol.pack(protocol.make_request("m1", "metrics")))
    assert s.replies()[0]["ok"]
    assert not [q for q in statements if "nodes" in q], statements

    daemon._housekeeping(time.monotonic())        # the loop only queues the refresh ...
    aux = daemon.services.lanes.queues["aux"]
    queued = [aux.get_nowait() for _ in range(aux.qsize())]
    refresh = [j for j in queued if j.req.op == "node_counts"]
    assert len(refresh) == 1 and refresh[0].task is not None
    worker = threading.Thread(target=daemon.dispatcher.run_queued, args=(refresh[0],))
    worker.start()                                # ... a worker runs it
    worker.join(30)
    send(daemon, s, b"c", protocol.pack(protocol.make_request("m2", "metrics")))
    assert 'ruvllm_memory_nodes{kind="fact"} 1.0' in s.replies()[1]["result"]["text"]
    assert not [q for q in statements if "nodes" in q], statements
    daemon._housekeeping(time.monotonic() + 2)    # not queued again until it is due
    assert not [j for j in list(aux.queue) if j is not None and j.req.op == "node_counts"]


def test_housekeeping_reads_the_job_table_under_its_lock(daemon: Daemon) -> None:
    done = threading.Event()

    def tick() -> None:
        daemon._housekeeping(time.monotonic())
        done.set()

    with daemon.services.lanes.jobs.lock:
        t = threading.Thread(target=tick)
        t.start()
        assert not done.wait(0.3), "the idle-unload check read the job table without its lock"
    assert done.wait(10)
    t.join()


def call(d: Daemon, op: str, **args: Any) -> dict[str, Any]:
    """Run one op through the dispatcher on this thread, as its lane's worker would."""
    req = protocol.decode_request(protocol.pack(protocol.make_request("x", op, args)), 1 << 20,
                                  SCHEMAS)
    job = Job(b"c", [], req, req.id, deadline=time.monotonic() + 60)
    out: list[dict[str, Any]] = []
    d.dispatcher.run(job, out.append)
    return out[-1]


def test_one_learning_run_at_a_time_and_its_reader_is_released(daemon: Daemon) -> None:
    entered, gate = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow(ctx: Any) -> dict[str, Any]:
        daemon.db.read("SELECT count(*) FROM nodes").fetchone()   # opens this thread's reader
        runs.append(1)
        entered.set()
        gate.wait(30)
        return {"done": True}

    daemon.services.scheduler.jobs = [SchedulerJob("slow", slow)]
    # The in-process daemon shares pytest's RSS, which after the whole suite is past
    # the edge memory budget, so the budget check would skip the job: this test is
    # about one run at a time (the budget check has its own tests in
    # test_learning_scheduler.py).
    daemon.services.scheduler.memory_headroom_mb = lambda: 1e9
    readers = len(daemon.db._readers)
    first = call(daemon, "learn", wait=False)
    assert first["ok"] and first["result"]["started"] is True
    assert entered.wait(10)
    again = [call(daemon, "learn", wait=False)["result"] for _ in range(4)]
    assert all(r["started"] is False and r["running"]["job"] == "slow" for r in again), again
    learners = [t for t in threading.enumerate() if t.name.startswith("learn")]
    assert len(learners) == 1, learners
    waited: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: waited.append(call(daemon, "learn", wait=True)))
    waiter.start()
    time.sleep(0.2)
    gate.set()
    waiter.join(30)
    learners[0].join(30)
    assert waited[0]["result"]["jobs"]["slow"]["report"] == {"done": True}
    assert runs == [1], "wait=true joined the running run instead of starting another"
    assert len(daemon.db._readers) == readers, "the finished run kept its DB reader"


def test_reload_takes_the_live_settings_and_names_the_rest(tmp_path: Path) -> None:
    from ruvllm_edge.server.lifecycle import LIVE, changed_keys, with_live_settings

    old = config.load(env={}, data_dir=str(tmp_path))
    new = dataclasses.replace(
        old, server=dataclasses.replace(old.server, rate_limit_burst=3, max_queue=7),
        learning=dataclasses.replace(old.learning, idle_after_s=9.0, replay_capacity=50))
    assert changed_keys(old, new) == ["learning.idle_after_s", "learning.replay_capacity",
                                      "server.max_queue", "server.rate_limit_burst"]
    live = with_live_settings(old, new)
    assert live.server.rate_limit_burst == 3 and live.learning.idle_after_s == 9.0
    assert live.server.max_queue == old.server.max_queue
    assert live.learning.replay_capacity == old.learning.replay_capacity
    assert changed_keys(live, new) == ["learning.replay_capacity", "server.max_queue"]
    assert "enabled" not in LIVE["learning"] and "max_queue" not in LIVE["server"]


# -- lanes: cheap reads and answers from memory never wait for the model -----


def queued_ops(d: Daemon, lane: str) -> list[str]:
    return [j.req.op for j in list(d.services.lanes.queues[lane].queue) if j is not None]


def test_memory_reads_and_sessionless_queries_start_on_the_fast_lane(daemon: Daemon) -> None:
    s = FakeSocket()
    for i, (op, args) in enumerate([("memory.search", {"query": "kayak"}), ("memory.get", {"id": 1}),
                                    ("memory.history", {"id": 1}), ("memory.add", {"text": "x"}),
                                    ("query", {"query": "hi"}),
                                    ("query", {"query": "hi", "session_id": "s1"})]):
        send(daemon, s, b"c", protocol.pack(protocol.make_request(f"r{i}", op, args)))
    assert s.replies() == []
    assert queued_ops(daemon, "fast") == ["memory.search", "memory.get", "memory.history", "query"]
    assert queued_ops(daemon, "aux") == ["memory.add"]
    assert queued_ops(daemon, "gen") == ["query"]        # a session's turns stay in order on gen
    assert daemon.services.lanes.workers["fast"] == daemon.cfg.server.fast_workers > 0
    assert daemon.dispatcher.batcher is not None


def test_fast_workers_0_keeps_the_old_lanes(tmp_path: Path, models_dir: Path) -> None:
    cfg = config.load(env={}, data_dir=str(tmp_path / "d"), models_dir=str(models_dir))
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, fast_workers=0))
    d = Daemon(cfg)
    try:
        s = FakeSocket()
        send(d, s, b"c", protocol.pack(protocol.make_request("a", "memory.search", {"query": "k"})))
        send(d, s, b"c", protocol.pack(protocol.make_request("b", "query", {"query": "hi"})))
        assert queued_ops(d, "aux") == ["memory.search"] and queued_ops(d, "gen") == ["query"]
        assert queued_ops(d, "fast") == [] and d.services.lanes.workers["fast"] == 0
        assert d.dispatcher.batcher is None
    finally:
        d.db.close()
        d.lock.release()


def start_on_fast(d: Daemon, s: "FakeSocket", rid: str, query: str) -> Job:
    send(d, s, b"c", protocol.pack(protocol.make_request(rid, "query", {"query": query})))
    job = d.services.lanes.queues["fast"].get_nowait()
    assert job.lane == "fast"
    return job


def test_a_question_answered_from_memory_finishes_on_the_fast_lane(daemon: Daemon) -> None:
    daemon.services.components.memory.add("The gate code for unit 4 is 1028.", kind="fact")
    s = FakeSocket()
    job = start_on_fast(daemon, s, "q1", "What is the gate code for unit 4?")
    out: list[dict[str, Any]] = []
    assert daemon.dispatcher.run(job, out.append) is False       # done here, not moved
    res = out[-1]["result"]
    assert res["finish_reason"] == "memory" and res["context"]["plan"] == "answer"
    assert "1028" in res["text"] and res["usage"]["completion_tokens"] == 0
    assert daemon.services.lanes.queues["gen"].empty()
    assert daemon.services.lanes.jobs.find_by_client(b"c", "q1") is None
    row = daemon.db.read("SELECT status FROM requests WHERE id = ?", (job.request_id,)).fetchone()
    assert row == ("memory",)                                     # the request log has it


def test_a_query_that_needs_the_model_moves_to_gen_and_cancel_still_finds_it(
        daemon: Daemon) -> None:
    s = FakeSocket()
    job = start_on_fast(daemon, s, "q2", "Write a short poem about the sea.")
    out: list[dict[str, Any]] = []
    assert daemon.dispatcher.run(job, out.append) is True        # planned, then moved
    assert out == []                                              # no reply yet
    gen = daemon.services.lanes.queues["gen"]
    assert gen.qsize() == 1 and job.lane == "gen" and job.resume is not None
    send(daemon, s, b"c", protocol.pack(protocol.make_request("c1", "cancel",
                                                              {"request_id": "q2"})))
    assert s.replies()[0]["result"] == {"request_id": job.request_id, "cancelled": True,
                                        "state": "queued"}              # waiting for gen
    moved = gen.get_nowait()
    assert daemon.dispatcher.run(moved, out.append) is False
    err = out[-1]["error"]
    assert err["code"] == "cancelled" and err["details"]["request_id"] == job.request_id
    assert daemon.services.lanes.jobs.find_by_client(b"c", "q2") is None


def test_a_full_gen_lane_at_the_move_answers_busy(daemon: Daemon) -> None:
    s = FakeSocket()
    job = start_on_fast(daemon, s, "q3", "Write a short poem about the sea.")
    gen = daemon.services.lanes.queues["gen"]
    for i in range(gen.maxsize):
        gen.put_nowait(Job.internal(f"filler{i}", lambda: None))
    out: list[dict[str, Any]] = []
    assert daemon.dispatcher.run(job, out.append) is False
    err = out[-1]["error"]
    assert err["code"] == "busy" and err["details"]["lane"] == "gen"
    assert daemon.services.lanes.jobs.find_by_client(b"c", "q3") is None


def test_idle_trim_runs_once_after_a_burst_and_not_while_busy(daemon: Daemon) -> None:
    from ruvllm_edge.server import daemon as daemon_mod

    daemon._trim_when_idle()
    assert daemon.trims == 0                           # no traffic since start: nothing to give back
    sock = FakeSocket()
    send(daemon, sock, b"c", protocol.pack(protocol.make_request("r1", "health")))
    assert sock.replies() and daemon._last_request > 0
    daemon._trim_when_idle()
    assert daemon.trims == 0                           # not idle long enough yet
    daemon._last_request -= daemon_mod.IDLE_TRIM_AFTER_S + 1
    daemon._trimmed_at -= daemon_mod.IDLE_TRIM_AFTER_S + 1
    with daemon.services.lanes.jobs.lock:
        daemon.services.lanes.jobs._active["x"] = object()  # type: ignore[assignment]   # a request still running
    try:
        daemon._trim_when_idle()
        assert daemon.trims == 0
    finally:
        with daemon.services.lanes.jobs.lock:
            daemon.services.lanes.jobs._active.pop("x")
    daemon._trim_when_idle()
    assert daemon.trims == 1
    daemon._trim_when_idle()
    assert daemon.trims == 1                           # once per burst
    assert "idle_trim" in daemon.tasks.periodic
