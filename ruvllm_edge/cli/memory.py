"""`ruvllm-edge memory ...`: add, search, get, update, history, delete, stats, export, import.

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
IMPORT_BATCH = 64                  # items per memory.add request: one embedding batch each
# Set by the store on split notes (and, before them, on chunked documents).
SPLIT_KEYS = frozenset({"parts", "part", "parent_id", "chunk", "chunks"})


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
    `memory export` output (which has more fields) imports too: the children
    of a split note are skipped (importing the parent splits it again) and the
    keys the store sets on split notes are dropped.
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
            if "parent_id" in md and "part" in md:
                continue       # a split note's child (an export row): its parent splits again
            # (chunks of an older export carry "chunk" instead and import one by one)
            md = {k: v for k, v in md.items() if k not in SPLIT_KEYS}
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
            for hit in c.memory_search(ns.query, k=ns.k, kind=ns.kind or None,
                                       metadata=_meta(ns.meta) or None):
                print(f"{hit['id']:>8}  {hit['relevance']:.3f}  {hit['kind']:<9} "
                      f"{hit['preview'][:90]!r}")
        elif a == "get":
            print_json(c.memory_get(ns.id))
        elif a == "update":
            md = _meta(ns.meta) if ns.meta else None
            print_json(c.memory_update(ns.id, ns.text, metadata=md))
        elif a == "history":
            print_json({"id": ns.id, "history": c.memory_history(ns.id)})
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
            batch: list[dict[str, Any]] = []
            error: Exception | None = None
            try:
                for text, kind, md in iter_import(Path(ns.path)):
                    batch.append({"text": text, "kind": kind, "metadata": md})
                    if len(batch) >= IMPORT_BATCH:          # one embedding batch per request
                        ids += sum(len(x) for x in c.memory_add_many(batch))
                        n, batch = n + len(batch), []
            except (ValueError, OSError) as exc:
                error = exc                 # what was read before the bad line is still added
            if batch:
                ids += sum(len(x) for x in c.memory_add_many(batch))
                n += len(batch)
            if error is not None:
                print(f"memory import stopped after {n} items: {error}", file=sys.stderr)
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
    s.add_argument("--kind", action="append", choices=("query", "qa_pair", "fact", "document", "concept",
                                                      "agent_step"), help="only this kind (repeatable)")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE", help="only nodes with this metadata")
    s = msub.add_parser("update", parents=[common], help="replace a node's text (keeps its id)")
    s.add_argument("id", type=int)
    s.add_argument("text")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE", help="replace its metadata")
    s = msub.add_parser("history", parents=[common], help="a node's past texts")
    s.add_argument("id", type=int)
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
