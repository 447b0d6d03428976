"""Rows of the memory graph: node CRUD, the edge upsert, export, stats and meta.

This is the store side: every function takes the Database (reads) or an open
write connection (helpers other rooms call inside their own transaction) and
returns plain data. Each write of its own runs in one ``with db.atomic()``.

Decisions worth knowing:
- ``add`` splits a note into units (splitting.py: lines, sentences, then
  token chunks). One unit: one node, as it always was. Several: a parent node
  (the whole text, metadata ``parts``: n) and one child per unit (``parent_id``
  column and metadata, ``part``: i), ``contains`` parent -> child and
  ``follows`` child i -> child i+1, all in one transaction and one embedding
  batch. Retrieval leaves parents (metadata ``parts``) out of its candidates.
  Deleting the parent deletes its children (ON DELETE CASCADE). Exact
  duplicates (same kind and text) are not inserted again: the existing id is
  returned (a child is reused only from the same parent, see ``_reuse``).
- ``update`` keeps the id, re-embeds (the vec_log and FTS triggers re-index)
  and records the old text in ``node_history`` (migration 0007);
  ``record_history`` is the helper other writers call in their transaction.
- ``upsert_edge`` skips an edge whose end has vanished (a concurrent delete)
  instead of failing the whole batch on the foreign key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import MemoryConfig
from ..embedding import Embedder
from ..errors import BadRequest, NotFound, TooLarge
from .bitindex import quantize
from .db import Connection, Database
from .splitting import split_units
from .types import DEFAULT_SOURCE, DIM, NODE_KINDS, SOURCES, default_trust

log = logging.getLogger(__name__)

MAX_ITEMS = 512           # items per add_many (memory.add ``items``): one transaction, bounded
# Metadata keys the store sets on split notes; a caller may not set them.
SPLIT_KEYS = frozenset({"parts", "part", "parent_id"})
# Why a node's text changed (node_history.source).
HISTORY_SOURCES = ("user", "correction", "writeback", "compression")
SQL_CHUNK = 500           # ids per IN (...) list, well under SQLite's variable limit
NODE_COLS = ("id", "kind", "source", "text", "metadata", "created_at", "last_access_at",
             "access_count", "quality", "trust", "session_id", "request_id", "parent_id", "archived")


# ---------------------------------------------------------------------------
# Small SQL helpers shared by the store-side modules


def chunks(seq: Sequence[Any], n: int = SQL_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def marks(n: int) -> str:
    return ",".join("?" * n)


def named(prefix: str, values: Sequence[str]) -> tuple[str, dict[str, str]]:
    """(":k0,:k1", {"k0": ..., "k1": ...}) for a named-parameter IN list."""
    return (",".join(f":{prefix}{i}" for i in range(len(values))),
            {f"{prefix}{i}": v for i, v in enumerate(values)})


def vec_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def text_hash(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}\x00{text.strip()}".encode("utf-8")).hexdigest()[:32]


def check_text(text: Any, max_bytes: int, what: str = "text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} must be a non-empty string")
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise TooLarge(f"{what} is {size} bytes, the limit is memory.max_text_bytes = {max_bytes}",
                       limit_bytes=max_bytes, size_bytes=size)
    return text


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    md = dict(metadata or {})
    try:
        json.dumps(md)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"metadata must be JSON-serialisable: {exc}") from None
    return md


def check_kind(kind: str) -> None:
    if kind not in NODE_KINDS:
        raise BadRequest(f"kind must be one of {', '.join(NODE_KINDS)}, got {kind!r}")


# ---------------------------------------------------------------------------
# Writes inside a caller's transaction


def insert_node(conn: Connection, *, kind: str, source: str, text: str, metadata: Mapping[str, Any],
                vec: np.ndarray, now: float, quality: float, trust: float, session_id: str | None = None,
                request_id: str | None = None, parent_id: int | None = None) -> int:
    cur = conn.execute(
        "INSERT INTO nodes(kind, source, text, metadata, text_hash, created_at, last_access_at, "
        "quality, trust, session_id, request_id, parent_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (kind, source, text, json.dumps(dict(metadata), ensure_ascii=False), text_hash(kind, text), now,
         now, float(min(1.0, max(0.0, quality))), trust, session_id, request_id, parent_id))
    assert cur.lastrowid is not None
    nid = int(cur.lastrowid)
    conn.execute("INSERT INTO node_vectors(id, embedding, bits) VALUES (?,?,?)",
                 (nid, vec_blob(vec), quantize(vec)[0].tobytes()))
    return nid


def set_vector(conn: Connection, node_id: int, vec: np.ndarray) -> None:
    """Replace a node's vector (the vec_log trigger tells every index mirror)."""
    conn.execute("UPDATE node_vectors SET embedding = ?, bits = ? WHERE id = ?",
                 (vec_blob(vec), quantize(vec)[0].tobytes(), node_id))


