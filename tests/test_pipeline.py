"""Pure parts of the query path: what goes into the prompt, answer-from-memory, quality prior."""

from __future__ import annotations

from ruvllm_edge.memory.retrieval import Candidate
from ruvllm_edge.pipeline import (heuristic_quality, memory_turn, prompt_records, source_row,
                                  trusted_hit)


def cand(i: int, sim: float, rel: float, trust: float = 0.8, source: str = "user",
         kind: str = "document", hop: int = 0) -> Candidate:
    return Candidate(id=i, kind=kind, text=f"record {i}", trust=trust, quality=0.8,
                     similarity=sim, relevance=rel, hop=hop, created_at=0.0, source=source)


def test_records_far_below_the_best_stay_out() -> None:
    cs = [cand(1, 0.86, 0.99), cand(2, 0.80, 0.98), cand(3, 0.70, 0.97), cand(4, 0.85, 0.30)]
    assert [c.id for c in prompt_records(cs, 4, 0.5, 0.1)] == [1, 2]
    assert [c.id for c in prompt_records(cs, 1, 0.5, 0.1)] == [1]
    assert [c.id for c in prompt_records(cs, 4, 0.0, 2.0)] == [1, 2, 3, 4]
    assert prompt_records(cs, 0, 0.5, 0.1) == [] and prompt_records([], 4, 0.5, 0.1) == []


def test_graph_neighbours_are_judged_by_relevance_not_similarity() -> None:
    cs = [cand(1, 0.9, 0.99), cand(2, 0.2, 0.9, hop=1)]
    assert [c.id for c in prompt_records(cs, 4, 0.5, 0.1)] == [1, 2]


def test_model_answers_yield_to_a_matching_trusted_fact() -> None:
    wrong = cand(1, 0.97, 0.99, trust=0.4, source="model", kind="qa_pair")
    fact = cand(2, 0.80, 0.98, trust=1.0, source="feedback", kind="fact")
    other = cand(3, 0.78, 0.97, trust=0.8)
    assert [c.id for c in prompt_records([wrong, fact, other], 4, 0.5, 0.1)] == [2, 3]
    weak_fact = cand(2, 0.40, 0.98, trust=1.0, source="feedback", kind="fact")
    assert [c.id for c in prompt_records([wrong, weak_fact], 4, 0.5, 0.1)] == [1]


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


def test_memory_turn_puts_the_question_last_and_sources_are_previews() -> None:
    turn = memory_turn("MEMORY: ...\nEND MEMORY", "What is the code?")
    assert turn.endswith("Question: What is the code?") and turn.startswith("MEMORY")
    row = source_row(cand(7, 0.9, 0.87654321))
    assert row == {"id": 7, "kind": "document", "preview": "record 7", "relevance": 0.8765}
