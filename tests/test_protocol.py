"""Wire protocol: decoding limits, envelope checks and per-op argument schemas."""

from __future__ import annotations

import msgpack
import pytest

from ruvllm_edge import protocol
from ruvllm_edge.errors import BadRequest, TooLarge, UnknownOp
from ruvllm_edge.server.ops import SCHEMAS

LIMIT = 1_048_576


def enc(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(data: bytes) -> protocol.Request:
    return protocol.decode_request(data, LIMIT, SCHEMAS)


def req(op: str, args: dict | None = None, **extra: object) -> bytes:
    return enc({"v": 1, "id": "a1", "op": op, "args": args or {}, **extra})


def test_valid_request_round_trip() -> None:
    r = decode(req("query", {"query": "hi", "constraints": {"max_tokens": 5}}))
    assert r.id == "a1" and r.op == "query"
    assert r.args["query"] == "hi" and r.args["constraints"] == {"max_tokens": 5}
    assert r.args["stream"] is False  # defaults are filled in


@pytest.mark.parametrize("data, match", [
    (b"\xc1", "not valid msgpack"),
    (enc([1, 2]), "must be a msgpack map"),
    (enc({"v": 1, "op": "health"}), "'id' must be a string"),
    (enc({"v": 2, "id": "x", "op": "health"}), "'v' must be 1"),
    (enc({"v": True, "id": "x", "op": "health"}), "'v' must be 1"),
    (enc({"v": 1, "id": "x"}), "'op' must be a non-empty string"),
    (enc({"v": 1, "id": "x", "op": "health", "args": []}), "'args' must be a map"),
    (enc({"v": 1, "id": "x", "op": "health", "extra": 1}), "unknown envelope fields"),
    (enc({"v": 1, "id": "x" * 200, "op": "health"}), "'id' must be a string"),
    (enc({"v": 1, "id": "x", "op": "health"}) + b"\x01", "more than one msgpack object"),
    (enc({1: 2}), "not valid msgpack"),
])
def test_malformed_envelopes_are_bad_requests(data: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        decode(data)


def test_ext_types_and_deep_nesting_are_refused() -> None:
    with pytest.raises(BadRequest):
        decode(enc({"v": 1, "id": "x", "op": "health",
                                     "args": {"a": msgpack.ExtType(1, b"x")}}))
    deep: object = 1
    for _ in range(20):
        deep = [deep]
    with pytest.raises(BadRequest, match="nests deeper"):
        decode(enc({"v": 1, "id": "x", "op": "health", "args": {"a": deep}}))


def test_huge_declared_lengths_do_not_allocate() -> None:
    # A map header claiming 2**32-1 entries, then nothing.
    with pytest.raises(BadRequest):
        decode(b"\xdf\xff\xff\xff\xff")
    with pytest.raises(BadRequest):
        decode(b"\xdb\xff\xff\xff\xff" + b"a" * 10)


def test_oversized_message_is_too_large_and_id_is_peeked() -> None:
    data = enc({"v": 1, "id": "big", "op": "query", "args": {"query": "x" * (LIMIT + 10)}})
    with pytest.raises(TooLarge):
        decode(data)
    assert protocol.peek_id(data) == "big"
    assert protocol.peek_id(b"\xc1garbage") is None
    assert protocol.peek_id(enc({"v": 1, "id": 5})) is None


def test_unknown_op() -> None:
    with pytest.raises(UnknownOp):
        decode(req("teleport"))


@pytest.mark.parametrize("op, args, match", [
    ("query", {}, "query.query: required"),
    ("query", {"query": 5}, "query.query: expected string"),
    ("query", {"query": ""}, "length 0"),
    ("query", {"query": "a\x00b"}, "NUL"),
    ("query", {"query": "hi", "stream": "yes"}, "query.stream: expected boolean"),
    ("query", {"query": "hi", "constraints": {"max_tokens": 0}}, "max_tokens: 0 is out of range"),
    ("query", {"query": "hi", "constraints": {"temperature": float("nan")}}, "NaN"),
    ("query", {"query": "hi", "constraints": {"top_p": 1.5}}, "top_p"),
    ("query", {"query": "hi", "constraints": {"max_tokens": True}}, "expected integer"),
    ("query", {"query": "hi", "constraints": {"speed": 1}}, "unknown argument"),
    ("query", {"query": "hi", "bogus": 1}, "unknown argument"),
    ("feedback", {"request_id": "r", "rating": 6}, "rating"),
    ("feedback", {"rating": 3}, "request_id: required"),
    ("memory.add", {"text": "x", "kind": "query"}, "one of"),
    ("memory.add", {"text": "x", "metadata": {"k": [1]}}, "values must be scalars"),
    ("memory.get", {"id": "7"}, "expected integer"),
    ("memory.search", {"query": "x", "k": 1000}, "out of range"),
])
def test_arg_schemas(op: str, args: dict, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        decode(req(op, args))


def test_every_schema_op_is_documented() -> None:
    from pathlib import Path
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    for op in SCHEMAS:
        assert f"`{op}`" in doc, op


def test_replies_have_ok_and_result_or_error() -> None:
    ok = protocol.ok_reply("1", {"x": 1})
    err = protocol.error_reply(None, {"code": "bad_request", "message": "m"})
    assert ok["ok"] is True and "result" in ok and "error" not in ok
    assert err["ok"] is False and "error" in err and "result" not in err
    done = protocol.done_event("1", {"text": "t"})
    assert done["ok"] is True and done["event"] == "done"
    assert protocol.unpack_reply(protocol.pack(ok)) == ok


def test_error_codes_are_the_stable_documented_set() -> None:
    from pathlib import Path
    from ruvllm_edge import errors
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.RuvError)}
    assert codes <= set(errors.CODES)
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    for code in errors.CODES:
        assert f"| `{code}` |" in doc, code
