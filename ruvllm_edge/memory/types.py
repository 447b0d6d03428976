"""The words every memory module shares: node kinds, sources, trust, and the
plain records handed between the store, the pure rules and the pipeline.

Why a module of its own and not graph.py: graph.py holds the graph's *rules*
(edge kinds, expansion, decay, node value). These are the *nouns* that the
store-side modules, compress.py, context.py and the pipeline exchange. With
them here, every module depends on this leaf instead of on each other (the
store and the compression rules used to import each other for them).

Trust order (``trust`` column, also a ranking feature):
user correction (fact from feedback, 1.0) > user fact (0.9) > document (0.8)
> concept (0.6) > model answer / qa_pair (0.4) > agent_step (0.3) > query (0.2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import BadRequest

DIM = 384                 # every stored vector: a unit float32[384] (MiniLM)

NODE_KINDS = ("query", "qa_pair", "fact", "document", "concept", "agent_step")
# Who vouches for a node: user (memory.add), feedback (a correction), model
# (writeback), learning (compression).
SOURCES = ("user", "feedback", "model", "learning")
DEFAULT_SOURCE = {"fact": "user", "document": "user", "concept": "learning", "qa_pair": "model",
                  "query": "user", "agent_step": "model"}
_TRUST = {"concept": 0.6, "qa_pair": 0.4, "agent_step": 0.3, "query": 0.2}
# Facts the user vouched for (corrections 1.0, memory.add facts 0.9) count as
# "trusted" in the router's best_trusted_sim feature.
TRUSTED_FACT_MIN = 0.9
# Never evicted (corrections are facts).
PROTECTED_KINDS = ("fact", "document")
# Model output and transient records: the only kinds compression clusters and archives.
COMPRESSIBLE_KINDS = ("qa_pair", "query", "agent_step")
# The links compression clusters over (see compress.py for why these).
CLUSTER_EDGE_KINDS = ("same_topic", "answered_by", "follows")

# (src, dst, kind, weight)
EdgeRow = tuple[int, int, str, float]
# count(counter_name, n): how the store-side rooms report what they did (memory.stats)
Count = Callable[[str, int], None]


def default_trust(kind: str, source: str) -> float:
    if kind == "fact":
        return 1.0 if source == "feedback" else 0.9
    if kind == "document":
        return 0.8
    return _TRUST[kind]


# ---------------------------------------------------------------------------
# Retrieval output


@dataclass(frozen=True)
class Candidate:
    """One retrieved memory, ready for ranking output and context packing."""

    id: int
    kind: str
    text: str
    trust: float
    quality: float
    similarity: float      # cosine of the query with this node's own vector
    relevance: float       # ranking output in [0, 1], comparable across queries
    hop: int               # 0 = KNN hit, 1-2 = reached over edges
    created_at: float
    source: str = "user"   # user | feedback (a correction) | model | learning
    relation: str = "hit"  # the edge kind that reached it (hit for KNN hits)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    context: str = ""      # text it inherits: the first line of the note it was split from
    lexical: bool = False  # found by the BM25 (FTS5) pool
    cover: float = 0.0     # idf-weighted share of the question's content words it holds

    @property
    def is_correction(self) -> bool:
        return self.kind == "fact" and self.source == "feedback"


@dataclass(frozen=True)
class Retrieval:
    candidates: list[Candidate]
    stats: dict[str, Any]
    timings_ms: dict[str, float]
    # term -> how many searchable records hold it, for the question's words
    # (the answer policy's idf and "is this a thing memory knows" test)
    df: Mapping[str, int] = field(default_factory=dict)
    n_docs: int = 0


# ---------------------------------------------------------------------------
# Writeback input


@dataclass(frozen=True)
class Interaction:
    """What the pipeline hands over after each answer."""

    request_id: str
    session_id: str | None
    query: str
    answer: str
    query_vec: np.ndarray          # (384,) float32, the query's embedding
    used_node_ids: list[int]       # memories that were in the prompt
    quality: float                 # judge score in [0, 1]
    created_at: float = field(default_factory=time.time)
    # Only an answer grounded in a user-given record becomes a retrievable
    # qa_pair; an ungrounded one stays in the request log (docs/answers.md).
    grounded: bool = False
    # answer.policy = "naive" (the benchmarks' baseline) writes every answer,
    # unmarked, as the daemon did before the grounded policy.
    naive: bool = False


# ---------------------------------------------------------------------------
# Compression (learning loop C): what the store reads for it and what it writes


@dataclass(frozen=True)
class CandidateSet:
    """Nodes eligible for compression, their vectors and the links among them."""

    ids: list[int]                 # sorted node ids
    vecs: np.ndarray               # (n, d) float32 unit rows, in ``ids`` order
    edges: list[EdgeRow]           # (src, dst, kind, weight); both ends in ``ids``
    next_after_id: int = 0         # where the next scan window starts (0 = wrapped)


@dataclass(frozen=True)
class ConceptWrite:
    """What ``MemoryStore.add_concept`` committed."""

    concept_id: int
    member_ids: tuple[int, ...]
    archived_ids: tuple[int, ...]      # members moved to cold storage by this write


class MembersChanged(BadRequest):
    """A cluster's members changed (deleted, archived, claimed by another concept)
    between reading them and writing their concept; nothing was written."""
