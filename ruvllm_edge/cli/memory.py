"""`ruvllm-edge memory ...`: add, search, get, delete, stats, export, import.

Every command goes through the running daemon (the client), so the daemon's
single write path, writeback queue and in-RAM index stay consistent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from .common import client, print_json

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def _meta(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--meta expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = v
    return out


def iter_import(path: Path) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(text, kind, metadata) from a folder of text files or a JSONL file.

    JSONL lines are {"text": ..., "kind": "document"|"fact", "metadata": {...}};
    `memory export` output (which has more fields) imports too.
    """
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
            text = f.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                yield text, "document", {"file": str(f.relative_to(path))}
        return
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{n}: expected an object with a 'text' string")
            kind = row.get("kind", "document")
            if kind not in ("document", "fact"):
                kind = "document"
            md = row.get("metadata") or {}
            md = {k: v for k, v in md.items() if isinstance(v, (str, int, float, bool))} \
                if isinstance(md, dict) else {}
            yield row["text"], kind, md


def cmd_memory(ns: argparse.Namespace) -> int:
    with client(ns) as c:
        a = ns.memory_action
        if a == "add":
            text = Path(ns.file).read_text(encoding="utf-8") if ns.file else ns.text
            if not text:
                print("memory add: give TEXT or --file", file=sys.stderr)
                return 2
            print_json(c.memory_add(text, kind=ns.kind, metadata=_meta(ns.meta)))
        elif a == "search":
            for hit in c.memory_search(ns.query, k=ns.k):
                print(f"{hit['id']:>8}  {hit['relevance']:.3f}  {hit['kind']:<9} "
                      f"{hit['preview'][:90]!r}")
        elif a == "get":
            print_json(c.memory_get(ns.id))
        elif a == "delete":
            print_json(c.memory_delete(ns.id))
        elif a == "stats":
            print_json(c.memory_stats())
        elif a == "export":
            out = open(ns.out, "w", encoding="utf-8") if ns.out else sys.stdout
            try:
                n = 0
                for node in c.memory_export(include_archived=not ns.active_only):
                    out.write(json.dumps(node, ensure_ascii=False) + "\n")
                    n += 1
            finally:
                if ns.out:
                    out.close()
            print(f"exported {n} nodes", file=sys.stderr)
        elif a == "import":
            n = ids = 0
            try:
                for text, kind, md in iter_import(Path(ns.path)):
                    ids += len(c.memory_add(text, kind=kind, metadata=md)["ids"])
                    n += 1
            except (ValueError, OSError) as exc:
                print(f"memory import stopped after {n} items: {exc}", file=sys.stderr)
                return 2
            print(f"imported {n} items as {ids} nodes", file=sys.stderr)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("memory", parents=[common], help="the daemon's memory")
    msub = p.add_subparsers(dest="memory_action", required=True)
    s = msub.add_parser("add", parents=[common], help="add a document or fact")
    s.add_argument("text", nargs="?")
    s.add_argument("--file", help="read the text from a file")
    s.add_argument("--kind", choices=("document", "fact"), default="document")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE")
    s = msub.add_parser("search", parents=[common], help="search memory")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=10)
    for name in ("get", "delete"):
        s = msub.add_parser(name, parents=[common], help=f"{name} a node by id")
        s.add_argument("id", type=int)
    msub.add_parser("stats", parents=[common], help="counts and sizes")
    s = msub.add_parser("export", parents=[common], help="write every node as JSONL")
    s.add_argument("--out", help="file (default: stdout)")
    s.add_argument("--active-only", action="store_true", help="leave out archived nodes")
    s = msub.add_parser("import", parents=[common],
                        help="import a folder of text files or a JSONL file")
    s.add_argument("path")
    p.set_defaults(func=cmd_memory)
