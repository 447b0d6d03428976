"""Rows of the memory graph: node CRUD, the edge upsert, export, stats and meta.

This is the store side: every function takes the Database (reads) or an open
write connection (helpers other rooms call inside their own transaction) and
returns plain data. Each write of its own runs in one ``with db.atomic()``.

Decisions worth knowing:
- ``add`` chunks long text by embedding tokens; chunk i -> chunk i+1 get a
  ``follows`` edge and chunks 2..n have ``parent_id`` = the first chunk.
  Deleting the first id deletes the whole document; deleting a later chunk
  deletes only that chunk. Exact duplicates (same kind and text) are not
  inserted again: the existing id is returned.
- ``upsert_edge`` skips an edge whose end has vanished (a concurrent delete)
  instead of failing the whole batch on the foreign key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import MemoryConfig
from ..embedding import Embedder
from ..errors import BadRequest, TooLarge
from .bitindex import quantize
from .chunking import chunk_text
from .db import Connection, Database
from .types import DEFAULT_SOURCE, DIM, NODE_KINDS, SOURCES, default_trust

log = logging.getLogger(__name__)

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


def add(db: Database, cfg: MemoryConfig, embedder: Embedder, text: str, kind: str = "document",
        metadata: Mapping[str, Any] | None = None, session_id: str | None = None, *,
        source: str | None = None, trust: float | None = None, quality: float = 1.0) -> list[int]:
    """Store text (chunked when long); returns node ids in text order."""
    check_text(text, cfg.max_text_bytes)
    check_kind(kind)
    source = source or DEFAULT_SOURCE[kind]
    if source not in SOURCES:
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    md = check_metadata(metadata)
    tr = default_trust(kind, source) if trust is None else float(trust)
    if not 0.0 <= tr <= 1.0 or not 0.0 <= quality <= 1.0:
        raise BadRequest("trust and quality must be in [0, 1]")
    parts = chunk_text(text, cfg.chunk_tokens, embedder.token_offsets)
    vecs = embedder.embed_batch(parts)                                          # (c, d)
    now = time.time()
    ids: list[int] = []
    with db.atomic() as conn:
        for i, (chunk, vec) in enumerate(zip(parts, vecs)):
            row = conn.execute("SELECT id FROM nodes WHERE text_hash = ? AND kind = ? AND archived = 0 "
                               "ORDER BY id LIMIT 1", (text_hash(kind, chunk), kind)).fetchone()
            if row:
                conn.execute("UPDATE nodes SET last_access_at = ? WHERE id = ?", (now, row[0]))
                ids.append(int(row[0]))
                continue
            cmd = dict(md)
            if len(parts) > 1:
                cmd.update(chunk=i, chunks=len(parts))
            ids.append(insert_node(conn, kind=kind, source=source, text=chunk, metadata=cmd, vec=vec, now=now,
                                   quality=quality, trust=tr, session_id=session_id,
                                   parent_id=ids[0] if i > 0 else None))
        for a, b in zip(ids, ids[1:]):
            upsert_edge(conn, a, b, "follows", 1.0, now)
    log.info("memory added", extra={"kind": kind, "chunks": len(parts), "ids": ids[:8]})
    return ids


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
    """Delete a node with its vector and edges (and chunks, for a document's first id)."""
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
