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

import math
from dataclasses import dataclass
from typing import Any, Mapping

import msgpack

from .errors import BadRequest, RuvError, TooLarge, UnknownOp

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


def token_event(req_id: str, seq: int, text: str,
                request_id: str | None = None) -> dict[str, Any]:
    """One streamed piece; the first (``seq`` 0) also carries the server ``request_id``,
    so a client can cancel or rate the answer before it is done."""
    ev = {"v": VERSION, "id": req_id, "event": "token", "seq": seq, "text": text}
    if request_id is not None:
        ev["request_id"] = request_id
    return ev


def done_event(req_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": True, "event": "done", "result": dict(result)}


def make_request(req_id: str, op: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "op": op, "args": dict(args or {})}


# --------------------------------------------------------------------------
# Decoding

# The protocol's own names for msgpack types (docs/protocol.md, "Types"). Error
# messages use these, never Python's, so a C or Node programmer can read them.
WIRE_TYPES = ("nil", "bool", "int", "num", "str", "bin", "array", "map", "ext")


class Ext:
    """A msgpack ext value (any type code, e.g. a JS Date): decoded only to be refused by name."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code


def _ext_hook(code: int, data: bytes) -> Ext:
    return Ext(code)


def wire_type(value: Any) -> str:
    """The protocol type name of a decoded value (``nil``, ``int``, ``map`` ...)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bytes, bytearray)):
        return "bin"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "map"
    return "ext"   # Ext, msgpack.Timestamp (ext -1)


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_tree(obj: Any, path: str, depth: int) -> None:
    """Depth, ext values and map keys, naming the first offending field.

    Stops as soon as ``depth`` passes MAX_DEPTH, so a hostile nesting costs
    at most MAX_DEPTH levels of recursion here.
    """
    if isinstance(obj, (dict, list)) and depth >= MAX_DEPTH:
        raise BadRequest(f"{path or 'message'}: nests deeper than {MAX_DEPTH} levels",
                         **({"field": path} if path else {}))
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise BadRequest(f"{path or 'message'}: map keys must be str, got {wire_type(k)}",
                                 **({"field": path} if path else {}))
            _check_tree(v, _child(path, k), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_tree(v, _child(path, i), depth + 1)
    elif wire_type(obj) == "ext":
        raise BadRequest(f"{path}: ext types are not accepted (send a str or a num instead)",
                         field=path)


def peek_id(data: bytes, prefix_bytes: int = 4096) -> str | None:
    """Best-effort read of the "id" field from the start of a message.

    Used for messages we refuse to parse (too large, rate limited): the id is
    found when it is among the first 8 keys and within the first
    ``prefix_bytes`` bytes, which it is for every client that packs the
    envelope in the documented order (v, id, op, args).
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


def reply_id(exc: BaseException, data: bytes) -> str | None:
    """The id to put in the error reply for a message ``decode_request`` refused."""
    known = getattr(exc, "req_id", None)
    return known if known is not None else peek_id(data)


Schemas = Mapping[str, Mapping[str, "Arg"]]   # op name -> argument name -> Arg
ENVELOPE = ("v", "id", "op", "args")


def decode_request(data: bytes, max_message_bytes: int, schemas: Schemas) -> Request:
    """Bytes -> validated envelope. Raises BadRequest/TooLarge/UnknownOp.

    ``schemas`` is the op table (``server.ops.SCHEMAS``); arguments are checked
    against it here too, so handlers receive clean data. Once the id has been
    read and found valid, the raised error carries it as ``req_id`` (see
    ``reply_id``), so every later refusal is matched to its request.
    """
    if len(data) > max_message_bytes:
        raise TooLarge(f"message of {len(data)} bytes exceeds the limit of {max_message_bytes}",
                       limit_bytes=max_message_bytes, size_bytes=len(data))
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=False, max_str_len=MAX_STR_BYTES,
            max_bin_len=MAX_STR_BYTES, max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN,
            max_ext_len=MAX_STR_BYTES, ext_hook=_ext_hook)
    except msgpack.ExtraData:
        raise BadRequest("message holds more than one msgpack object") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        reason = "a map key is an array or a map" if isinstance(exc, TypeError) else \
            "truncated, or not msgpack"
        raise BadRequest(f"message is not valid msgpack ({reason})") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"message must be a msgpack map, got {wire_type(obj)}")
    req_id = obj.get("id")
    if not isinstance(req_id, str) or not 0 < len(req_id) <= MAX_ID_CHARS:
        got = f"a str of {len(req_id)} chars" if isinstance(req_id, str) else wire_type(req_id)
        raise BadRequest(f"id: must be a str of 1..{MAX_ID_CHARS} chars, got {got}", field="id")
    try:
        return _decode_envelope(obj, req_id, schemas)
    except RuvError as exc:
        exc.req_id = req_id   # type: ignore[attr-defined]
        raise


def _decode_envelope(obj: dict[Any, Any], req_id: str, schemas: Schemas) -> Request:
    _check_tree(obj, "", 0)
    extra = sorted(str(k) for k in obj if k not in ENVELOPE)
    if extra:
        raise BadRequest(f"unknown envelope field(s): {', '.join(extra)}; allowed: "
                         f"{', '.join(ENVELOPE)}", field=extra[0], unknown=extra)
    v = obj.get("v")
    if v != VERSION or isinstance(v, bool):
        got = repr(v) if isinstance(v, int) and not isinstance(v, bool) else wire_type(v)
        raise BadRequest(f"v: must be the int {VERSION}, got {got}", field="v")
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        raise BadRequest(f"op: must be a non-empty str, got "
                         f"{'an empty str' if op == '' else wire_type(op)}", field="op")
    if "args" in obj and not isinstance(obj["args"], dict):
        raise BadRequest(f"args: must be a map (or left out), got {wire_type(obj['args'])}",
                         field="args")
    args = obj.get("args", {})
    schema = schemas.get(op)
    if schema is None:
        raise UnknownOp(f"unknown op {op!r}", field="op", known=sorted(schemas))
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

    def type_name(self) -> str:
        """``str``, ``int``, ``num`` (int or float), ``bool``, ``map`` or ``array``."""
        names = self.type if isinstance(self.type, tuple) else (self.type,)
        if set(names) == {int, float}:
            return "num"
        return "|".join(TYPE_NAMES[t] for t in names)

    def describe(self) -> str:
        s = self.type_name()
        if self.choices:
            s += " one of " + ", ".join(map(repr, self.choices))
        if self.lo is not None or self.hi is not None:
            s += f" in [{self.lo}, {self.hi}]"
        if self.max_len is not None:
            s += f" of {self.min_len}..{self.max_len} {'chars' if self.type is str else 'items'}"
        return s


TYPE_NAMES = {str: "str", int: "int", float: "num", bool: "bool", dict: "map", list: "array"}

NUM = (int, float)
TEXT_MAX = 262_144  # 256 KiB of text per field; memory.add chunks long documents
ID = Arg(str, required=True, min_len=1, max_len=MAX_ID_CHARS)
METADATA_KEY_MAX = 64
METADATA_VALUE_MAX = 1024


def _type_ok(value: Any, want: type | tuple[type, ...]) -> bool:
    wants = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool):
        return bool in wants
    return isinstance(value, wants)


def _check_one(path: str, value: Any, spec: Arg) -> Any:
    if not _type_ok(value, spec.type):
        raise BadRequest(f"{path}: expected {spec.describe()}, got {wire_type(value)}",
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
        return check_args(path, value, spec.fields, path=path)
    if isinstance(value, dict):
        for k, v in value.items():
            if len(k) > METADATA_KEY_MAX:
                raise BadRequest(f"{path}: keys must be str of at most {METADATA_KEY_MAX} chars",
                                 field=path)
            if not isinstance(v, (str, int, float, bool)) or (isinstance(v, str)
                                                              and len(v) > METADATA_VALUE_MAX):
                raise BadRequest(f"{path}.{k}: values must be str (up to {METADATA_VALUE_MAX} "
                                 f"chars), int, num or bool, got {wire_type(v)}"
                                 + (f" of {len(v)} chars" if isinstance(v, str) else ""),
                                 field=f"{path}.{k}")
            # Stored as JSON and filtered in SQLite: NaN/inf are not JSON, and SQLite's
            # integers are 64-bit.
            if isinstance(v, float) and not math.isfinite(v):
                raise BadRequest(f"{path}.{k}: num values must be finite", field=f"{path}.{k}")
            if isinstance(v, int) and not -2**63 <= v < 2**63:
                raise BadRequest(f"{path}.{k}: int values must fit in 64-bit signed",
                                 field=f"{path}.{k}")
    return value


def check_args(op: str, args: Mapping[str, Any], schema: Mapping[str, Arg],
               path: str = "args") -> dict[str, Any]:
    """Validate args against a schema; unknown keys are refused, not ignored.

    Field paths in errors start at the envelope: ``args.query``,
    ``args.constraints.max_tokens``. A nil value means the same as leaving the
    argument out (documented), so an optional nil gets its default.
    """
    unknown = sorted(str(k) for k in set(args) - set(schema))
    if unknown:
        raise BadRequest(f"{op}: unknown argument(s) {', '.join(f'{path}.{u}' for u in unknown)}; "
                         f"allowed: {', '.join(schema) or 'none'}",
                         field=f"{path}.{unknown[0]}", allowed=list(schema))
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        where = f"{path}.{name}"
        if name not in args or args[name] is None:
            if spec.required:
                raise BadRequest(f"{where}: required argument is missing"
                                 + (" (nil counts as missing)" if name in args else ""),
                                 field=where)
            if spec.default is not None:
                out[name] = spec.default
            continue
        out[name] = _check_one(where, args[name], spec)
    return out
