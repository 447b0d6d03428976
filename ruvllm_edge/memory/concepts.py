"""The store side of compression (learning loop C): what it reads and writes.

compress.py holds the rules (clustering, the summary prompt, validation) and
the idle job; this module reads the candidates and commits the outcome:
- ``compression_candidates``: eligible nodes with their vectors and links.
- ``add_concept``: the concept node, its ``contains`` edges and the archiving
  of old members in ONE transaction; MembersChanged (nothing written) if a
  member changed while the model was writing.
- ``archive_compressed``: members too recently used when their concept was
  written are archived once they, too, go unused long enough.
- ``undo_concept``: bring the members back into search, delete the concept.

Archived members stay readable by ``get`` but never become retrieval
candidates, also not through ``contains`` edges. Only qa_pair, query and
agent_step members that are not corrections are ever archived; other kinds
are linked but stay searchable.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadRequest, NotFound
from .db import Database
from .nodes import check_metadata, check_text, chunks, insert_node, marks, named, upsert_edge, vectors
from .types import (CLUSTER_EDGE_KINDS, COMPRESSIBLE_KINDS, DIM, CandidateSet, ConceptWrite, EdgeRow,
                    MembersChanged, default_trust)


def compression_candidates(db: Database, *, created_before: float, min_edge_weight: float, limit: int,
                           after_id: int = 0) -> CandidateSet:
    """Eligible nodes with their vectors and the qualifying links among them.

    Eligible: a compressible kind, not archived, created before
    ``created_before``, not already in a concept, with at least one
    qualifying link (cluster edge kinds, weight >= ``min_edge_weight``) to
    another eligible node. At most ``limit`` of them, by id after
    ``after_id``; ``next_after_id`` continues the scan (0 = start over), so
    a window that never clusters cannot stall compression.
    """
    if limit < 1:
        raise BadRequest("limit must be >= 1")
    kinds, params = named("k", COMPRESSIBLE_KINDS)
    ekinds, eparams = named("e", CLUSTER_EDGE_KINDS)
    args: dict[str, Any] = {**params, **eparams, "before": float(created_before), "w": float(min_edge_weight),
                            "after": int(after_id), "limit": int(limit)}
    eligible = (f"SELECT n.id FROM nodes n WHERE n.kind IN ({kinds}) AND n.archived = 0 "
                f"AND n.created_at < :before AND NOT EXISTS (SELECT 1 FROM edges c "
                f"WHERE c.dst = n.id AND c.kind = 'contains')")
    linked = (f"WITH elig AS MATERIALIZED ({eligible}), "
              f"pairs AS (SELECT e.src AS a, e.dst AS b FROM edges e JOIN elig x ON x.id = e.src "
              f"JOIN elig y ON y.id = e.dst WHERE e.kind IN ({ekinds}) AND e.weight >= :w) "
              f"SELECT DISTINCT id FROM (SELECT a AS id FROM pairs UNION SELECT b FROM pairs) "
              f"WHERE id > :after ORDER BY id LIMIT :limit")
    ids = [int(r[0]) for r in db.read(linked, args)]
    nxt = ids[-1] if len(ids) == limit else 0
    edges: list[EdgeRow] = []
    for part in chunks(ids):
        m = marks(len(part))
        edges.extend((int(a), int(b), k, float(w)) for a, b, k, w in db.read(
            f"SELECT src, dst, kind, weight FROM edges WHERE src IN ({m}) AND kind IN "
            f"({marks(len(CLUSTER_EDGE_KINDS))}) AND weight >= ?",
            (*part, *CLUSTER_EDGE_KINDS, float(min_edge_weight))))
    known = set(ids)
    edges = [e for e in edges if e[1] in known]
    return CandidateSet(ids, vectors(db, ids), edges, nxt)                   # vecs: (n, d)


def add_concept(db: Database, max_text_bytes: int, text: str, vec: np.ndarray, member_ids: Sequence[int], *,
                archive_before: float | None = None,
                metadata: Mapping[str, Any] | None = None) -> ConceptWrite:
    """Write a concept over ``member_ids`` in ONE transaction.

    Inserts the concept node (kind concept, source learning, trust 0.6,
    quality = the members' mean), a ``contains`` edge concept -> each member
    (weight = cosine of the member with the concept, floored at 0), and
    archives the members whose last access is before ``archive_before``
    (None: archive none). Raises MembersChanged, writing nothing, when a
    member is gone, archived, or already in a concept.
    """
    check_text(text, max_text_bytes, "concept text")
    v = np.asarray(vec, dtype=np.float32)
    if v.shape != (DIM,) or not np.all(np.isfinite(v)) or abs(float(np.linalg.norm(v)) - 1.0) > 1e-3:
        raise BadRequest(f"concept vector must be a finite unit ({DIM},) vector")
    members = [int(i) for i in member_ids]
    if not members or len(set(members)) != len(members):
        raise BadRequest("a concept needs at least one member and no repeated ids")
    md = check_metadata(metadata)
    md["members"] = len(members)
    now = time.time()
    with db.atomic() as conn:
        # id -> (kind, source, archived, last_access_at, quality, embedding, in_concept)
        rows: dict[int, tuple] = {}
        for part in chunks(members):
            for r in conn.execute(
                    f"SELECT n.id, n.kind, n.source, n.archived, n.last_access_at, n.quality, v.embedding, "
                    f"EXISTS (SELECT 1 FROM edges c WHERE c.dst = n.id AND c.kind = 'contains') "
                    f"FROM nodes n JOIN node_vectors v ON v.id = n.id WHERE n.id IN ({marks(len(part))})", part):
                rows[int(r[0])] = r[1:]
        bad = {i: ("missing" if i not in rows else "archived" if rows[i][2] else "in a concept")
               for i in members if i not in rows or rows[i][2] or rows[i][6]}
        if bad:
            raise MembersChanged(f"{len(bad)} member(s) changed since the cluster was read",
                                 members={str(k): why for k, why in list(bad.items())[:10]})
        quality = float(np.mean([rows[i][4] for i in members]))
        cid = insert_node(conn, kind="concept", source="learning", text=text.strip(), metadata=md,
                          vec=v, now=now, quality=quality, trust=default_trust("concept", "learning"))
        for i in members:
            mv = np.frombuffer(rows[i][5], dtype="<f4")
            upsert_edge(conn, cid, i, "contains", max(0.0, float(mv @ v)), now)
        archive = [i for i in members if archive_before is not None and rows[i][0] in COMPRESSIBLE_KINDS
                   and rows[i][1] != "feedback" and rows[i][3] < archive_before]
        for part in chunks(archive):
            conn.execute(f"UPDATE nodes SET archived = 1, metadata = json_set(metadata, '$.compressed_into', ?) "
                         f"WHERE id IN ({marks(len(part))})", (cid, *part))
    return ConceptWrite(cid, tuple(members), tuple(archive))


def archive_compressed(db: Database, before: float) -> int:
    """Archive members of existing concepts whose last access is before ``before``.

    Same kind rules as ``add_concept``. Returns the number archived.
    """
    kinds, params = named("k", COMPRESSIBLE_KINDS)
    with db.atomic() as conn:
        n = conn.execute(
            f"UPDATE nodes SET archived = 1, metadata = json_set(metadata, '$.compressed_into', "
            f"(SELECT min(c.src) FROM edges c WHERE c.dst = nodes.id AND c.kind = 'contains')) "
            f"WHERE archived = 0 AND kind IN ({kinds}) AND source != 'feedback' "
            f"AND last_access_at < :before AND id IN (SELECT dst FROM edges WHERE kind = 'contains')",
            {**params, "before": float(before)}).rowcount
    return int(n)


def undo_concept(db: Database, concept_id: int) -> int:
    """Undo one compression: bring its archived members back into search and delete the concept.

    Returns the number of members restored. NotFound for an unknown id,
    BadRequest for a node that is not a concept.
    """
    with db.atomic() as conn:
        row = conn.execute("SELECT kind FROM nodes WHERE id = ?", (int(concept_id),)).fetchone()
        if row is None:
            raise NotFound(f"no memory node {concept_id}", id=int(concept_id))
        if row[0] != "concept":
            raise BadRequest(f"node {concept_id} is a {row[0]}, not a concept")
        n = conn.execute(
            "UPDATE nodes SET archived = 0, metadata = json_remove(metadata, '$.compressed_into') "
            "WHERE archived = 1 AND json_extract(metadata, '$.compressed_into') = ? AND id IN "
            "(SELECT dst FROM edges WHERE src = ? AND kind = 'contains')",
            (int(concept_id), int(concept_id))).rowcount
        conn.execute("DELETE FROM nodes WHERE id = ?", (int(concept_id),))
    return int(n)
