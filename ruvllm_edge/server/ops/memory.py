"""``memory.*``: add, search, get, delete, stats and export of the memory graph."""

from __future__ import annotations

from typing import Any

from ...errors import ModelUnavailable, NotFound
from ...protocol import TEXT_MAX, Arg
from .base import Op, OpContext

NODE_ID = Arg(int, required=True, lo=1, hi=2**62)


def store_of(ctx: OpContext) -> Any:
    """The memory store, or ``model_unavailable`` naming why it is missing."""
    mem = ctx.s.components.memory
    if mem is None:
        raise ModelUnavailable(f"memory is unavailable: {ctx.s.components.memory_error}")
    return mem


def add(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    ids = store_of(ctx).add(a["text"], kind=a.get("kind", "document"), metadata=a.get("metadata"))
    return {"ids": ids, "chunks": len(ids)}


def search(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    return {"hits": store_of(ctx).search(a["query"], a.get("k", 10))}


def get(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    node = store_of(ctx).get(a["id"])
    if node is None:
        raise NotFound(f"no memory node {a['id']}", id=a["id"])
    return node


def delete(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    if not store_of(ctx).delete(a["id"]):
        raise NotFound(f"no memory node {a['id']}", id=a["id"])
    return {"id": a["id"], "deleted": True}


def stats(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    return store_of(ctx).stats()


def export(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    rows, nxt = store_of(ctx).export(a.get("after_id", 0), a.get("limit", 1000),
                                     a.get("include_archived", True))
    return {"nodes": rows, "next_after_id": nxt}


OPS = [
    Op("memory.add", "aux", {
        "text": Arg(str, required=True, min_len=1, max_len=TEXT_MAX),
        "kind": Arg(str, choices=("document", "fact"), default="document"),
        "metadata": Arg(dict, max_len=32),
    }, add, requires="memory"),
    Op("memory.search", "aux", {
        "query": Arg(str, required=True, min_len=1, max_len=TEXT_MAX),
        "k": Arg(int, lo=1, hi=100, default=10),
    }, search, requires="memory"),
    Op("memory.get", "aux", {"id": NODE_ID}, get, requires="memory"),
    Op("memory.delete", "aux", {"id": NODE_ID}, delete, requires="memory"),
    Op("memory.stats", "aux", {}, stats, requires="memory"),
    Op("memory.export", "aux", {
        "after_id": Arg(int, lo=0, hi=2**62, default=0),
        "limit": Arg(int, lo=1, hi=10_000, default=1000),
        "include_archived": Arg(bool, default=True),
    }, export, requires="memory"),
]
