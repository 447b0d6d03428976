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


@pytest.mark.parametrize("data, match, field", [
    (b"\xc1", "not valid msgpack", None),
    (enc([1, 2]), "must be a msgpack map, got array", None),
    (enc({"v": 1, "op": "health"}), "id: must be a str of 1..128 chars, got nil", "id"),
    (enc({"v": 1, "id": "", "op": "health"}), "got a str of 0 chars", "id"),
    (enc({"v": 1, "id": 7, "op": "health"}), "got int", "id"),
    (enc({"v": 2, "id": "x", "op": "health"}), "v: must be the int 1, got 2", "v"),
    (enc({"v": True, "id": "x", "op": "health"}), "v: must be the int 1, got bool", "v"),
    (enc({"id": "x", "op": "health"}), "v: must be the int 1, got nil", "v"),
    (enc({"v": 1, "id": "x"}), "op: must be a non-empty str, got nil", "op"),
    (enc({"v": 1, "id": "x", "op": ""}), "got an empty str", "op"),
    (enc({"v": 1, "id": "x", "op": "health", "args": []}), "args: must be a map", "args"),
    (enc({"v": 1, "id": "x", "op": "health", "args": None}), "got nil", "args"),
    (enc({"v": 1, "id": "x", "op": "health", "zz": 1, "extra": 1}), "unknown envelope field",
     "extra"),
    (enc({"v": 1, "id": "x" * 129, "op": "health"}), "got a str of 129 chars", "id"),
    (enc({"v": 1, "id": "x", "op": "health"}) + b"\x01", "more than one msgpack object", None),
    (enc({1: 2, "v": 1, "id": "x", "op": "health"}), "map keys must be str, got int", None),
    (enc({"v": 1, "id": "x", "op": "health", "args": {"a": {2: 1}}}), "map keys must be str",
     "args.a"),
])
def test_malformed_envelopes_are_bad_requests(data: bytes, match: str, field: str | None) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        decode(data)
    assert info.value.details.get("field") == field, info.value.details
    assert "NoneType" not in info.value.message and "list" not in info.value.message


def test_errors_after_a_valid_id_carry_it_and_the_reply_echoes_it() -> None:
    data = enc({"args": {"x" * 5000: 1}, "v": 1, "id": "late", "op": "health"})
    with pytest.raises(BadRequest) as info:
        decode(data)
    assert protocol.peek_id(data) is None            # beyond the peeked prefix...
    assert protocol.reply_id(info.value, data) == "late"   # ...but the parsed id is echoed
    with pytest.raises(BadRequest) as info:
        decode(enc({"v": 1, "id": "x" * 129, "op": "health"}))
    assert protocol.reply_id(info.value, b"") is None


@pytest.mark.parametrize("value", [msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0)])
def test_ext_types_are_refused_naming_the_field(value: object) -> None:
    with pytest.raises(BadRequest, match="ext types are not accepted") as info:
        decode(enc({"v": 1, "id": "x", "op": "memory.add",
                    "args": {"text": "t", "metadata": {"when": value}}}))
    assert info.value.details["field"] == "args.metadata.when"
    with pytest.raises(BadRequest, match="got ext") as info:
        decode(enc({"v": 1, "id": value, "op": "health"}))
    assert info.value.details["field"] == "id"


def test_deep_nesting_is_refused_naming_where() -> None:
    deep: object = 1
    for _ in range(20):
        deep = [deep]
    with pytest.raises(BadRequest, match="nests deeper") as info:
        decode(enc({"v": 1, "id": "x", "op": "health", "args": {"a": deep}}))
    assert info.value.details["field"].startswith("args.a[0]")
    ok: object = 1
    for _ in range(6):          # envelope + args + 6 = 8 levels: the limit, accepted up to
        ok = [ok]               # the schema check (health takes no args)
    with pytest.raises(BadRequest, match="unknown argument"):
        decode(enc({"v": 1, "id": "x", "op": "health", "args": {"a": ok}}))


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


@pytest.mark.parametrize("op, args, match, field", [
    ("query", {}, "args.query: required argument is missing", "args.query"),
    ("query", {"query": None}, "nil counts as missing", "args.query"),
    ("query", {"query": 5}, "args.query: expected str of 1..262144 chars, got int", "args.query"),
    ("query", {"query": ["a"]}, "got array", "args.query"),
    ("query", {"query": b"a"}, "got bin", "args.query"),
    ("query", {"query": ""}, "length 0", "args.query"),
    ("query", {"query": "a\x00b"}, "NUL", "args.query"),
    ("query", {"query": "hi", "stream": "yes"}, "args.stream: expected bool, got str",
     "args.stream"),
    ("query", {"query": "hi", "constraints": {"max_tokens": 0}}, "max_tokens: 0 is out of range",
     "args.constraints.max_tokens"),
    ("query", {"query": "hi", "constraints": {"temperature": float("nan")}}, "NaN",
     "args.constraints.temperature"),
    ("query", {"query": "hi", "constraints": {"top_p": 1.5}}, "top_p",
     "args.constraints.top_p"),
    ("query", {"query": "hi", "constraints": {"top_p": "1"}}, "expected num in", 
     "args.constraints.top_p"),
    ("query", {"query": "hi", "constraints": {"max_tokens": True}}, "expected int in .*got bool",
     "args.constraints.max_tokens"),
    ("query", {"query": "hi", "constraints": {"speed": 1}}, "unknown argument",
     "args.constraints.speed"),
    ("query", {"query": "hi", "constraints": None, "zz": 1, "bogus": 1}, "unknown argument",
     "args.bogus"),
    ("feedback", {"request_id": "r", "rating": 6}, "rating", "args.rating"),
    ("feedback", {"rating": 3}, "args.request_id: required", "args.request_id"),
    ("memory.add", {"text": "x", "kind": "query"}, "one of", "args.kind"),
    ("memory.add", {"text": "x", "metadata": {"k": [1]}}, "values must be .*got array",
     "args.metadata.k"),
    ("memory.add", {"text": "x", "metadata": {"k": float("inf")}}, "finite",
     "args.metadata.k"),
    ("memory.add", {"text": "x", "metadata": {"k": 2**64 - 1}}, "64-bit", "args.metadata.k"),
    ("memory.add", {"text": "x", "metadata": []}, "expected map", "args.metadata"),
    ("memory.get", {"id": "7"}, "expected int", "args.id"),
    ("memory.search", {"query": "x", "k": 1000}, "out of range", "args.k"),
])
def test_arg_schemas(op: str, args: dict, match: str, field: str) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        decode(req(op, args))
    assert info.value.details["field"] == field
    assert not any(py in info.value.message for py in ("NoneType", "list", "dict", "bytes"))


def test_nil_for_an_optional_argument_means_absent() -> None:
    r = decode(req("query", {"query": "hi", "stream": None, "constraints": None,
                             "session_id": None}))
    assert r.args == decode(req("query", {"query": "hi"})).args
    assert r.args["stream"] is False and "session_id" not in r.args
    assert decode(enc({"v": 1, "id": "x", "op": "backup"})).args == {}   # args left out


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
