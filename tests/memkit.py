"""Helpers shared by the memory tests: a store on the real SQLite file, test vectors, texts.

Like integration/faultkit.py, this is a plain module the test files import;
fixtures (``db``, ``emb``) stay in conftest.py.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from ruvllm_edge.config import MemoryConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.store import MemoryStore
from ruvllm_edge.memory.writeback import Interaction

DAY = 86_400.0
D = 384

BOILER = ["Q: When is the boiler serviced?\nA: The boiler is serviced every October.",
          "Q: What month does the boiler get its service?\nA: Every October the boiler is serviced.",
          "Q: When does the boiler service happen?\nA: The boiler gets serviced in October each year.",
          "Q: Is the boiler serviced in October?\nA: Yes, the boiler service is every October."]
BOILER_SUMMARY = "The boiler is serviced every October."
CAT = ["Q: What does Milo the cat eat?\nA: Milo the cat eats wet food twice a day.",
       "Q: How often is Milo fed?\nA: Milo the cat is fed wet food twice a day.",
       "Q: What food does Milo get?\nA: Milo gets wet cat food, two meals a day."]
CAT_SUMMARY = "Milo the cat eats wet food twice a day."


def make_store(db: Database, emb: Embedder, **cfg: Any) -> MemoryStore:
    """A MemoryStore with config overrides; writeback flushes within 20 ms unless told otherwise."""
    base: dict[str, Any] = {"writeback_flush_ms": 20}
    base.update(cfg)
    return MemoryStore(db, dataclasses.replace(MemoryConfig(), **base), emb)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(n: int, seed: int = 0, d: int = D) -> np.ndarray:
    """(n, d) float32 unit rows, uniform on the sphere."""
    return unit(np.random.default_rng(seed).standard_normal((n, d)))


def clustered(n: int, d: int = D, clusters: int | None = None, noise: float = 0.6,
              seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres (~100 per centre): closer to real
    embeddings than uniform noise, which is the worst case for sign codes."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(1, n // 100)
    c = rng.standard_normal((clusters, d)).astype(np.float32)
    x = c[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def inter(rid: str, q: str, a: str, quality: float = 0.9, session: str | None = "s1",
          used: Sequence[int] = (), grounded: bool = True) -> Interaction:
    """An answered interaction; grounded (the only kind writeback stores) unless told otherwise."""
    return Interaction(rid, session, q, a, np.zeros(D, np.float32), list(used), quality, time.time(),
                       grounded)


def add_old(store: MemoryStore, emb: Embedder, texts: list[str], kind: str = "qa_pair",
            age_days: float = 60.0, link: bool = True) -> list[int]:
    """Insert embedded texts, backdate them, and link consecutive ones with same_topic."""
    ids = store.add_embedded(texts, emb.embed_batch(texts), kind=kind)
    t = time.time() - age_days * DAY
    with store.db.atomic() as conn:
        conn.executemany("UPDATE nodes SET created_at = ?, last_access_at = ? WHERE id = ?",
                         [(t, t, i) for i in ids])
        if link:
            conn.executemany("INSERT INTO edges(src, dst, kind, weight, created_at, updated_at) "
                             "VALUES (?, ?, 'same_topic', 0.8, ?, ?)",
                             [(a, b, t, t) for a, b in zip(ids, ids[1:])])
    return ids


def node(store: MemoryStore, nid: int) -> dict[str, Any]:
    got = store.get(nid)
    assert got is not None, f"node {nid} is gone"
    return got


def concepts(db: Database) -> list[tuple[int, str]]:
    return [(int(i), t) for i, t in db.read("SELECT id, text FROM nodes WHERE kind = 'concept' ORDER BY id")]


# A house note as a person writes it (splitting and the daemon's memory tests).
COTTAGE = """Cottage notes for house-sitters
The key safe by the porch opens with 2093.
The wood burner needs the damper fully open before lighting.
Fresh eggs come from Mrs. Aldous at the farm, 3.50 a dozen.
The bins go out on Wednesday night. Glass goes in the green box.
If the power trips, the fuse board is under the stairs."""
