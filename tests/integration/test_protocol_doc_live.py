"""docs/protocol.md against a running daemon, on raw sockets as a Node or C app would use them.

tests/test_protocol_doc.py compares the document's tables with the code; this
module checks, over the wire, what an app can only learn by talking to the
daemon: the rate limit's defaults and retry hint, `busy` on a shared queue,
when `id` is nil, `details.field` paths, duplicate in-flight ids, the first
token's `request_id`, the `cancelled` details, the result fields of `query`,
and the document's own Node example (when node and the example's
node_modules are there).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest
import zmq

from conftest import ROOT, DaemonProcess
from ruvllm_edge import protocol

pytestmark = pytest.mark.slow

DOC = (ROOT / "docs" / "protocol.md").read_text()
LONG_PROMPT = "Write a very long story about a dragon who learns to code. Use at least 600 words."
PY_NAMES = ("NoneType", "'list'", "dict", "bytes", "float", "Error", "Timestamp")


class Raw:
    """A raw DEALER (or REQ) socket: what examples/c and examples/node use."""

    def __init__(self, endpoint: str, kind: int = zmq.DEALER) -> None:
        self.sock = zmq.Context.instance().socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, msg: Any, *, raw: bool = False) -> None:
        self.sock.send(msg if raw else msgpack.packb(msg, use_bin_type=True))

    def recv(self, timeout_s: float = 30.0) -> dict[str, Any]:
        assert self.sock.poll(int(timeout_s * 1000)), "no reply"
        return protocol.unpack_reply(self.sock.recv_multipart()[-1])

    def ask(self, msg: Any, **kw: Any) -> dict[str, Any]:
        self.send(msg, **kw)
        return self.recv()

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def raw(daemon: DaemonProcess) -> Iterator[Raw]:
    r = Raw(daemon.endpoint)
    yield r
    r.close()


def doc_section(title: str) -> str:
    return DOC.split(f"\n{title}\n", 1)[1].split("\n#", 1)[0]


def documented_default(key: str) -> float:
    """A default from the document's "Limits and defaults" table."""
    for line in doc_section("## Limits and defaults").splitlines():
        if line.startswith(f"| `{key}` |"):
            return float(line.split("|")[2])
    raise AssertionError(f"{key} is not in the limits table")


def test_rate_limit_defaults_every_message_counts_and_retry_after(daemon: DaemonProcess) -> None:
    """Documented: the default burst and rate per connection, every message counts
    (malformed and health too), `rate_limited` carries `retry_after_ms`, and waiting
    that long is enough."""
    rate = documented_default("server.rate_limit_per_s")
    burst = int(documented_default("server.rate_limit_burst"))
    n = burst + 600
    r = Raw(daemon.endpoint)
    try:
        t0 = time.monotonic()
        for i in range(n):     # the cheapest messages: an op the daemon does not know
            r.send({"v": 1, "id": f"h{i}", "op": "no.such.op"})
        replies = [r.recv() for _ in range(n)]
        elapsed = time.monotonic() - t0
        limited = [x for x in replies if x["error"]["code"] == "rate_limited"]
        passed = [x for x in replies if x["error"]["code"] != "rate_limited"]
        assert {x["error"]["code"] for x in passed} == {"unknown_op"}
        assert burst <= len(passed) <= burst + rate * elapsed + 1, (len(passed), elapsed)
        # The flood outran the refill here unless the machine was very slow.
        assert limited or n <= burst + rate * elapsed + 1
        if not limited:
            return
        d = limited[0]["error"]["details"]
        assert d["burst"] == burst and d["rate_per_s"] == rate
        assert 0 < d["retry_after_ms"] <= math.ceil(1000 / rate) + 1    # about one token
        assert limited[-1]["id"].startswith("h")      # the id is echoed
        # Each refusal gets its own slot, 1/rate apart (tests/test_server.py checks the
        # slots; a flood that outlasts a slot is let through in part between refusals,
        # so here only the last hint is relied on): after it, every refused one passes.
        hints = [x["error"]["details"]["retry_after_ms"] for x in limited]
        assert all(h > 0 for h in hints), hints
        time.sleep(max(hints) / 1000)
        retried = [r.ask({"v": 1, "id": "re-" + x["id"], "op": "health"}) for x in limited]
        assert all(x["ok"] for x in retried), [x for x in retried if not x["ok"]][:3]
    finally:
        r.close()


