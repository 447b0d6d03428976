"""The daemon backbone end to end: a real process, real sockets, the real GGUF model."""

from __future__ import annotations

import statistics
import threading
import time

import msgpack
import pytest
import zmq

from ruvllm_edge import protocol
from ruvllm_edge.client import Client
from ruvllm_edge.errors import ClientError

LONG_PROMPT = "Write a very long story about a dragon who learns to code. Use at least 600 words."


def test_query_answers_with_full_result(daemon) -> None:
    c = daemon.client()
    res = c.query("What is the capital of France?", max_tokens=32, temperature=0.0)
    assert res["text"].strip(), res
    assert "paris" in res["text"].lower()
    assert len(res["request_id"]) == 32
    for key in ("total", "embedding", "retrieval", "routing", "generation"):
        assert res["latency_ms"][key] >= 0.0
    assert res["latency_ms"]["generation"] > 0
    assert res["usage"]["prompt_tokens"] > 5
    assert 0 < res["usage"]["completion_tokens"] <= 32
    assert isinstance(res["truncated"], bool)
    assert isinstance(res["sources"], list) and isinstance(res["routing_info"], dict)


def test_stream_streams_tokens_then_done(daemon) -> None:
    c = daemon.client()
    req_id = c.send("query", {"query": "Name three colours.", "stream": True,
                              "constraints": {"max_tokens": 40, "temperature": 0.0}})
    events = []
    while True:
        msg = c.recv_any(60)
        assert msg["id"] == req_id
        events.append(msg)
        if "ok" in msg:
            break
    tokens = [e for e in events if e.get("event") == "token"]
    done = events[-1]
    assert done["ok"] is True and done["event"] == "done"
    assert len(tokens) >= 2
    assert [t["seq"] for t in tokens] == list(range(len(tokens)))
    assert "".join(t["text"] for t in tokens).strip() == done["result"]["text"]


def test_client_stream_iterator(daemon) -> None:
    c = daemon.client()
    s = c.stream("Say hello.", max_tokens=16, temperature=0.0)
    pieces = list(s)
    assert pieces and s.result is not None
    assert "".join(pieces).strip() == s.result["text"]