def upsert_edge(conn: Connection, src: int, dst: int, kind: str, weight: float, now: float) -> None:
    """Insert an edge or raise its weight; silently skips if an end no longer exists."""
    if src == dst:
        return
    conn.execute(
        "INSERT INTO edges(src, dst, kind, weight, created_at, updated_at) "
        "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM nodes WHERE id = ?) "
        "AND EXISTS (SELECT 1 FROM nodes WHERE id = ?) "
        "ON CONFLICT(src, dst, kind) DO UPDATE SET weight = max(weight, excluded.weight), "
        "updated_at = excluded.updated_at",
        (src, dst, kind, float(min(1.0, max(0.0, weight))), now, now, src, dst))


def exists(conn: Connection, node_id: int) -> bool:
    return conn.execute("SELECT 1 FROM nodes WHERE id = ?", (int(node_id),)).fetchone() is not None


# ---------------------------------------------------------------------------
# CRUD


@dataclass(frozen=True)
class Planned:
    """One item of an add, split and checked, before anything is embedded."""

    kind: str
    metadata: dict[str, Any]
    text: str                   # the whole text, stripped
    units: list[str]            # the searchable units; one unit means no parent


def plan_item(cfg: MemoryConfig, embedder: Embedder, text: Any, kind: Any, metadata: Any,
              what: str = "text") -> Planned:
    """Check one item and split it into units (splitting.split_units)."""
    check_text(text, cfg.max_text_bytes, what)
    check_kind(kind)
    md = check_metadata(metadata)
    reserved = sorted(set(md) & SPLIT_KEYS)
    if reserved:
        raise BadRequest(f"metadata keys {', '.join(reserved)} are reserved for split notes")
    units = split_units(text, cfg.chunk_tokens, embedder.token_offsets)
    return Planned(kind, md, text.strip(), units)


def _reuse(conn: Connection, kind: str, text: str, parent: int | None) -> int | None:
    """An identical live node to reuse instead of inserting, or None.

    A unit is only reused if it is a top-level node or already a child of the
    same parent: reusing another note's child would tie the two notes
    together, and deleting that other note would cascade into this one.
    """
    row = conn.execute(
        "SELECT id FROM nodes WHERE text_hash = ? AND kind = ? AND archived = 0 "
        "AND (parent_id IS NULL OR parent_id IS ?) ORDER BY id LIMIT 1",
        (text_hash(kind, text), kind, parent)).fetchone()
    return None if row is None else int(row[0])


def write_planned(conn: Connection, item: Planned, vecs: np.ndarray, now: float, *, source: str,
                  trust: float, quality: float, session_id: str | None) -> list[int]:
    """Insert one planned item inside the caller's transaction: [id] or [parent, *children].

    ``vecs`` rows: the parent's first (when it has units > 1), then one per unit.
    """
    common = dict(kind=item.kind, source=source, now=now, quality=quality, trust=trust,
                  session_id=session_id)

    def put(text: str, md: dict[str, Any], vec: np.ndarray, parent: int | None) -> int:
        got = _reuse(conn, item.kind, text, parent)
        if got is not None:
            conn.execute("UPDATE nodes SET last_access_at = ? WHERE id = ?", (now, got))
            return got
        return insert_node(conn, text=text, metadata=md, vec=vec, parent_id=parent, **common)

    if len(item.units) == 1:
        return [put(item.units[0], item.metadata, vecs[0], None)]
    parent = put(item.text, {**item.metadata, "parts": len(item.units)}, vecs[0], None)
    children = [put(u, {**item.metadata, "parent_id": parent, "part": i}, v, parent)
                for i, (u, v) in enumerate(zip(item.units, vecs[1:]))]
    for c in children:
        upsert_edge(conn, parent, c, "contains", 1.0, now)
    for a, b in zip(children, children[1:]):
        upsert_edge(conn, a, b, "follows", 1.0, now)
    return [parent, *children]