def test_busy_on_a_full_shared_queue_with_its_retry_hint(daemon: DaemonProcess) -> None:
    """Memory reads queue on `fast` (max_queue, fast_workers running): pipelining far more
    than both at once meets `busy` naming the lane."""
    queue = int(documented_default("server.max_queue"))
    n = 2 * queue + int(documented_default("server.fast_workers"))
    r = Raw(daemon.endpoint)
    try:
        for i in range(n):
            r.send({"v": 1, "id": f"s{i}", "op": "memory.search", "args": {"query": f"cat {i}"}})
        replies = {x["id"]: x for x in (r.recv(timeout_s=120) for _ in range(n))}
        busy = [x for x in replies.values() if not x["ok"]]
        assert busy and {x["error"]["code"] for x in busy} == {"busy"}
        assert busy[0]["error"]["details"] == {"lane": "fast", "queue": queue,
                                               "retry_after_ms": 500}
        assert len(replies) - len(busy) >= queue
    finally:
        r.close()


def test_when_the_reply_id_is_nil(raw: Raw) -> None:
    cases = {
        "empty id": {"v": 1, "id": "", "op": "health"},
        "129 chars": {"v": 1, "id": "x" * 129, "op": "health"},
        "int id": {"v": 1, "id": 5, "op": "health"},
    }
    for name, msg in cases.items():
        r = raw.ask(msg)
        assert r["id"] is None and r["error"]["details"]["field"] == "id", (name, r)
    raw.sock.send_multipart([msgpack.packb({"v": 1, "id": "two", "op": "health"}), b"x"])
    r = raw.recv()
    assert r["id"] is None and r["error"]["code"] == "bad_request"
    assert "field" not in r["error"].get("details", {})
    r = raw.ask(b"\xc1", raw=True)
    assert r["id"] is None and r["error"]["code"] == "bad_request"
    # 128 characters is still an id
    assert raw.ask({"v": 1, "id": "y" * 128, "op": "health"})["id"] == "y" * 128


def test_too_large_echoes_an_id_packed_first(raw: Raw) -> None:
    big = "z" * (1_048_576 + 10)
    r = raw.ask({"v": 1, "id": "big", "op": "memory.add", "args": {"text": big}})
    assert r["error"]["code"] == "too_large" and r["id"] == "big"
    assert r["error"]["details"]["limit_bytes"] == 1_048_576
    assert r["error"]["details"]["size_bytes"] > 1_048_576
    r = raw.ask({"args": {"text": big}, "v": 1, "id": "late", "op": "memory.add"})
    assert r["error"]["code"] == "too_large" and r["id"] is None   # id packed after 1 MiB


@pytest.mark.parametrize("msg, field", [
    ({"v": 1, "id": "f", "op": "health", "extra": 1}, "extra"),
    ({"v": 2, "id": "f", "op": "health"}, "v"),
    ({"id": "f", "op": "health"}, "v"),
    ({"v": 1, "id": "f", "op": 3}, "op"),
    ({"v": 1, "id": "f", "op": "health", "args": None}, "args"),
    ({"v": 1, "id": "f", "op": "health", "args": {"x": 1}}, "args.x"),
    ({"v": 1, "id": "f", "op": "query", "args": {}}, "args.query"),
    ({"v": 1, "id": "f", "op": "query", "args": {"query": None}}, "args.query"),
    ({"v": 1, "id": "f", "op": "query", "args": {"query": ["q"]}}, "args.query"),
    ({"v": 1, "id": "f", "op": "query", "args": {"query": "q", "constraints": {"fast": 1}}},
     "args.constraints.fast"),
    ({"v": 1, "id": "f", "op": "query", "args": {"query": "q",
                                                 "constraints": {"max_tokens": "9"}}},
     "args.constraints.max_tokens"),
    ({"v": 1, "id": "f", "op": "memory.add",
      "args": {"text": "t", "metadata": {"when": msgpack.Timestamp(1_700_000_000, 0)}}},
     "args.metadata.when"),
    ({"v": 1, "id": "f", "op": "backup", "args": {"to": "relative/dir"}}, "args.to"),
])
def test_every_bad_request_names_its_field_in_protocol_type_names(raw: Raw, msg: dict,
                                                                  field: str) -> None:
    r = raw.ask(msg)
    assert r["ok"] is False and r["error"]["code"] == "bad_request", r
    assert r["id"] == "f"
    assert r["error"]["details"]["field"] == field, r
    assert not any(p in r["error"]["message"] for p in PY_NAMES), r


def test_unknown_op_names_the_field_and_the_known_ops(raw: Raw) -> None:
    r = raw.ask({"v": 1, "id": "u", "op": "teleport"})
    assert r["error"]["code"] == "unknown_op"
    assert r["error"]["details"]["field"] == "op" and "query" in r["error"]["details"]["known"]


def test_stream_on_a_req_socket_names_args_stream(daemon: DaemonProcess) -> None:
    r = Raw(daemon.endpoint, zmq.REQ)
    try:
        reply = r.ask({"v": 1, "id": "rq", "op": "query", "args": {"query": "hi", "stream": True}})
        assert reply["error"]["details"]["field"] == "args.stream"
    finally:
        r.close()


