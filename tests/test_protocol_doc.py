"""docs/protocol.md against the code: what an app written from the document alone relies on.

The document is the contract for Node and C apps, so its tables are parsed and
compared with what the daemon really does: the op table (names, lanes, argument
names), every argument table (type names, required, ranges, lengths,
defaults), the type vocabulary, the error codes, the defaults of the limits and
the retry hints. tests/integration/test_protocol_doc_live.py checks the error
details, ids and result fields against a running daemon.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ruvllm_edge import errors, protocol
from ruvllm_edge.config import ServerConfig
from ruvllm_edge.server import dispatch, lanes
from ruvllm_edge.server.ops import OPS, SCHEMAS

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
LANE_NAMES = {"inline": "socket thread", "gen": "`gen`", "fast": "`fast`", "aux": "`aux`",
              "slow": "`slow`"}


def runs_on(op: object) -> str:
    """The op table's "runs on" cell: a query without a session starts on `fast`."""
    lane = LANE_NAMES[op.lane]                                  # type: ignore[attr-defined]
    return f"`fast`, then {lane}" if op.starts_on is not None else lane   # type: ignore[attr-defined]


def sections() -> dict[str, str]:
    """'### title' -> its text, up to the next heading of level 2 or 3."""
    parts = re.split(r"^(#{2,3} .*)$", DOC, flags=re.M)
    return {parts[i].lstrip("#").strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


SECTIONS = sections()


def table(text: str, header: str) -> list[list[str]]:
    """Rows (cells stripped) of every markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if line.startswith(header):
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
    return rows


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def op_sections() -> dict[str, str]:
    """op name -> the text of the section that documents it (one section may hold several)."""
    out: dict[str, str] = {}
    for title, text in SECTIONS.items():
        for name in ticked(title):
            if name in OPS:
                out[name] = text
    return out


def test_the_op_table_lists_every_op_with_its_lane_and_args() -> None:
    rows = table(SECTIONS["Ops at a glance"], "| op |")
    documented = {ticked(r[0])[0]: r for r in rows}
    assert set(documented) == set(OPS), "ops missing from / extra in the doc's op table: " \
        f"{set(OPS) ^ set(documented)}"
    for name, (_, lane, args) in documented.items():
        assert lane == runs_on(OPS[name]), (name, lane, OPS[name].lane)
        assert (ticked(args) or []) == list(SCHEMAS[name]), (name, args)
        if not SCHEMAS[name]:
            assert args == "none", name


def test_the_flow_control_table_puts_every_op_on_its_lane() -> None:
    rows = table(SECTIONS["Flow control"], "| lane |")
    by_lane = {r[0]: ticked(r[1]) for r in rows}
    for name, op in OPS.items():
        listed = by_lane[LANE_NAMES[op.lane]]
        assert name in listed or any(p.endswith(".*") and name.startswith(p[:-1])
                                     for p in listed), (name, op.lane, listed)
    assert f"| `slow` | `learn`, `backup` | {lanes.SLOW_QUEUE} |" in SECTIONS["Flow control"]
    for name, op in OPS.items():
        if op.starts_on is not None:                  # where it starts is listed too
            assert name in by_lane["`fast`"], name
    server = ServerConfig()
    for row in rows:
        if row[0] in ("`gen`", "`fast`", "`aux`"):
            assert row[2].endswith(f"({server.max_queue})"), row
    assert rows[2][3] == f"`server.fast_workers` ({server.fast_workers})", rows[2]


def _expect_notes(spec: protocol.Arg) -> list[str]:
    """Fragments the notes cell of an argument must contain."""
    want = []
    if spec.lo is not None and spec.hi is not None:
        lo = int(spec.lo) if float(spec.lo).is_integer() else spec.lo
        hi = int(spec.hi) if float(spec.hi).is_integer() else spec.hi
        if spec.hi < 2**40:     # node ids and offsets: "any int id", not spelled out
            want.append(f"{lo}..{hi}")
    if spec.max_len is not None and spec.type is str:
        want.append(f"{spec.min_len}..{spec.max_len} chars")
    if spec.default is not None:
        d = str(spec.default).lower() if isinstance(spec.default, bool) else str(spec.default)
        want.append(f"default {d}")
    return want


def test_every_argument_table_matches_the_schemas() -> None:
    """Type names, required, ranges, lengths and defaults, for every op with an arg table.

    A section can document several ops (session.*): a row then belongs to whichever
    of them has that argument.
    """
    checked = 0
    for title, text in SECTIONS.items():
        ops = [n for n in ticked(title) if n in OPS]
        rows = table(text, "| arg | type | notes |") if ops else []
        if not rows:
            continue
        documented = set()
        for arg_cell, type_cell, notes in rows:
            path = ticked(arg_cell)[0]
            documented.add(path)
            top, _, sub = path.partition(".")
            owners = [n for n in ops if top in SCHEMAS[n]]
            assert owners, f"{title}: `{path}` is not an argument of {ops}"
            spec = SCHEMAS[owners[0]][top]
            if sub:
                assert spec.fields and sub in spec.fields, (title, path)
                spec = spec.fields[sub]
            type_name, _, req = type_cell.partition(", ")
            assert type_name == spec.type_name(), (title, path, type_cell, spec.type_name())
            assert (req == "required") == spec.required, (title, path, type_cell)
            for frag in _expect_notes(spec):
                assert frag in notes, (title, path, frag, notes)
            checked += 1
        for name in ops:
            for arg, spec in SCHEMAS[name].items():
                assert arg in documented, f"{name}.{arg} has no row in the table of {title}"
                for sub in spec.fields or {}:
                    assert f"{arg}.{sub}" in documented, f"{name}.{arg}.{sub} undocumented"
    assert checked >= 15, checked


def test_ops_without_an_argument_table_still_name_every_argument() -> None:
    for name, text in op_sections().items():
        for arg in SCHEMAS[name]:
            assert f"`{arg}`" in text, f"{name}: argument `{arg}` is not in its section"


def test_the_type_vocabulary_is_the_one_errors_use() -> None:
    line = next(l for l in SECTIONS["Types"].splitlines() if l.startswith("Types:"))
    assert set(ticked(line)) == set(protocol.WIRE_TYPES)
    used = {spec.type_name() for schema in SCHEMAS.values() for spec in schema.values()}
    used |= {f.type_name() for schema in SCHEMAS.values() for spec in schema.values()
             for f in (spec.fields or {}).values()}
    # A union ("str|array": one kind or a list of kinds) is spelled with wire types too.
    parts = {part for name in used for part in name.split("|")}
    assert parts <= set(protocol.WIRE_TYPES), used


def test_error_codes_table_is_exactly_the_stable_set() -> None:
    rows = table(SECTIONS["Error codes (stable)"], "| code |")
    assert [ticked(r[0])[0] for r in rows] == list(errors.CODES)


def test_limits_and_defaults_are_the_codes() -> None:
    rows = {ticked(r[0])[0]: r[1] for r in table(SECTIONS["Limits and defaults"], "| setting |")}
    server = ServerConfig()
    expect = {f"server.{k}": getattr(server, k) for k in (
        "max_message_bytes", "drop_message_bytes", "max_queue", "max_concurrent_requests",
        "fast_workers", "rate_limit_per_s", "rate_limit_burst", "request_timeout_ms")}
    expect |= {"slow_queue": lanes.SLOW_QUEUE, "max_id_chars": protocol.MAX_ID_CHARS,
               "max_depth": protocol.MAX_DEPTH}
    assert {k: type(v)(rows[k]) for k, v in expect.items()} == expect
    assert set(rows) == set(expect)


def test_retry_hints_are_the_codes() -> None:
    text = SECTIONS["Error details"]
    assert (f"`retry_after_ms` ({dispatch.BUSY_RETRY_MS} for a full queue, "
            f"{dispatch.SHUTDOWN_RETRY_MS} while shutting") in text.replace("\n  ", " ")


def test_the_node_example_is_an_es_module() -> None:
    """Issue 13: the old snippet mixed require() with top-level await and ran nowhere."""
    block = DOC.split("```js", 1)[1].split("```", 1)[0]
    assert "require(" not in block and "import " in block and "await " in block


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_its_own_section(name: str) -> None:
    assert name in op_sections(), f"no ### section for `{name}`"