def _embed_texts(item: Planned) -> list[str]:
    return item.units if len(item.units) == 1 else [item.text, *item.units]


def _source_and_trust(kind: str, source: str | None, trust: float | None,
                      quality: float) -> tuple[str, float]:
    source = source or DEFAULT_SOURCE[kind]
    if source not in SOURCES:
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    tr = default_trust(kind, source) if trust is None else float(trust)
    if not 0.0 <= tr <= 1.0 or not 0.0 <= quality <= 1.0:
        raise BadRequest("trust and quality must be in [0, 1]")
    return source, tr


def add(db: Database, cfg: MemoryConfig, embedder: Embedder, text: str, kind: str = "document",
        metadata: Mapping[str, Any] | None = None, session_id: str | None = None, *,
        source: str | None = None, trust: float | None = None, quality: float = 1.0) -> list[int]:
    """Store text; returns [id] for a one-unit text, else [parent id, *child ids] in text order."""
    return add_many(db, cfg, embedder, [{"text": text, "kind": kind, "metadata": metadata}],
                    session_id=session_id, source=source, trust=trust, quality=quality)[0]


def add_many(db: Database, cfg: MemoryConfig, embedder: Embedder, items: Sequence[Mapping[str, Any]],
             *, link: bool = False, session_id: str | None = None, source: str | None = None,
             trust: float | None = None, quality: float = 1.0) -> list[list[int]]:
    """Store several items ({text, kind?, metadata?}) with one embedding batch and one transaction.

    Returns the ids of each item (as ``add`` does), in item order. ``link``
    adds a ``follows`` edge from each item's last unit to the next item's
    first unit (conversation turns stored in order). Every item is checked
    before anything is embedded, so a bad item fails the whole call cleanly.
    """
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"at most {MAX_ITEMS} items per add, got {len(items)}")
    planned: list[tuple[Planned, str, float]] = []
    for i, it in enumerate(items):
        what = "text" if len(items) == 1 else f"items[{i}].text"
        p = plan_item(cfg, embedder, it.get("text"), it.get("kind") or "document", it.get("metadata"), what)
        planned.append((p, *_source_and_trust(p.kind, source, trust, quality)))
    texts = [t for p, _, _ in planned for t in _embed_texts(p)]
    vecs = embedder.embed_batch(texts)                                      # (n, d)
    now = time.time()
    out: list[list[int]] = []
    row = 0
    with db.atomic() as conn:
        for p, src, tr in planned:
            n = len(_embed_texts(p))
            out.append(write_planned(conn, p, vecs[row:row + n], now, source=src, trust=tr,
                                     quality=quality, session_id=session_id))
            row += n
        if link:
            for a, b in zip(out, out[1:]):
                upsert_edge(conn, a[-1], b[0] if len(b) == 1 else b[1], "follows", 1.0, now)
    log.info("memory added", extra={"items": len(out), "nodes": sum(map(len, out))})
    return out


def add_embedded(db: Database, cfg: MemoryConfig, texts: Sequence[str], vecs: np.ndarray,
                 kind: str = "document", *, source: str | None = None, quality: float = 1.0,
                 metadata: Mapping[str, Any] | None = None) -> list[int]:
    """Insert already-embedded texts in one transaction (imports, benchmarks).

    vecs: (n, 384) float32 unit rows. No chunking and no dedup: the caller
    vouches for the input.
    """
    vecs = np.asarray(vecs, dtype=np.float32)
    check_kind(kind)
    if vecs.shape != (len(texts), DIM) or not np.all(np.isfinite(vecs)):
        raise BadRequest(f"vecs must be finite ({len(texts)}, {DIM}), got {vecs.shape}")
    norms = np.linalg.norm(vecs, axis=1)
    if len(texts) and not np.allclose(norms, 1.0, atol=1e-3):
        raise BadRequest("vecs must have unit L2 norm")
    source = source or DEFAULT_SOURCE[kind]
    trust = default_trust(kind, source)
    now = time.time()
    md = dict(metadata or {})
    with db.atomic() as conn:
        return [insert_node(conn, kind=kind, source=source, text=check_text(t, cfg.max_text_bytes),
                            metadata=md, vec=v, now=now, quality=quality, trust=trust)
                for t, v in zip(texts, vecs)]