def test_first_token_request_id_duplicate_ids_and_cancelled_details(raw: Raw) -> None:
    raw.send({"v": 1, "id": "dup", "op": "query",
              "args": {"query": LONG_PROMPT, "stream": True,
                       "constraints": {"max_tokens": 400, "temperature": 0.0}}})
    first = raw.recv(120)
    assert first["event"] == "token" and first["seq"] == 0
    request_id = first["request_id"]
    # The same id again while the first is in flight: refused, and the stream goes on.
    raw.send({"v": 1, "id": "dup", "op": "memory.stats"})
    seen: list[dict[str, Any]] = []
    while True:
        m = raw.recv(60)
        if m.get("event") == "token":
            assert "request_id" not in m and m["seq"] >= 1
            continue
        seen.append(m)
        break
    refused = seen[0]
    assert refused["id"] == "dup" and refused["ok"] is False
    assert refused["error"]["code"] == "bad_request"
    assert refused["error"]["details"] == {"field": "id", "in_flight": True}
    raw.send({"v": 1, "id": "c1", "op": "cancel", "args": {"request_id": request_id}})
    final = None
    cancel_reply = None
    while final is None:
        m = raw.recv(60)
        if m["id"] == "c1":
            cancel_reply = m
        elif "ok" in m:
            final = m
    assert cancel_reply is not None or raw.recv(10)["id"] == "c1"
    assert final["ok"] is False and final["error"]["code"] == "cancelled"
    details = final["error"]["details"]
    assert details["request_id"] == request_id and details["completion_tokens"] >= 1
    # Finished: the id is free again.
    assert raw.ask({"v": 1, "id": "dup", "op": "health"})["ok"] is True


def documented_keys(bullet_start: str, stop: str) -> set[str]:
    text = DOC.split(bullet_start, 1)[1].split(stop, 1)[0]
    return {t for t in re.findall(r"`([a-z_]+)`", text)}


def test_query_result_fields_are_the_documented_ones(daemon: DaemonProcess) -> None:
    c = daemon.client()
    res = c.query("What is the capital of France?", max_tokens=8, temperature=0.0)
    routing = documented_keys("- `routing_info` keys:", "There is no single")
    assert set(res["routing_info"]) == routing, set(res["routing_info"]) ^ routing
    result_block = doc_section("### `query`").split("Result:\n```", 1)[1].split("```", 1)[0]
    top = set(re.findall(r'^ ?[{ ]"([a-z_]+)":', result_block, re.M))
    assert set(res) <= top and top - set(res) <= {"session_id"}, (set(res), top)
    reasons = set(re.findall(r'"([a-z]+)"', result_block.split('"finish_reason":', 1)[1]
                             .split("\n", 1)[0]))
    assert res["finish_reason"] in reasons
    assert {"stop", "length", "deadline", "memory", "declined"} <= reasons
    assert set(res["usage"]) == {"prompt_tokens", "completion_tokens", "cached_tokens"}
    assert set(res["latency_ms"]) == {"total", "embedding", "retrieval", "routing", "generation"}
    context_doc = set(re.findall(r'"([a-z_]+)"', result_block.split('"context":', 1)[1]
                                 .split("}", 1)[0]))
    assert set(res["context"]) <= context_doc, set(res["context"]) - context_doc
    # cached_tokens outside a session: the shared system prompt is reused (documented)
    again = c.query("What is the capital of Spain?", max_tokens=8, temperature=0.0)
    assert again["usage"]["cached_tokens"] > 0


def test_session_times_are_unix_seconds(daemon: DaemonProcess) -> None:
    c = daemon.client()
    sid = c.new_session()
    c.query("Say hi.", session_id=sid, max_tokens=4)
    h = c.history(sid)
    now = time.time()
    assert isinstance(h["created_at"], float) and now - 600 < h["created_at"] <= now
    assert all(isinstance(t["created_at"], float) for t in h["turns"])


def test_the_documents_node_example_runs(daemon: DaemonProcess) -> None:
    node_dir = ROOT / "examples" / "node"
    if shutil.which("node") is None:
        pytest.skip("node not found")
    if not (node_dir / "node_modules" / "zeromq").is_dir():
        pytest.skip("examples/node/node_modules is not installed (tests/integration/"
                    "test_examples.py runs npm ci)")
    block = DOC.split("```js", 1)[1].split("```", 1)[0]
    script = node_dir / f".doc-example-{uuid.uuid4().hex}.mjs"
    script.write_text(block)
    try:
        proc = subprocess.run(["node", str(script)], cwd=node_dir, capture_output=True,
                              text=True, timeout=300,
                              env=dict(os.environ, RUVLLM_EDGE_ENDPOINT=daemon.endpoint))
    finally:
        script.unlink()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\[(stop|length|deadline|memory|declined)\]", proc.stdout), proc.stdout