def test_second_turn_sees_first(daemon) -> None:
    c = daemon.client()
    sid = c.new_session()
    # Without memory: a turn answered with quoted memory is replayed as typed (shorter than
    # generated), so the cache check below holds for turns without a memory block.
    first = c.query("My name is Zorblax. Please remember my name.", session_id=sid,
                    max_tokens=40, temperature=0.0, use_memory=False)
    second = c.query("What is my name?", session_id=sid, max_tokens=24, temperature=0.0,
                     use_memory=False)
    assert "zorblax" in second["text"].lower(), second["text"]
    # The second prompt starts with the first turn, which the KV cache still holds.
    assert second["usage"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1
    hist = c.history(sid)
    assert [t["role"] for t in hist["turns"]] == ["user", "assistant", "user", "assistant"]
    assert hist["turns"][0]["content"].startswith("My name is Zorblax")
    c.close_session(sid)
    with pytest.raises(ClientError) as err:
        c.query("Still there?", session_id=sid)
    assert err.value.code == "not_found"


def test_unknown_session_is_not_found(daemon) -> None:
    with pytest.raises(ClientError) as err:
        daemon.client().query("hi", session_id="no-such-session")
    assert err.value.code == "not_found"


def test_health_answers_fast_during_long_generation(daemon) -> None:
    gen_client = daemon.client()
    probe = daemon.client(timeout_s=5)
    stream = gen_client.stream(LONG_PROMPT, max_tokens=200, temperature=0.0)
    it = iter(stream)
    next(it)  # generation is under way
    latencies = []
    tokens_between = 0
    for _ in range(10):
        t = time.perf_counter()
        h = probe.health()
        latencies.append((time.perf_counter() - t) * 1000)
        assert h["status"] in ("healthy", "degraded")
        for _ in range(3):
            next(it)
            tokens_between += 1
    rest = list(it)
    assert stream.result is not None
    assert stream.result["usage"]["completion_tokens"] == 200
    assert tokens_between + len(rest) > 0
    # The loop answers health inline; generation runs on a worker thread.
    assert statistics.median(latencies) < 100, latencies
    assert max(latencies) < 500, latencies


def test_bad_input_gets_error_replies_and_daemon_keeps_serving(daemon) -> None:
    c = daemon.client(timeout_s=10)

    c.send_raw(b"\xc1\xff garbage \x00\x01")
    r = c.recv_any(10)
    assert r["ok"] is False and r["error"]["code"] == "bad_request" and r["id"] is None

    c.send_raw(msgpack.packb([1, 2, 3]))
    r = c.recv_any(10)
    assert r["ok"] is False and r["error"]["code"] == "bad_request"
    assert "map" in r["error"]["message"]

    c.send_raw(msgpack.packb({"v": 1, "id": "no-op", "args": {}}))
    r = c.recv_any(10)
    assert r["ok"] is False and r["error"]["code"] == "bad_request" and r["id"] == "no-op"

    c.send_raw(msgpack.packb({"v": 1, "id": "unknown", "op": "fly", "args": {}}))
    r = c.recv_any(10)
    assert r["error"]["code"] == "unknown_op" and r["id"] == "unknown"

    c.send_raw(msgpack.packb({"v": 1, "id": "wrongtype", "op": "query", "args": {"query": 42}}))
    r = c.recv_any(10)
    assert r["error"]["code"] == "bad_request" and r["error"]["details"]["field"] == "args.query"
    assert "got int" in r["error"]["message"]

    big = msgpack.packb({"v": 1, "id": "huge", "op": "query",
                         "args": {"query": "x" * (10 * 1024 * 1024)}})
    c.send_raw(big)
    r = c.recv_any(30)
    assert r["ok"] is False and r["error"]["code"] == "too_large" and r["id"] == "huge"

    assert c.health()["status"] in ("healthy", "degraded")
    assert c.query("Say OK.", max_tokens=4)["text"] is not None
    malformed = c.stats()["malformed"]
    assert sum(malformed.values()) >= 5


def test_req_socket_gets_one_reply(daemon) -> None:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(daemon.endpoint)
    try:
        s.send(protocol.pack(protocol.make_request("r1", "health")))
        assert s.poll(5000)
        r = protocol.unpack_reply(s.recv())
        assert r["ok"] and r["id"] == "r1" and r["result"]["status"]
        s.send(protocol.pack(protocol.make_request("r2", "query", {"query": "hi", "stream": True})))
        assert s.poll(5000)
        r = protocol.unpack_reply(s.recv())
        assert r["ok"] is False and r["error"]["code"] == "bad_request"
    finally:
        s.close(0)


def test_cancel_stops_a_running_stream(daemon) -> None:
    c = daemon.client()
    stream = c.stream(LONG_PROMPT, max_tokens=400, temperature=0.0)
    it = iter(stream)
    for _ in range(3):
        next(it)
    # Envelope ids are scoped to their connection: another client cannot cancel by one.
    with pytest.raises(ClientError) as err:
        daemon.client(timeout_s=5).cancel(stream.id)
    assert err.value.code == "not_found"
    res = c.cancel(stream.id)
    assert res["cancelled"] is True and res["state"] == "running"
    with pytest.raises(ClientError) as err:
        for _ in it:
            pass
    assert err.value.code == "cancelled"
    assert stream.tokens < 100


def test_cancel_a_queued_request(start_daemon) -> None:
    d = start_daemon({"server": {"max_queue": 4}})
    a, b = d.client(), d.client()
    running = a.stream(LONG_PROMPT, max_tokens=300, temperature=0.0)
    it = iter(running)
    next(it)
    queued = b.stream("Say hi.", max_tokens=8)
    time.sleep(0.2)
    assert b.cancel(queued.id)["state"] == "queued"
    a.cancel(running.id)
    with pytest.raises(ClientError):
        list(it)
    with pytest.raises(ClientError) as err:
        list(queued)
    assert err.value.code == "cancelled"


def test_cancel_unknown_request_is_not_found(daemon) -> None:
    with pytest.raises(ClientError) as err:
        daemon.client().cancel("nothing-running")
    assert err.value.code == "not_found"


def test_max_latency_stops_generation_and_sets_truncated(daemon) -> None:
    c = daemon.client()
    res = c.query(LONG_PROMPT, max_tokens=400, temperature=0.0, max_latency_ms=400)
    assert res["truncated"] is True
    assert res["finish_reason"] == "deadline"
    # Stopped at the budget, not after its 400 tokens: on this CPU 0.4 s is a few dozen
    # tokens at most (a wall-clock bound failed under load: the model load counts too).
    assert res["usage"]["completion_tokens"] < 200, res["usage"]


def test_feedback_is_stored_and_unknown_request_refused(daemon) -> None:
    c = daemon.client()
    res = c.query("Give me one word.", max_tokens=4)
    fb = c.feedback(res["request_id"], rating=4)
    assert fb["stored"] is True and fb["feedback_id"] >= 1
    with pytest.raises(ClientError) as err:
        c.feedback("0" * 32, rating=2)
    assert err.value.code == "not_found"
    with pytest.raises(ClientError) as err:
        c.feedback(res["request_id"], rating=9)
    assert err.value.code == "bad_request"


def test_metrics_and_stats(daemon) -> None:
    c = daemon.client()
    res = c.query("Name a fruit.", max_tokens=8)
    text = c.metrics()
    gauge = [line for line in text.splitlines() if line.startswith("ruvllm_router_confidence ")]
    assert res["confidence"] is not None and gauge
    assert 0.0 < float(gauge[0].split()[1]) <= 1.0   # the RouterLowConfidence alert reads it
    assert "ruvllm_requests_total" in text
    assert "ruvllm_request_latency_seconds_bucket" in text
    assert "ruvllm_memory_usage_bytes" in text
    # The daemon's own scrape, parsed by prometheus_client: Prometheus naming conventions.
    from test_metrics import check_conventions
    assert check_conventions(text) == []
    stats = c.stats()
    assert stats["requests"] and stats["rss_mb"] > 0


def test_busy_when_queue_full(start_daemon) -> None:
    d = start_daemon({"server": {"max_queue": 1}})
    a, b, c = d.client(), d.client(), d.client(timeout_s=10)
    s1 = a.stream(LONG_PROMPT, max_tokens=300, temperature=0.0)
    it = iter(s1)
    next(it)                                     # s1 is running, the queue is empty
    s2 = b.stream("Say hi.", max_tokens=4)       # s2 waits in the queue (size 1)
    time.sleep(0.2)
    with pytest.raises(ClientError) as err:
        c.query("Write a poem about rain.", max_tokens=4)   # needs the model: gen is full
    assert err.value.code == "busy" and err.value.details["lane"] == "gen"
    # A question the memory answers (here: declines) needs no model: answered at once.
    assert c.query("And me?", max_tokens=4)["finish_reason"] == "declined"
    a.cancel(s1.id)
    with pytest.raises(ClientError):
        list(it)
    assert list(s2) is not None and s2.result is not None


def test_sigterm_drains_in_flight_request(start_daemon) -> None:
    d = start_daemon()
    c = d.client()
    result: dict = {}

    def ask() -> None:
        result["res"] = c.query("Say the word banana.", max_tokens=16, temperature=0.0)

    t = threading.Thread(target=ask)
    t.start()
    time.sleep(0.3)
    code = d.stop(timeout_s=60)
    t.join(30)
    assert code == 0, d.log()
    assert "res" in result and result["res"]["text"]
    assert not (d.data_dir / "ruvllm-edge.sock").exists()


def test_second_daemon_on_same_data_dir_is_refused(start_daemon) -> None:
    d = start_daemon()
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, "-m", "ruvllm_edge.cli", "serve", "--data-dir", str(d.data_dir),
         "--models-dir", str(d.models_dir), "--endpoint", f"ipc://{d.data_dir}/other.sock"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "another ruvllm-edge daemon" in proc.stderr
    assert Client(d.endpoint, timeout_s=5).health()["status"]
