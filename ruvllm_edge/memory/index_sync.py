"""The in-RAM sign-code mirror, kept in step with the database through vec_log.

The mirror (bitindex.BitIndex) is a cache of the database, never the other
way round. Triggers append a node id to ``vec_log`` in the same transaction
as every change to the searchable vector set (a vector inserted, replaced or
deleted; a node archived or brought back), so:
- ``refresh`` applies only what was committed since the last look, by any
  thread or process, with one indexed range read;
- a rolled-back write never leaves a phantom in the mirror;
- when the log was trimmed past what this mirror has seen (maintenance keeps
  the newest entries only), ``refresh`` falls back to a full ``reload``.
"""

from __future__ import annotations

import numpy as np

from .bitindex import BitIndex, nearest_kernel
from .db import Database
from .nodes import chunks, marks


class IndexSync:
    """One BitIndex over the non-archived nodes, and the bookkeeping that keeps it current."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.index = BitIndex()
        self.reloads = 0
        self.reload()

    def reload(self) -> None:
        """Rebuild the mirror from the database."""
        with self.index.lock:
            seq = int(self.db.read("SELECT coalesce(max(seq), 0) FROM vec_log").fetchone()[0])
            # Both reads are covering-index scans (migration 0009): ~60 bytes a node,
            # not the 1.6 KB node_vectors rows nor the node rows of a join.
            rows = self.db.read("SELECT id, bits FROM node_vectors INDEXED BY node_vectors_codes").fetchall()
            archived = [r[0] for r in self.db.read("SELECT id FROM nodes WHERE archived = 1")]
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            codes = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), 48)
            if archived:
                keep = ~np.isin(ids, np.asarray(archived, np.int64))
                ids, codes = ids[keep], codes[keep]
            self.index.load(ids, codes)             # bulk: start-up at 1M nodes
            self.index.seq = seq
            self.reloads += 1

    def refresh(self) -> None:
        """Apply vector changes committed since the last look (any thread or process)."""
        with self.index.lock:
            log_rows = self.db.read("SELECT seq, node_id FROM vec_log WHERE seq > ? ORDER BY seq",
                                    (self.index.seq,)).fetchall()
            if not log_rows:
                return
            if log_rows[0][0] > self.index.seq + 1:
                # The log was pruned past what we have seen: start over.
                self.reload()
                return
            ids = sorted({r[1] for r in log_rows})
            present: dict[int, bytes] = {}
            for part in chunks(ids):
                for nid, bits in self.db.read(
                        f"SELECT v.id, v.bits FROM node_vectors v JOIN nodes n ON n.id = v.id "
                        f"WHERE n.archived = 0 AND v.id IN ({marks(len(part))})", part):
                    present[nid] = bits
            gone = [i for i in ids if i not in present]
            if present:
                codes = np.frombuffer(b"".join(present.values()), np.uint8).reshape(len(present), -1)
                self.index.upsert(list(present), codes)
            self.index.remove(gone)
            self.index.seq = int(log_rows[-1][0])

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) the popcount kernel now, not on the first query."""
        nearest_kernel(np.zeros((1, 6), np.uint64), np.zeros(6, np.uint64), 1, 1)
