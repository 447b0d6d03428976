"""Hypothesis against the real daemon's socket: malformed input of every kind.

Every malformed message must get an error reply (never silence, never a
crash), and afterwards the daemon answers `health`, its RSS has stayed within
a bound and the memory written before the fuzzing is intact.

What is fuzzed (case counts are printed at the end of the module):
- random bytes, and random multi-frame messages;
- valid requests truncated at every kind of offset;
- nesting far beyond the depth limit, in args and in the envelope;
- msgpack headers declaring huge strings, binaries, arrays, maps and ext
  payloads, plus ext types themselves;
- the envelope: every field with wrong types, empty/oversized ids, extra keys;
- every argument of every op in the registry (server.ops.SCHEMAS; nested `constraints`
  included): each wrong type, out-of-range numbers, NaN, bad choices,
  over-long strings, unknown arguments.
"""

from __future__ import annotations

import math
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import msgpack
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from conftest import MODELS_DIR, DaemonProcess
from ruvllm_edge import errors, protocol
from ruvllm_edge.memory.db import connect
from ruvllm_edge.server.ops import SCHEMAS

pytestmark = pytest.mark.slow

FUZZ_CONFIG = {
    "server": {"rate_limit_per_s": 100_000.0, "rate_limit_burst": 1_000_000,
               "max_message_bytes": 1_048_576, "drop_message_bytes": 4 * 1_048_576},
    "learning": {"enabled": False}, "inference": {"n_threads": 1},
}
RSS_GROWTH_BOUND_MB = 64
CASES: Counter[str] = Counter()
# No shrinking: a failing case waits for a reply timeout, and shrinking would repeat that
# hundreds of times. The failing input is printed as it is.
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


