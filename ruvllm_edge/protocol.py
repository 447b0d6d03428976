"""The wire protocol: one msgpack map per ZeroMQ message (docs/protocol.md).

Everything that touches raw bytes from a client lives here: unpacking with hard
limits, envelope checks, the argument-schema language (``Arg``) and its checker,
and reply construction. The server only ever sees a validated ``Request`` or a
``RuvError`` to send back, so an app written in C or Node against
docs/protocol.md sees exactly the behaviour described there.

Which ops exist and what arguments each takes is not listed here: every op
declares its own schema next to its code (``server/ops/``), and the server
passes the table derived from them to ``decode_request``. This module stays
wire-only and imports nothing from the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import msgpack

from .errors import BadRequest, TooLarge, UnknownOp

VERSION = 1
MAX_ID_CHARS = 128
# Limits given to the msgpack unpacker: no single string, array or map inside a
# request may exceed these, whatever the message size limit is.
MAX_STR_BYTES = 16 * 1_048_576
MAX_ARRAY_LEN = 10_000
MAX_MAP_LEN = 1_000
MAX_DEPTH = 8


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    args: dict[str, Any]


# --------------------------------------------------------------------------
# Encoding


def pack(obj: Mapping[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack_reply(data: bytes) -> dict[str, Any]:
    """Client side: replies come from our own daemon, but stay bounded anyway."""
    obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(obj, dict):
        raise ValueError("reply is not a map")
    return obj


def ok_reply(req_id: str | None, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": True, "result": dict(result)}


def error_reply(req_id: str | None, error: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": False, "error": dict(error)}


def token_event(req_id: str, seq: int, text: str) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "event": "token", "seq": seq, "text": text}


def done_event(req_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": True, "event": "done", "result": dict(result)}


def make_request(req_id: str, op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "op": op, "args": dict(args or {})}


# --------------------------------------------------------------------------
# Decoding


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth, stopping early once the limit is passed."""
    if limit < 0:
        return 1
    if isinstance(obj, dict):
        return 1 + max((_depth(v, limit - 1) for v in obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max((_depth(v, limit - 1) for v in obj), default=0)
    return 0


def peek_id(data: bytes, prefix_bytes: int = 4096) -> str | None:
    """Best-effort read of the "id" field from the start of a message.

    Used for messages we refuse to parse (too large) or that fail to parse
    later on, so that the client can still match the error to its request.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=prefix_bytes + 1, max_ext_len=0,
                                max_str_len=prefix_bytes, max_bin_len=prefix_bytes,
                                max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN)
    unpacker.feed(data[:prefix_bytes])
    try:
        n = unpacker.read_map_header()
        for _ in range(min(n, 8)):
            key = unpacker.unpack()
            if key == "id":
                value = unpacker.unpack()
                return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS else None
            unpacker.skip()
    except Exception:  # noqa: BLE001 - any failure just means "no id readable"
        return None
    return None


Schemas = Mapping[str, Mapping[str, "Arg"]]   # op name -> argument name -> Arg


def decode_request(data: bytes, max_message_bytes: int, schemas: Schemas) -> Request:
    """Bytes -> validated envelope. Raises BadRequest/TooLarge/UnknownOp.

    ``schemas`` is the op table (``server.ops.SCHEMAS``); arguments are checked
    against it here too, so handlers receive clean data.
    """
    if len(data) > max_message_bytes:
        raise TooLarge(f"message of {len(data)} bytes exceeds the limit of {max_message_bytes}",
                       limit_bytes=max_message_bytes, size_bytes=len(data))
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_str_len=MAX_STR_BYTES, max_bin_len=MAX_STR_BYTES, max_array_len=MAX_ARRAY_LEN,
            max_map_len=MAX_MAP_LEN, max_ext_len=0)
    except msgpack.ExtraData:
        raise BadRequest("message holds more than one msgpack object") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise BadRequest(f"message is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"message must be a msgpack map, got {type(obj).__name__}")
    if _depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise BadRequest(f"message nests deeper than {MAX_DEPTH} levels")
    req_id = obj.get("id")
    if not isinstance(req_id, str) or not 0 < len(req_id) <= MAX_ID_CHARS:
        raise BadRequest(f"'id' must be a string of 1..{MAX_ID_CHARS} characters")
    v = obj.get("v")
    if v != VERSION or isinstance(v, bool):
        raise BadRequest(f"'v' must be {VERSION}, got {v!r}")
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        raise BadRequest("'op' must be a non-empty string")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest(f"'args' must be a map, got {type(args).__name__}")
    extra = set(obj) - {"v", "id", "op", "args"}
    if extra:
        raise BadRequest(f"unknown envelope fields: {', '.join(sorted(map(str, extra)))}")
    schema = schemas.get(op)
    if schema is None:
        raise UnknownOp(f"unknown op {op!r}", known=sorted(schemas))
    return Request(req_id, op, check_args(op, args, schema))


# --------------------------------------------------------------------------
# Argument schemas


@dataclass(frozen=True)
class Arg:
    """One argument: its type, whether it is required and its allowed range."""

    type: type | tuple[type, ...]
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    max_len: int | None = None
    min_len: int = 0
    choices: tuple[Any, ...] | None = None
    fields: Mapping[str, "Arg"] | None = None  # for nested maps with a schema
    default: Any = None

    def describe(self) -> str:
        names = self.type if isinstance(self.type, tuple) else (self.type,)
        s = "|".join(_TYPE_NAMES.get(t, t.__name__) for t in names)
        if self.choices:
            s += " one of " + ", ".join(map(repr, self.choices))
        if self.lo is not None or self.hi is not None:
            s += f" in [{self.lo}, {self.hi}]"
        if self.max_len is not None:
            s += f" of {self.min_len}..{self.max_len} {'chars' if self.type is str else 'items'}"
        return s


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "map",
               list: "array"}

NUM = (int, float)
TEXT_MAX = 262_144  # 256 KiB of text per field; memory.add chunks long documents
ID = Arg(str, required=True, min_len=1, max_len=MAX_ID_CHARS)


def _type_ok(value: Any, want: type | tuple[type, ...]) -> bool:
    wants = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool):
        return bool in wants
    return isinstance(value, wants)


def _check_one(path: str, value: Any, spec: Arg) -> Any:
    if not _type_ok(value, spec.type):
        raise BadRequest(f"{path}: expected {spec.describe()}, got {type(value).__name__}",
                         field=path)
    if spec.choices is not None and value not in spec.choices:
        raise BadRequest(f"{path}: {value!r} is not {spec.describe()}", field=path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:  # NaN
            raise BadRequest(f"{path}: NaN is not allowed", field=path)
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            raise BadRequest(f"{path}: {value!r} is out of range, expected {spec.describe()}",
                             field=path)
    if isinstance(value, (str, list, dict)) and spec.max_len is not None:
        if not spec.min_len <= len(value) <= spec.max_len:
            raise BadRequest(f"{path}: length {len(value)} is outside {spec.min_len}..{spec.max_len}",
                             field=path)
    if isinstance(value, str) and "\x00" in value:
        raise BadRequest(f"{path}: NUL characters are not allowed", field=path)
    if isinstance(value, dict) and spec.fields is not None:
        return check_args(path, value, spec.fields)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > 64:
                raise BadRequest(f"{path}: keys must be strings of at most 64 characters", field=path)
            if not isinstance(v, (str, int, float, bool)) or (isinstance(v, str) and len(v) > 1024):
                raise BadRequest(f"{path}.{k}: values must be scalars (strings up to 1024 chars)",
                                 field=f"{path}.{k}")
    return value


def check_args(op: str, args: Mapping[str, Any], schema: Mapping[str, Arg]) -> dict[str, Any]:
    """Validate args against a schema; unknown keys are refused, not ignored."""
    unknown = set(args) - set(schema)
    if unknown:
        raise BadRequest(f"{op}: unknown argument(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"allowed: {', '.join(schema) or 'none'}")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        path = f"{op}.{name}"
        if name not in args or args[name] is None:
            if spec.required:
                raise BadRequest(f"{path}: required argument is missing", field=path)
            if spec.default is not None:
                out[name] = spec.default
            continue
        out[name] = _check_one(path, args[name], spec)
    return out
