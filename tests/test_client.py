"""Client behaviour that needs no daemon: typed timeouts, endpoint resolution, stale replies."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
import zmq

from ruvllm_edge import protocol
from ruvllm_edge.client import Client, default_endpoint
from ruvllm_edge.errors import ClientError, ClientTimeout


def test_timeout_raises_a_typed_error(tmp_path: Path) -> None:
    with Client(f"ipc://{tmp_path}/nobody.sock", timeout_s=0.2) as c:
        with pytest.raises(ClientTimeout) as err:
            c.health()
    assert err.value.code == "timeout" and isinstance(err.value, ClientError)


def test_default_endpoint_follows_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUVLLM_EDGE_ENDPOINT", raising=False)
    monkeypatch.setenv("RUVLLM_EDGE_DATA", str(tmp_path))
    assert default_endpoint() == f"ipc://{tmp_path}/ruvllm-edge.sock"
    monkeypatch.setenv("RUVLLM_EDGE_ENDPOINT", "tcp://127.0.0.1:9")
    assert default_endpoint() == "tcp://127.0.0.1:9"


def test_stale_replies_are_skipped_and_errors_typed(tmp_path: Path) -> None:
    """A tiny ROUTER that first answers a stale id, then the real one with an error."""
    ep = f"ipc://{tmp_path}/s.sock"
    ctx = zmq.Context.instance()
    srv = ctx.socket(zmq.ROUTER)
    srv.bind(ep)

    def serve() -> None:
        ident, data = srv.recv_multipart()
        req = protocol.unpack_reply(data)
        srv.send_multipart([ident, protocol.pack(protocol.ok_reply("stale-1", {"x": 1}))])
        srv.send_multipart([ident, protocol.pack(protocol.error_reply(
            req["id"], {"code": "busy", "message": "full", "details": {"queue": 1}}))])

    t = threading.Thread(target=serve)
    t.start()
    with Client(ep, timeout_s=5) as c:
        with pytest.raises(ClientError) as err:
            c.stats()
    t.join()
    srv.close(0)
    assert err.value.code == "busy" and err.value.details == {"queue": 1}


def test_call_reaches_any_op_by_name_with_keyword_args(tmp_path: Path) -> None:
    """The generic path: an op the client has no method for needs no client change."""
    ep = f"ipc://{tmp_path}/s.sock"
    srv = zmq.Context.instance().socket(zmq.ROUTER)
    srv.bind(ep)
    seen: list[dict] = []

    def serve() -> None:
        for _ in range(2):
            ident, data = srv.recv_multipart()
            req = protocol.unpack_reply(data)
            seen.append(req)
            srv.send_multipart([ident, protocol.pack(protocol.ok_reply(req["id"], req["args"]))])

    t = threading.Thread(target=serve)
    t.start()
    with Client(ep, timeout_s=5) as c:
        assert c.call("memory.tag", id=7, tag="blue") == {"id": 7, "tag": "blue"}
        assert c.call("memory.tag", {"id": 8}, tag="red", timeout_s=5) == {"id": 8, "tag": "red"}
    t.join()
    srv.close(0)
    assert [r["op"] for r in seen] == ["memory.tag", "memory.tag"]


def test_finished_failed_and_dropped_streams_leave_nothing_pending(tmp_path: Path) -> None:
    """Client._pending holds a backlog per open stream only: done, error or dropped, it goes."""
    ep = f"ipc://{tmp_path}/s.sock"
    srv = zmq.Context.instance().socket(zmq.ROUTER)
    srv.bind(ep)

    def serve() -> None:
        for n in range(3):
            ident, data = srv.recv_multipart()
            rid = protocol.unpack_reply(data)["id"]
            for seq in range(2):
                srv.send_multipart([ident, protocol.pack(protocol.token_event(rid, seq, "x"))])
            end = (protocol.done_event(rid, {"text": "xx"}) if n != 1 else
                   protocol.error_reply(rid, {"code": "cancelled", "message": "stop"}))
            srv.send_multipart([ident, protocol.pack(end)])

    t = threading.Thread(target=serve)
    t.start()
    with Client(ep, timeout_s=5) as c:
        done = c.stream("a")
        assert list(done) == ["x", "x"] and done.result == {"text": "xx"}
        assert c._pending == {}
        failed = c.stream("b")
        with pytest.raises(ClientError) as err:
            list(failed)
        assert err.value.code == "cancelled" and c._pending == {}
        dropped = c.stream("c")
        assert next(iter(dropped)) == "x"
        del dropped
        gc.collect()
        assert c._pending == {}
    t.join()
    srv.close(0)


class RecordingClient(Client):
    """A client whose memory.add requests are answered locally: one id list per item,
    the same id for the same text (as the daemon's dedup does)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(f"ipc://{tmp_path}/none.sock", timeout_s=1)
        self.requests: list[dict] = []
        self.ids: dict[str, int] = {}

    def call(self, op: str, args: dict | None = None, /, **kw: object) -> dict:  # type: ignore[override]
        assert op == "memory.add"
        self.requests.append(dict(args or {}))
        return {"ids": [[self.ids.setdefault(it["text"], len(self.ids) + 1)] for it in args["items"]]}


def test_add_many_splits_requests_and_keeps_a_link_chain_unbroken(tmp_path: Path) -> None:
    c = RecordingClient(tmp_path)
    try:
        texts = [f"turn {i}" for i in range(20)]
        ids = c.memory_add_many(texts, link=True, batch=7, metadata={"conv": "a"})
        assert ids == [[i + 1] for i in range(20)]                 # one list per item, in order
        sent = [[it["text"] for it in r["items"]] for r in c.requests]
        assert all(len(s) <= 7 for s in sent) and all(r["link"] and r["metadata"] == {"conv": "a"}
                                                      for r in c.requests)
        for prev, nxt in zip(sent, sent[1:]):
            assert nxt[0] == prev[-1]                             # each request repeats the last item
        assert sorted({t for s in sent for t in s}) == sorted(texts)
        c.requests.clear()
        big = ["x" * 300_000, "y" * 300_000, "z" * 300_000]      # under the 1 MiB message limit each
        assert len(c.memory_add_many(big)) == 3
        assert [len(r["items"]) for r in c.requests] == [2, 1]
        c.requests.clear()
        c.memory_add_many(["a", "b", "c"], batch=1, link=True)   # batch 1 with link still progresses
        assert [[it["text"] for it in r["items"]] for r in c.requests] == [["a"], ["a", "b"], ["b", "c"]]
    finally:
        c.close()