def delete(db: Database, node_id: int) -> bool:
    """Delete a node with its vector, edges and history (and its children, for a split note's parent)."""
    with db.atomic() as conn:
        n = conn.execute("DELETE FROM nodes WHERE id = ?", (int(node_id),)).rowcount
    return n > 0


def archive(db: Database, node_ids: Sequence[int], archived: bool = True) -> int:
    """Move nodes to (or back from) cold storage: kept, out of default search."""
    n = 0
    with db.atomic() as conn:
        for part in chunks([int(i) for i in node_ids]):
            n += conn.execute(f"UPDATE nodes SET archived = ? WHERE archived != ? AND id IN "
                              f"({marks(len(part))})", (int(archived), int(archived), *part)).rowcount
    return n


# ---------------------------------------------------------------------------
# Update and history (mem0's update/history)


def record_history(conn: Connection, node_id: int, old_text: str, source: str, now: float) -> None:
    """Keep a node's previous text before it is overwritten, inside the caller's transaction.

    ``source`` says why it changed: user (memory.update), correction
    (feedback), writeback (a merged answer), compression (a concept rewrite).
    """
    if source not in HISTORY_SOURCES:
        raise BadRequest(f"history source must be one of {', '.join(HISTORY_SOURCES)}, got {source!r}")
    conn.execute("INSERT INTO node_history(node_id, text, source, changed_at) VALUES (?, ?, ?, ?)",
                 (int(node_id), old_text, source, now))


def _set_text(conn: Connection, node_id: int, kind: str, text: str, metadata: Mapping[str, Any],
              vec: np.ndarray) -> None:
    """Overwrite a node's text, hash, metadata and vector; the triggers re-index FTS and vec_log."""
    conn.execute("UPDATE nodes SET text = ?, text_hash = ?, metadata = ? WHERE id = ?",
                 (text, text_hash(kind, text), json.dumps(dict(metadata), ensure_ascii=False), node_id))
    set_vector(conn, node_id, vec)


_UPDATE_COLS = "kind, source, text, metadata, parent_id, trust, quality, session_id"


