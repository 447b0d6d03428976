"""``memory.*``: add (one text or a batch of items), update, history, search, get,
delete, stats and export of the memory graph.

The rules live in memory/nodes.py and memory/splitting.py; this module only
checks what the wire schema cannot (one of ``text``/``items``, the shape of
each item, the ``kind`` filter) and shapes the replies.
"""

from __future__ import annotations

from typing import Any

from ...errors import BadRequest, ModelUnavailable, NotFound
from ...memory.nodes import MAX_ITEMS
from ...memory.types import NODE_KINDS
from ...protocol import TEXT_MAX, Arg, check_args
from .base import Op, OpContext

# Protocol type names for error messages (docs/protocol.md), not Python's.
WIRE_TYPES = {str: "str", int: "int", float: "num", bool: "bool", dict: "map", list: "array",
              bytes: "bin", type(None): "nil"}
NODE_ID = Arg(int, required=True, lo=1, hi=2**62)
ADD_KINDS = ("document", "fact")
METADATA = Arg(dict, max_len=32)
# One element of memory.add ``items`` (checked here: the schema does not look inside arrays).
ITEM_ARGS = {
    "text": Arg(str, required=True, min_len=1, max_len=TEXT_MAX),
    "kind": Arg(str, choices=ADD_KINDS),
    "metadata": METADATA,
}


def store_of(ctx: OpContext) -> Any:
    """The memory store, or ``model_unavailable`` naming why it is missing."""
    mem = ctx.s.components.memory
    if mem is None:
        raise ModelUnavailable(f"memory is unavailable: {ctx.s.components.memory_error}")
    return mem


def batch_items(a: dict[str, Any]) -> list[dict[str, Any]]:
    """memory.add ``items`` checked one by one; top-level kind/metadata are each item's defaults."""
    out = []
    for i, raw in enumerate(a["items"]):
        path = f"args.items[{i}]"
        if not isinstance(raw, dict):
            got = WIRE_TYPES.get(type(raw), type(raw).__name__)
            raise BadRequest(f"{path}: expected map, got {got}", field=path)
        it = check_args("memory.add", raw, ITEM_ARGS, path=path)
        out.append({"text": it["text"], "kind": it.get("kind") or a.get("kind", "document"),
                    "metadata": {**(a.get("metadata") or {}), **(it.get("metadata") or {})}})
    return out


def add(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    has_text, has_items = "text" in a, "items" in a
    if has_text == has_items:
        raise BadRequest("memory.add: give exactly one of text or items", field="args.text")
    store = store_of(ctx)
    if has_items:
        ids = store.add_many(batch_items(a), link=a.get("link", False))
        return {"ids": ids, "items": len(ids), "nodes": sum(map(len, ids))}
    if a.get("link"):
        raise BadRequest("memory.add: link applies to items only", field="args.link")
    ids = store.add(a["text"], kind=a.get("kind", "document"), metadata=a.get("metadata"))
    parent = ids[0] if len(ids) > 1 else None
    return {"ids": ids, "chunks": len(ids) - (parent is not None), "parent_id": parent}


def update(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    return dict(store_of(ctx).update(a["id"], a["text"], a.get("metadata")))


def history(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    past = store_of(ctx).history(a["id"])
    if past is None:
        raise NotFound(f"no memory node {a['id']}", id=a["id"])
    return {"id": a["id"], "history": past}


def search_filters(a: dict[str, Any]) -> dict[str, Any]:
    """The optional filters as store.search keywords (absent ones are not passed)."""
    out: dict[str, Any] = {}
    kind = a.get("kind")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        for i, k in enumerate(kinds):
            if not isinstance(k, str) or k not in NODE_KINDS:
                path = "args.kind" if isinstance(kind, str) else f"args.kind[{i}]"
                raise BadRequest(f"{path}: {k!r} is not one of {', '.join(NODE_KINDS)}", field=path)
        if not kinds:
            raise BadRequest("args.kind: an empty array matches nothing",
                             field="args.kind")
        out["kinds"] = kinds
    if a.get("metadata"):
        out["metadata"] = dict(a["metadata"])
    return out


def search(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    return {"hits": store_of(ctx).search(a["query"], a.get("k", 10), **search_filters(a),
                                         embed=ctx.embed)}


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
    out = store_of(ctx).stats()
    if ctx.batcher is not None:
        out["embed_batches"] = ctx.batcher.stats.as_dict()
    return out


def export(ctx: OpContext, a: dict[str, Any]) -> dict[str, Any]:
    rows, nxt = store_of(ctx).export(a.get("after_id", 0), a.get("limit", 1000),
                                     a.get("include_archived", True))
    return {"nodes": rows, "next_after_id": nxt}


OPS = [
    Op("memory.add", "aux", {
        "text": Arg(str, min_len=1, max_len=TEXT_MAX),
        "items": Arg(list, min_len=1, max_len=MAX_ITEMS),
        "kind": Arg(str, choices=ADD_KINDS, default="document"),
        "metadata": METADATA,
        "link": Arg(bool, default=False),
    }, add, requires="memory"),
    Op("memory.update", "aux", {
        "id": NODE_ID,
        "text": Arg(str, required=True, min_len=1, max_len=TEXT_MAX),
        "metadata": METADATA,
    }, update, requires="memory"),
    Op("memory.history", "fast", {"id": NODE_ID}, history, requires="memory"),
    Op("memory.search", "fast", {
        "query": Arg(str, required=True, min_len=1, max_len=TEXT_MAX),
        "k": Arg(int, lo=1, hi=100, default=10),
        "kind": Arg((str, list), min_len=1, max_len=16),
        "metadata": METADATA,
    }, search, requires="memory", embeds="query"),
    Op("memory.get", "fast", {"id": NODE_ID}, get, requires="memory"),
    Op("memory.delete", "aux", {"id": NODE_ID}, delete, requires="memory"),
    Op("memory.stats", "aux", {}, stats, requires="memory"),
    Op("memory.export", "aux", {
        "after_id": Arg(int, lo=0, hi=2**62, default=0),
        "limit": Arg(int, lo=1, hi=10_000, default=1000),
        "include_archived": Arg(bool, default=True),
    }, export, requires="memory"),
]
