"""Pure parts of the query path: what goes into the prompt, answer-from-memory, quality prior."""

from __future__ import annotations

from ruvllm_edge.memory.retrieval import Candidate
from ruvllm_edge.pipeline import heuristic_quality, source_row, trusted_hit


def cand(i: int, sim: float, rel: float, trust: float = 0.8, source: str = "user",
         kind: str = "document", hop: int = 0) -> Candidate:
    return Candidate(id=i, kind=kind, text=f"record {i}", trust=trust, quality=0.8,
                     similarity=sim, relevance=rel, hop=hop, created_at=0.0, source=source)


def test_trusted_hit_needs_trust_similarity_and_no_clearly_better_record() -> None:
    assert trusted_hit([cand(1, 0.9, 0.9, trust=0.8)]) is None
    assert trusted_hit([cand(1, 0.5, 0.9, trust=1.0)]) is None
    assert trusted_hit([cand(1, 0.65, 0.9, trust=0.8), cand(2, 0.6, 0.8, trust=0.9)]).id == 2
    # a document that matches clearly better wins over a nearby trusted fact
    assert trusted_hit([cand(1, 0.9, 0.9, trust=0.8), cand(2, 0.6, 0.8, trust=0.9)]) is None


def test_heuristic_quality_keeps_bad_answers_out_of_memory() -> None:
    good = heuristic_quality("Paris is the capital of France.", "stop", 8)
    assert good >= 0.75
    assert heuristic_quality("", "stop", 0) == 0.0
    assert heuristic_quality("Paris is the capital", "length", 64) < good
    assert heuristic_quality("the the the the the the the the the the the the the", "stop", 13) < 0.75
    assert heuristic_quality("I don't know the answer to that.", "stop", 9) < 0.75
    assert heuristic_quality("The gate code is 7341.", "memory", 0) == 1.0


def test_sources_are_previews_with_their_provenance() -> None:
    row = source_row(cand(7, 0.9, 0.87654321))
    assert row == {"id": 7, "kind": "document", "preview": "record 7", "relevance": 0.8765,
                   "source": "user"}