class Fuzzer:
    """A raw DEALER socket: sends anything, returns the payload frame of the reply."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def roundtrip(self, frames: bytes | list[bytes], timeout_s: float = 5.0) -> dict[str, Any]:
        self.sock.send_multipart([frames] if isinstance(frames, bytes) else frames)
        assert self.sock.poll(int(timeout_s * 1000)), f"no reply to {frames!r:.200}"
        reply = protocol.unpack_reply(self.sock.recv_multipart()[-1])
        assert set(reply) >= {"v", "id", "ok"}, reply
        return reply

    def reject(self, category: str, data: bytes | list[bytes], codes: tuple[str, ...] = ("bad_request",),
               req_id: str | None = None, field: str | None = None) -> dict[str, Any]:
        """One case: the reply must be an error with one of ``codes``."""
        CASES[category] += 1
        r = self.roundtrip(data)
        assert r["ok"] is False, (category, data[:200] if isinstance(data, bytes) else data, r)
        assert r["error"]["code"] in codes, (category, r)
        if req_id is not None:
            assert r["id"] in (req_id, None), r
        if field is not None:
            assert r["error"].get("details", {}).get("field") == field, r
        return r

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture(scope="module")
def fz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("fuzz")
    data = base / "data"
    data.mkdir()
    dp = DaemonProcess(data, MODELS_DIR, FUZZ_CONFIG, base / "daemon.log").start()
    c = dp.client(timeout_s=60)
    facts = {}
    for i in range(5):
        text = f"Fuzz canary fact number {i}: the lighthouse keeper's cat is called Pixel-{i}."
        facts[c.memory_add(text, kind="fact")["ids"][0]] = text
    sid = c.new_session()
    f = Fuzzer(dp.endpoint)
    for i in range(300):   # warm the allocator so the bound measures growth, not first use
        f.roundtrip(b"\xc1" * (i % 50 + 1))
        f.roundtrip(protocol.pack(protocol.make_request(f"w{i}", "memory.get", {"id": "x"})))
    rss0 = psutil.Process(dp.proc.pid).memory_info().rss
    state = {"dp": dp, "client": c, "facts": facts, "session": sid, "f": f, "rss0": rss0,
             "stats0": c.memory_stats()}
    yield state
    f.close()
    total = sum(CASES.values())
    growth = (psutil.Process(dp.proc.pid).memory_info().rss - rss0) / 1_048_576
    print(f"\nfuzz cases: {total} total; " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
          + f"; daemon RSS {rss0 / 1_048_576:.0f} MB before, {growth:+.1f} MB after")
    dp.close_clients()
    assert dp.stop() == 0, dp.log()


def assert_survived(s: dict[str, Any]) -> None:
    """Health answers, RSS stays bounded, and what was stored before is all still there."""
    c = s["client"]
    assert c.health()["status"] in ("healthy", "degraded")
    rss = psutil.Process(s["dp"].proc.pid).memory_info().rss
    growth_mb = (rss - s["rss0"]) / 1_048_576
    assert growth_mb < RSS_GROWTH_BOUND_MB, f"RSS grew by {growth_mb:.1f} MB"
    for nid, text in s["facts"].items():
        assert c.memory_get(nid)["text"] == text
    assert c.memory_stats()["nodes"] == s["stats0"]["nodes"]
    assert c.history(s["session"])["closed"] is False
    conn = connect(s["dp"].data_dir / "memory.db", readonly=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


# --------------------------------------------------------------------------- values

def base_args(op: str) -> dict[str, Any]:
    """The smallest valid args of each op, so a test can break exactly one field."""
    out: dict[str, Any] = {}
    for name, spec in SCHEMAS[op].items():
        if spec.required:
            if spec.type is str or spec.type == (str,):
                out[name] = "x"
            elif spec.type is int:
                out[name] = int(spec.lo or 1)
            else:
                raise AssertionError(f"no base value for {op}.{name}")
    return out


CATEGORY = {
    "bool": st.booleans(),
    "int": st.integers(-2**63, 2**64 - 1),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "str": st.text(max_size=40),
    "bytes": st.binary(max_size=40),
    "list": st.lists(st.integers(-5, 5), max_size=4),
    "map": st.dictionaries(st.text(max_size=5), st.integers(-5, 5), max_size=3),
}
PY = {bool: "bool", int: "int", float: "float", str: "str", dict: "map", list: "list"}


def wrong_types(spec: protocol.Arg) -> st.SearchStrategy[Any]:
    accepted = {PY[t] for t in (spec.type if isinstance(spec.type, tuple) else (spec.type,))}
    return st.one_of(*(s for k, s in CATEGORY.items() if k not in accepted))


def field_specs() -> list[tuple[str, str, protocol.Arg, dict[str, Any] | None]]:
    """(op, field path, spec, parent map) for every argument, nested ones included.

    The path is the one the daemon names in ``details.field`` (docs/protocol.md).
    """
    rows = []
    for op, schema in SCHEMAS.items():
        for name, spec in schema.items():
            rows.append((op, f"args.{name}", spec, None))
            for sub, subspec in (spec.fields or {}).items():
                rows.append((op, f"args.{name}.{sub}", subspec, {"parent": name, "key": sub}))
    return rows


FIELDS = field_specs()


def request_with(op: str, path: str, value: Any, nested: dict[str, Any] | None,
                 req_id: str) -> bytes:
    args = base_args(op)
    if nested is None:
        args[path.split(".")[-1]] = value
    else:
        args[nested["parent"]] = {nested["key"]: value}
    return msgpack.packb({"v": 1, "id": req_id, "op": op, "args": args}, use_bin_type=True)


def out_of_range(spec: protocol.Arg) -> st.SearchStrategy[Any]:
    options = []
    if spec.lo is not None:
        options.append(st.integers(-2**63, math.ceil(spec.lo) - 1))
        options.append(st.floats(max_value=spec.lo, exclude_max=True, allow_nan=False))
    if spec.hi is not None:
        options.append(st.integers(math.floor(spec.hi) + 1, 2**63 - 1))
        options.append(st.floats(min_value=spec.hi, exclude_min=True, allow_nan=False))
    options.append(st.just(math.nan))
    accepted = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    strat = st.one_of(*options)
    return strat.filter(lambda v: isinstance(v, accepted))


# --------------------------------------------------------------------------- tests


def test_random_bytes(fz: dict[str, Any]) -> None:
    @FUZZ
    @given(st.binary(max_size=4096))
    def run(data: bytes) -> None:
        fz["f"].reject("random bytes", data, codes=("bad_request", "unknown_op"))

    run()
    assert_survived(fz)


def test_random_multi_frame_messages(fz: dict[str, Any]) -> None:
    @FUZZ
    @given(st.lists(st.binary(max_size=64), min_size=2, max_size=5))
    def run(frames: list[bytes]) -> None:
        if len(frames) == 2 and frames[0] == b"":
            frames = [b"x", *frames]   # that one is a REQ envelope, fuzzed elsewhere
        fz["f"].reject("multi-frame", frames, codes=("bad_request", "unknown_op"))

    run()
    assert_survived(fz)


@st.composite
def truncated(draw: st.DrawFn) -> tuple[bytes, str]:
    op = draw(st.sampled_from(sorted(SCHEMAS)))
    req_id = draw(st.text(min_size=1, max_size=20))
    args = base_args(op)
    args.update(draw(st.dictionaries(st.sampled_from(["pad"]), st.text(max_size=300), max_size=1)))
    data = msgpack.packb({"v": 1, "id": req_id, "op": op, "args": args}, use_bin_type=True)
    return data[:draw(st.integers(0, len(data) - 1))], req_id


def test_truncated_requests(fz: dict[str, Any]) -> None:
    @FUZZ
    @given(truncated())
    def run(case: tuple[bytes, str]) -> None:
        data, req_id = case
        fz["f"].reject("truncated", data, req_id=req_id)

    run()
    assert_survived(fz)


def nest(depth: int, kinds: list[bool], leaf: Any = 1) -> Any:
    obj = leaf
    for i in range(depth):
        obj = [obj] if kinds[i % len(kinds)] else {"k": obj}
    return obj


def test_deep_nesting(fz: dict[str, Any]) -> None:
    @FUZZ
    @given(st.integers(9, 400), st.lists(st.booleans(), min_size=1, max_size=8),
           st.sampled_from(["args-value", "args", "envelope", "metadata"]))
    def run(depth: int, kinds: list[bool], where: str) -> None:
        deep = nest(depth, kinds)
        msg: dict[str, Any] = {"v": 1, "id": "deep", "op": "memory.add", "args": {"text": "t"}}
        if where == "args-value":
            msg["args"]["text"] = deep
        elif where == "args":
            msg["args"] = deep
        elif where == "envelope":
            msg["extra"] = deep
        else:
            msg["args"]["metadata"] = {"k": deep}
        fz["f"].reject("deep nesting", msgpack.packb(msg), req_id="deep")

    run()
    for n in (1_000, 100_000, 300_000):   # beyond msgpack's own stack: raw container bytes
        fz["f"].reject("deep nesting", b"\x91" * n + b"\xc0")
        fz["f"].reject("deep nesting", b"\x81\xa1k" * n + b"\xc0")
    assert_survived(fz)


HEADERS = {  # msgpack type byte -> struct format of the declared length
    "str16": (b"\xda", ">H"), "str32": (b"\xdb", ">I"), "bin16": (b"\xc5", ">H"),
    "bin32": (b"\xc6", ">I"), "array16": (b"\xdc", ">H"), "array32": (b"\xdd", ">I"),
    "map16": (b"\xde", ">H"), "map32": (b"\xdf", ">I"), "ext16": (b"\xc8", ">H"),
    "ext32": (b"\xc9", ">I"),
}


def test_huge_declared_lengths(fz: dict[str, Any]) -> None:
    prefix = (b"\x84" + msgpack.packb("v") + msgpack.packb(1) + msgpack.packb("id")
              + msgpack.packb("huge") + msgpack.packb("op") + msgpack.packb("memory.add")
              + msgpack.packb("args") + b"\x81" + msgpack.packb("text"))

    @FUZZ
    @given(st.sampled_from(sorted(HEADERS)), st.integers(0, 2**32 - 1), st.binary(max_size=64),
           st.booleans())
    def run(kind: str, declared: int, tail: bytes, inside: bool) -> None:
        tag, fmt = HEADERS[kind]
        declared = min(declared, 2**16 - 1) if fmt == ">H" else declared
        header = tag + struct.pack(fmt, declared) + (b"\x01" if kind.startswith("ext") else b"")
        if len(tail) >= declared and not kind.startswith(("array", "map")):
            tail = tail[:max(0, declared - 1)]   # keep it truncated: a complete one is valid msgpack
        data = (prefix if inside else b"") + header + tail
        fz["f"].reject("huge declared length", data, req_id="huge" if inside else None)

    run()
    for ext in (msgpack.ExtType(1, b"payload"), msgpack.Timestamp(1, 0)):   # ext 1 and -1
        r = fz["f"].reject("ext type", msgpack.packb({"v": 1, "id": "ext", "op": "memory.add",
                                                      "args": {"text": ext}}),
                           req_id="ext", field="args.text")
        assert r["id"] == "ext" and "ext" in r["error"]["message"]
    assert_survived(fz)


def test_envelope_fields(fz: dict[str, Any]) -> None:
    good = {"v": 1, "id": "env", "op": "health", "args": {}}
    anything = st.one_of(*CATEGORY.values(), st.none())

    @FUZZ
    @given(st.sampled_from(["v", "id", "op", "args", "extra", "drop-id", "drop-op", "not-a-map"]),
           anything, st.text(min_size=129, max_size=300))
    def run(which: str, value: Any, long_id: str) -> None:
        msg: Any = dict(good)
        if which == "v":
            if value == 1 and not isinstance(value, bool):
                value = 2
            msg["v"] = value
        elif which == "id":
            msg["id"] = value if not (isinstance(value, str) and 0 < len(value) <= 128) else long_id
        elif which == "op":
            msg["op"] = value if not (isinstance(value, str) and value) else value + "\x7fnope"
        elif which == "args":
            msg["args"] = value if not isinstance(value, dict) and value is not None else [1]
        elif which == "extra":
            msg["extra"] = value
        elif which in ("drop-id", "drop-op"):
            del msg[which[5:]]
        else:
            msg = [msg] if value is None else value
        codes = ("bad_request", "unknown_op") if which == "op" else ("bad_request",)
        r = fz["f"].reject("envelope", msgpack.packb(msg, use_bin_type=True), codes=codes)
        field = {"drop-id": "id", "drop-op": "op",
                 "not-a-map": "id" if isinstance(msg, dict) else None}.get(which, which)
        assert r["error"].get("details", {}).get("field") == field, (which, msg, r)
        assert r["id"] == (None if which in ("id", "drop-id", "not-a-map") else "env"), r
        for py in ("NoneType", "list", "dict", "bytes", "float", "Error"):
            assert py not in r["error"]["message"], r

    run()
    assert_survived(fz)


@pytest.mark.parametrize("op, path, spec, nested", FIELDS, ids=[f"{f[0]}:{f[1]}" for f in FIELDS])
def test_wrong_type_in_every_field_of_every_op(fz: dict[str, Any], op: str, path: str,
                                               spec: protocol.Arg, nested: Any) -> None:
    @settings(FUZZ, max_examples=40)
    @given(wrong_types(spec))
    def run(value: Any) -> None:
        fz["f"].reject("wrong type", request_with(op, path, value, nested, "wt"),
                       req_id="wt", field=path)

    run()
    if spec.lo is not None or spec.hi is not None:
        @settings(FUZZ, max_examples=15)
        @given(out_of_range(spec))
        def bad_range(value: Any) -> None:
            fz["f"].reject("out of range", request_with(op, path, value, nested, "rg"),
                           req_id="rg", field=path)

        bad_range()
    if spec.choices:
        fz["f"].reject("bad choice", request_with(op, path, "no-such-choice", nested, "ch"),
                       req_id="ch", field=path)
    if spec.max_len is not None and spec.type in (str, dict):
        too_long: Any = "y" * (spec.max_len + 1) if spec.type is str else \
            {f"k{i}": i for i in range(spec.max_len + 1)}
        fz["f"].reject("too long", request_with(op, path, too_long, nested, "ln"),
                       req_id="ln", field=path)
    if spec.type is str:
        fz["f"].reject("NUL in string", request_with(op, path, "a\x00b", nested, "nul"),
                       req_id="nul", field=path)


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_unknown_arguments_of_every_op(fz: dict[str, Any], op: str) -> None:
    @settings(FUZZ, max_examples=10)
    @given(st.text(min_size=1, max_size=30).filter(lambda k: k not in SCHEMAS[op]),
           st.one_of(*CATEGORY.values()))
    def run(key: str, value: Any) -> None:
        args = base_args(op)
        args[key] = value
        r = fz["f"].reject("unknown argument", msgpack.packb(
            {"v": 1, "id": "ua", "op": op, "args": args}, use_bin_type=True), req_id="ua")
        assert "unknown argument" in r["error"]["message"]

    run()


def test_metadata_values_must_be_scalars(fz: dict[str, Any]) -> None:
    @FUZZ
    @given(st.one_of(CATEGORY["list"], CATEGORY["map"], CATEGORY["bytes"],
                     st.text(min_size=1025, max_size=1100)))
    def run(value: Any) -> None:
        msg = {"v": 1, "id": "md", "op": "memory.add", "args": {"text": "t", "metadata": {"k": value}}}
        fz["f"].reject("metadata value", msgpack.packb(msg, use_bin_type=True), req_id="md")

    run()
    assert_survived(fz)


def test_too_large_and_dropped_messages(fz: dict[str, Any]) -> None:
    big = msgpack.packb({"v": 1, "id": "big", "op": "memory.add",
                         "args": {"text": "z" * (1_048_576 + 10)}})
    fz["f"].reject("too large", big, codes=("too_large",), req_id="big")
    # Beyond ZMQ_MAXMSGSIZE ZeroMQ drops the connection without a reply; a new one works.
    other = Fuzzer(fz["dp"].endpoint)
    other.sock.send(b"\x00" * (5 * 1_048_576))
    assert not other.sock.poll(1500)
    other.close()
    CASES["dropped (over ZMQ_MAXMSGSIZE)"] += 1
    assert_survived(fz)


# --------------------------------------------------------------------------- no internal

def valid_value(spec: protocol.Arg) -> st.SearchStrategy[Any]:
    """A value the schema accepts (short strings: the point is to reach the handlers)."""
    if spec.choices:
        return st.sampled_from(spec.choices)
    if spec.fields is not None:
        return st.fixed_dictionaries({}, optional={k: valid_value(v)
                                                   for k, v in spec.fields.items()})
    kinds = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if bool in kinds:
        return st.booleans()
    if float in kinds:
        return st.floats(spec.lo, spec.hi, allow_nan=False)
    if int in kinds:
        return st.integers(int(spec.lo if spec.lo is not None else -2**63),
                           int(spec.hi if spec.hi is not None else 2**63 - 1))
    if str in kinds:
        return st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                       min_size=max(spec.min_len, 1), max_size=min(spec.max_len or 60, 60))
    if list in kinds:
        return st.lists(st.text(min_size=1, max_size=10), max_size=min(spec.max_len or 3, 3))
    if dict in kinds:   # a free map: metadata
        scalar = st.one_of(st.text(max_size=20), st.integers(-2**63, 2**63 - 1), st.booleans(),
                           st.floats(allow_nan=False, allow_infinity=False))
        return st.dictionaries(st.text(min_size=1, max_size=10), scalar,
                               max_size=min(spec.max_len or 4, 4))
    raise AssertionError(spec)


def any_value() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), *CATEGORY.values())


@st.composite
def hostile_request(draw: st.DrawFn, base: str) -> dict[str, Any]:
    """A well-formed envelope whose args take any shape: left out, nil, not a map, or a map
    of each op's arguments left out, nil, valid, of any other type, plus unknown keys."""
    op = draw(st.sampled_from(sorted(SCHEMAS)))
    msg: dict[str, Any] = {"v": 1, "id": draw(st.text(min_size=1, max_size=16)), "op": op}
    shape = draw(st.sampled_from(["omitted", "nil", "not-a-map", "map", "map", "map", "map"]))
    if shape == "nil":
        msg["args"] = None
    elif shape == "not-a-map":
        msg["args"] = draw(st.one_of(*(v for k, v in CATEGORY.items() if k != "map")))
    elif shape == "map":
        args: dict[str, Any] = {}
        for name, spec in SCHEMAS[op].items():
            how = draw(st.sampled_from(["absent", "nil", "valid", "valid", "valid", "any"]))
            if how == "nil":
                args[name] = None
            elif how == "valid":
                args[name] = draw(valid_value(spec))
            elif how == "any":
                args[name] = draw(any_value())
        if draw(st.integers(0, 9)) == 0:
            args[draw(st.text(min_size=1, max_size=8))] = draw(any_value())
        msg["args"] = args
    args = msg.get("args")
    if isinstance(args, dict):
        # Keep it affordable and harmless: one generated token, backups under the
        # test's own directory (the tests run as root), no canary node deleted.
        if op == "query":
            cons = args.get("constraints")
            args["constraints"] = {**(cons if isinstance(cons, dict) else {}), "max_tokens": 1}
        if op == "backup" and isinstance(args.get("to"), str) and args["to"].startswith("/"):
            args["to"] = base + "/" + args["to"].replace("..", "__").lstrip("/")
        if op.startswith("memory.") and isinstance(args.get("id"), int) and op != "memory.get":
            args["id"] = max(args["id"], 10**9)   # delete/update/...: never a canary node
    elif op == "query" or op == "backup":
        pass   # no args: bad_request (query) or a backup into <data_dir>/backups
    return msg


