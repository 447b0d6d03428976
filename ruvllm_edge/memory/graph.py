"""The memory graph's rules: edge kinds, expansion, decay and node value.

Edge kinds and their direction (src -> dst):
- ``follows``: the previous qa_pair of a session -> the next one; also chunk i
  -> chunk i+1 of a chunked document, so a hit on one chunk can pull in its
  neighbours.
- ``same_topic``: a new qa_pair -> an existing node whose cosine is at least
  ``same_topic_cosine`` (weight = that cosine).
- ``answered_by``: a memory node that was in the context of an answer -> the
  qa_pair that answer produced ("this memory answered that question"). Later a
  hit on the qa_pair reaches the source it was grounded in, and vice versa.
- ``cites``: a node that quotes another (reserved for apps and compression).
- ``contains``: a concept -> each member it summarises (compression loop).
- ``derived``: a correction fact -> the qa_pair it corrects.

Expansion walks edges in both directions: relevance flows both ways and the
direction only records provenance.

Decay touches only learned associations (follows, same_topic, answered_by,
cites). ``contains`` and ``derived`` record structure and provenance and keep
their weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from .types import EdgeRow

EDGE_KINDS = ("follows", "same_topic", "answered_by", "cites", "contains", "derived")
DECAYING_KINDS = ("follows", "same_topic", "answered_by", "cites")

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Reached:
    """How graph expansion reached a node."""

    hop: int              # 1 or 2
    path_weight: float    # product of edge weights times hop_decay ** hop
    relation: str         # kind of the last edge on the best path
    parent_sim: float     # query similarity of the KNN hit the path started from
    via: int              # the node it was reached from


def expand(hits: Mapping[int, float], neighbours: Callable[[Sequence[int]], Iterable[EdgeRow]],
           hops: int, hop_decay: float, limit: int) -> dict[int, Reached]:
    """Breadth-first walk from the KNN hits, best path per node.

    ``hits`` maps hit id -> query similarity. A node's score on a path is
    parent_sim * path_weight; each hop keeps the ``limit`` best new nodes so
    a hub node cannot flood the candidate set. Hits themselves are never
    returned.
    """
    assert 0 <= hops <= 2 and 0.0 <= hop_decay <= 1.0
    reached: dict[int, Reached] = {}
    # frontier: node id -> (path_weight, parent_sim); hits start at weight 1
    frontier: dict[int, tuple[float, float]] = {i: (1.0, s) for i, s in hits.items()}
    for hop in range(1, hops + 1):
        if not frontier or limit <= len(reached):
            break
        best: dict[int, Reached] = {}
        for src, dst, kind, weight in neighbours(list(frontier)):
            for a, b in ((src, dst), (dst, src)):
                if a not in frontier or b in hits or b in reached:
                    continue
                pw, psim = frontier[a]
                w = pw * float(weight) * hop_decay
                cur = best.get(b)
                if cur is None or w * psim > cur.path_weight * cur.parent_sim:
                    best[b] = Reached(hop, w, kind, psim, a)
        room = limit - len(reached)
        chosen = sorted(best.items(), key=lambda kv: -kv[1].path_weight * kv[1].parent_sim)[:room]
        reached.update(chosen)
        frontier = {i: (r.path_weight, r.parent_sim) for i, r in chosen}
    return reached


def decay_factor(elapsed_s: float, half_life_days: float) -> float:
    """Multiplier for a weight left unused for ``elapsed_s`` seconds."""
    if elapsed_s <= 0:
        return 1.0
    return 0.5 ** (elapsed_s / (half_life_days * SECONDS_PER_DAY))


def adjust_weight(weight: float, rating: int, step: float) -> float:
    """Feedback on an edge an answer used: ratings 4-5 strengthen, 1-2 weaken."""
    assert 1 <= rating <= 5
    return min(1.0, max(0.0, weight + step * (rating - 3) / 2.0))


def rating_target(rating: int) -> float:
    """A 1-5 rating as a quality in [0, 1] (the judge's normalisation)."""
    assert 1 <= rating <= 5
    return (rating - 1) / 4.0


def node_value(quality: float, last_access_age_s: float, access_count: int,
               half_life_days: float) -> float:
    """Eviction score: quality x recency x use. Lowest goes first.

    Use enters as 1 + ln(1 + count) so a node read a thousand times is worth
    a few times one never read, not a thousand times.
    """
    recency = decay_factor(max(0.0, last_access_age_s), half_life_days)
    return quality * recency * (1.0 + math.log1p(max(0, access_count)))


# SQL form of node_value for the eviction query; kept next to the Python form
# and compared with it in the tests.
NODE_VALUE_SQL = ("quality * pow(0.5, max(0.0, :now - last_access_at) / (:half_life_days * 86400.0))"
                  " * (1.0 + ln(1.0 + access_count))")