def update(db: Database, cfg: MemoryConfig, embedder: Embedder, node_id: int, text: str,
           metadata: Mapping[str, Any] | None = None, *, source: str = "user") -> dict[str, Any]:
    """Replace a node's text (and user metadata when given), keeping its id.

    The old text goes to ``node_history`` with ``source``. A top-level node is
    split again like ``add``: a parent's old children are deleted and new ones
    created (a one-unit text leaves a plain node, a several-unit text makes a
    parent). A child stays one node; its parent's text has the old unit
    replaced by the new one, is re-embedded, and gets its own history row.
    Returns {"id", "ids": [id, *child ids], "text_changed"}.
    """
    node_id = int(node_id)
    check_text(text, cfg.max_text_bytes)
    if source not in HISTORY_SOURCES:
        raise BadRequest(f"history source must be one of {', '.join(HISTORY_SOURCES)}, got {source!r}")
    new_md = None if metadata is None else check_metadata(metadata)
    if new_md is not None and set(new_md) & SPLIT_KEYS:
        raise BadRequest(f"metadata keys {', '.join(sorted(set(new_md) & SPLIT_KEYS))} are reserved "
                         f"for split notes")
    row = db.read(f"SELECT {_UPDATE_COLS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
    if row is None:
        raise NotFound(f"no memory node {node_id}", id=node_id)
    kind, nsource, old_text, old_md_s, parent_id, trust, quality, session_id = row
    old_md = json.loads(old_md_s)
    user_md = {k: v for k, v in (old_md if new_md is None else new_md).items() if k not in SPLIT_KEYS}
    new_text = text.strip()
    parent_text: str | None = None
    if parent_id is not None:                          # a child: one node, patch its parent
        prow = db.read("SELECT text FROM nodes WHERE id = ?", (parent_id,)).fetchone()
        if prow is not None and old_text in prow[0]:
            parent_text = prow[0].replace(old_text, new_text, 1)
        item = Planned(kind, user_md, new_text, [new_text])
        texts = [new_text] + ([parent_text] if parent_text is not None else [])
    else:
        item = Planned(kind, user_md, new_text, split_units(new_text, cfg.chunk_tokens, embedder.token_offsets))
        texts = _embed_texts(item)
    vecs = embedder.embed_batch(texts)                                      # (n, d)
    now = time.time()
    changed = new_text != old_text
    with db.atomic() as conn:
        cur = conn.execute("SELECT text FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if cur is None:
            raise NotFound(f"no memory node {node_id}", id=node_id)
        if cur[0] != old_text:
            raise BadRequest(f"memory node {node_id} changed while it was being updated; try again")
        if changed:
            record_history(conn, node_id, old_text, source, now)
        if parent_id is not None:
            md = {**user_md, **{k: old_md[k] for k in ("parent_id", "part") if k in old_md}}
            _set_text(conn, node_id, kind, new_text, md, vecs[0])
            if parent_text is not None and changed:
                ptext = conn.execute("SELECT text FROM nodes WHERE id = ?", (parent_id,)).fetchone()
                if ptext is not None and old_text in ptext[0]:
                    record_history(conn, parent_id, ptext[0], source, now)
                    pmd = json.loads(conn.execute("SELECT metadata FROM nodes WHERE id = ?",
                                                  (parent_id,)).fetchone()[0])
                    _set_text(conn, parent_id, kind, ptext[0].replace(old_text, new_text, 1), pmd, vecs[1])
            return {"id": node_id, "ids": [node_id], "text_changed": changed}
        conn.execute("DELETE FROM nodes WHERE parent_id = ?", (node_id,))
        if len(item.units) == 1:
            _set_text(conn, node_id, kind, new_text, user_md, vecs[0])
            return {"id": node_id, "ids": [node_id], "text_changed": changed}
        _set_text(conn, node_id, kind, new_text, {**user_md, "parts": len(item.units)}, vecs[0])
        children = [insert_node(conn, kind=kind, source=nsource, text=u,
                                metadata={**user_md, "parent_id": node_id, "part": i}, vec=v, now=now,
                                quality=quality, trust=trust, session_id=session_id, parent_id=node_id)
                    for i, (u, v) in enumerate(zip(item.units, vecs[1:]))]
        for c in children:
            upsert_edge(conn, node_id, c, "contains", 1.0, now)
        for a, b in zip(children, children[1:]):
            upsert_edge(conn, a, b, "follows", 1.0, now)
    log.info("memory updated", extra={"id": node_id, "parts": len(item.units)})
    return {"id": node_id, "ids": [node_id, *children], "text_changed": changed}


def history(db: Database, node_id: int) -> list[dict[str, Any]] | None:
    """A node's past texts, oldest first ({text, source, changed_at}); None if there is no such node."""
    if db.read("SELECT 1 FROM nodes WHERE id = ?", (int(node_id),)).fetchone() is None:
        return None
    return [{"text": t, "source": s, "changed_at": c} for t, s, c in db.read(
        "SELECT text, source, changed_at FROM node_history WHERE node_id = ? ORDER BY id", (int(node_id),))]


# ---------------------------------------------------------------------------
# Reads


def row_dict(r: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(NODE_COLS, r))
    d["metadata"] = json.loads(d["metadata"])
    d["archived"] = bool(d["archived"])
    return d


def get(db: Database, node_id: int) -> dict[str, Any] | None:
    r = db.read(f"SELECT {', '.join(NODE_COLS)} FROM nodes WHERE id = ?", (int(node_id),)).fetchone()
    if r is None:
        return None
    d = row_dict(r)
    d["edges"] = [{"src": s, "dst": t, "kind": k, "weight": w, "updated_at": u} for s, t, k, w, u in
                  db.read("SELECT src, dst, kind, weight, updated_at FROM edges WHERE src = ? "
                          "UNION ALL SELECT src, dst, kind, weight, updated_at FROM edges "
                          "WHERE dst = ?", (int(node_id), int(node_id)))]
    d["chunk_ids"] = [i for (i,) in db.read("SELECT id FROM nodes WHERE parent_id = ? ORDER BY id",
                                            (int(node_id),))]
    return d


def read_vectors(db: Database, node_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """id -> (384,) float32 for the given ids that have a vector."""
    out: dict[int, np.ndarray] = {}
    for part in chunks(list(node_ids)):
        for nid, emb in db.read(f"SELECT id, embedding FROM node_vectors WHERE id IN ({marks(len(part))})",
                                part):
            out[nid] = np.frombuffer(emb, dtype="<f4")
    return out


def vectors(db: Database, node_ids: Sequence[int]) -> np.ndarray:
    """(n, 384) float32 stored vectors, in the order given (compression jobs)."""
    got = read_vectors(db, node_ids)
    missing = [i for i in node_ids if i not in got]
    if missing:
        raise BadRequest(f"no vector for node(s) {missing[:10]}")
    return np.stack([got[i] for i in node_ids]) if node_ids else np.zeros((0, DIM), np.float32)


def node_texts(db: Database, node_ids: Sequence[int]) -> dict[int, str]:
    """id -> text of the given nodes that exist and are not archived."""
    out: dict[int, str] = {}
    for part in chunks([int(i) for i in node_ids]):
        out.update((int(i), t) for i, t in db.read(
            f"SELECT id, text FROM nodes WHERE archived = 0 AND id IN ({marks(len(part))})", part))
    return out


def kinds(db: Database, node_ids: Iterable[int]) -> dict[int, str]:
    ids = list(node_ids)
    out: dict[int, str] = {}
    for part in chunks(ids):
        out.update(db.read(f"SELECT id, kind FROM nodes WHERE id IN ({marks(len(part))})", part))
    return out


def node_count(db: Database) -> int:
    return int(db.read("SELECT count(*) FROM nodes").fetchone()[0])


def counts_by_kind(db: Database, archived: bool | None = None) -> dict[str, int]:
    """Nodes per kind (every kind, zeros too), from the trigger-kept counters: O(1).

    ``archived`` None counts all nodes, True/False only archived/searchable ones.
    """
    where = "" if archived is None else f" WHERE archived = {int(archived)}"
    got = dict(db.read(f"SELECT kind, sum(n) FROM node_counts{where} GROUP BY kind").fetchall())
    return {k: int(got.get(k, 0)) for k in NODE_KINDS}


def stats(db: Database) -> dict[str, Any]:
    """Node and edge counts, corrections and the file size (the ``memory.stats`` op's core)."""
    by_kind = {k: n for k, n in counts_by_kind(db).items() if n}
    archived = sum(counts_by_kind(db, archived=True).values())
    edges = dict(db.read("SELECT kind, count(*) FROM edges GROUP BY kind").fetchall())
    corrections = db.read("SELECT count(*) FROM nodes WHERE kind = 'fact' AND source = 'feedback'"
                          ).fetchone()[0]
    size = sum(p.stat().st_size for p in (db.path, db.path.with_name(db.path.name + "-wal")) if p.exists())
    return {"nodes": int(sum(by_kind.values())), "nodes_by_kind": by_kind, "archived": int(archived),
            "corrections": int(corrections), "edges": int(sum(edges.values())), "edges_by_kind": edges,
            "db_bytes": int(size)}


def export(db: Database, after_id: int = 0, limit: int = 1000,
           include_archived: bool = True) -> tuple[list[dict[str, Any]], int]:
    """One page of nodes (with their outgoing edges) after ``after_id``; next id or 0 when done."""
    if limit < 1:
        raise BadRequest("limit must be >= 1")
    where = "" if include_archived else " AND archived = 0"
    rows = [row_dict(r) for r in db.read(
        f"SELECT {', '.join(NODE_COLS)} FROM nodes WHERE id > ?{where} ORDER BY id LIMIT ?",
        (int(after_id), int(limit)))]
    ids = [r["id"] for r in rows]
    out_edges: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for part in chunks(ids):
        for s, t, k, w in db.read(f"SELECT src, dst, kind, weight FROM edges WHERE src IN "
                                  f"({marks(len(part))})", part):
            out_edges[s].append({"dst": t, "kind": k, "weight": w})
    for r in rows:
        r["edges"] = out_edges[r["id"]]
    return rows, (ids[-1] if len(rows) == limit else 0)


# ---------------------------------------------------------------------------
# Small persistent values of the memory subsystem (memory_meta)


def meta_get(db: Database, key: str) -> str | None:
    row = db.read("SELECT value FROM memory_meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def meta_set(db: Database, key: str, value: str) -> None:
    with db.atomic() as conn:
        conn.execute("INSERT INTO memory_meta(key, value, updated_at) VALUES (?, ?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                     "updated_at = excluded.updated_at", (key, value, time.time()))