def final_reply(f: Fuzzer, data: bytes, timeout_s: float = 60.0) -> dict[str, Any]:
    """Send one request and read up to its final message (streams send tokens first)."""
    f.sock.send(data)
    while True:
        assert f.sock.poll(int(timeout_s * 1000)), f"no reply to {data!r:.300}"
        msg = protocol.unpack_reply(f.sock.recv_multipart()[-1])
        if "ok" in msg:
            return msg


def test_no_request_shape_yields_internal(fz: dict[str, Any], tmp_path: Path) -> None:
    """Any input a client can send maps to a documented client error, never `internal`,
    and every bad_request about a request with a readable id names its field."""
    f: Fuzzer = fz["f"]
    outcomes: Counter[str] = Counter()

    def check(msg: dict[str, Any]) -> None:
        CASES["any shape of args"] += 1
        r = final_reply(f, msgpack.packb(msg, use_bin_type=True))
        code = "ok" if r["ok"] else r["error"]["code"]
        outcomes[code] += 1
        assert code != "internal", (msg, r)
        assert code in ("ok", *errors.CODES), r
        if code == "bad_request":
            assert r["error"].get("details", {}).get("field"), (msg, r)
            assert r["id"] == msg["id"] if 0 < len(msg["id"]) <= 128 else r["id"] is None
        for py in ("NoneType", "'list'", "dict", "bytes", "KeyError", "ValueError"):
            assert py not in r.get("error", {}).get("message", ""), r

    for op in sorted(SCHEMAS):          # the case, for every op: args left out, nil
        check({"v": 1, "id": f"omit-{op}", "op": op})
        check({"v": 1, "id": f"nil-{op}", "op": op, "args": None})

    @settings(FUZZ, max_examples=int(os.environ.get("RUVLLM_EDGE_FUZZ_SHAPES", "400")))
    @given(hostile_request(str(tmp_path)))
    def run(msg: dict[str, Any]) -> None:
        check(msg)

    run()
    print(f"\noutcomes of {sum(outcomes.values())} requests of any shape: {dict(outcomes)}")
    assert outcomes["ok"] >= 50 and outcomes["bad_request"] >= 50, outcomes   # both reached
    fz["client"].backup(str(tmp_path / "flush"))   # flushes the writeback queue first...
    fz["stats0"] = fz["client"].memory_stats()     # ...memory.add ran: the new baseline
    # Valid queries loaded the model: RSS growth is measured from here on.
    fz["rss0"] = psutil.Process(fz["dp"].proc.pid).memory_info().rss
    assert_survived(fz)


def test_zz_total_cases(fz: dict[str, Any]) -> None:
    """Ran last in the module: the fuzzing above really happened, and at scale."""
    assert sum(CASES.values()) >= 1000, CASES
    assert_survived(fz)
