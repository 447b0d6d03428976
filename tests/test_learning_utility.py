"""Learning signals: utility, quality from feedback, advantage weights."""

from __future__ import annotations

import numpy as np
import pytest

from ruvllm_edge.learning.utility import (ReplaySample, advantage_weights,
                                          quality_from_feedback, utility)
from ruvllm_edge.router.features import N_FEATURES


def test_utility_trades_quality_against_latency_and_tokens() -> None:
    assert utility(0.9, 2.0, 100, 0.05, 0.001) == pytest.approx(0.9 - 0.1 - 0.1)
    fast = utility(0.8, 0.2, 20, 0.05, 0.001)
    slow = utility(0.8, 3.0, 256, 0.05, 0.001)
    assert fast > slow
    with pytest.raises(AssertionError):
        utility(0.5, -1.0, 0, 0.05, 0.001)


@pytest.mark.parametrize("rating,correction,judged,expected", [
    (5, None, 0.2, 1.0), (1, None, 0.9, 0.0), (3, None, None, 0.5),
    (5, "actually it is 4418", None, 0.25), (None, "it is 4418", 0.9, 0.0),
    (None, None, 0.6, 0.6), (None, None, None, None),
])
def test_feedback_outranks_the_judge(rating: int | None, correction: str | None,
                                     judged: float | None, expected: float | None) -> None:
    assert quality_from_feedback(rating, correction, judged) == expected


def test_bad_rating_is_refused() -> None:
    with pytest.raises(ValueError):
        quality_from_feedback(7, None)


def test_advantage_weights_only_reward_better_than_average() -> None:
    w = advantage_weights(np.array([0.1, 0.5, 0.9]))
    assert w[0] == 0 and w[1] == 0 and 0 < w[2] <= 1
    assert np.all(advantage_weights(np.array([0.4, 0.4])) == 0.5)
    assert advantage_weights(np.array([])).size == 0


def test_sample_validation() -> None:
    x = np.zeros(N_FEATURES, np.float32)
    s = ReplaySample("r", x, 1, 1, 0.5, 0.9)
    assert not s.labelled
    assert s.with_outcome(0.8, 0.7).utility == 0.7
    with pytest.raises(ValueError):
        ReplaySample("r", x, 1, 1, 0.5, 0.9, quality=1.2)


# ---------------------------------------------------------------------------
# The honest utility (issue 10): a wrong answer is never the best label.

from ruvllm_edge.learning import utility as U  # noqa: E402

LAT, TOK = 0.05, 0.001


def test_old_utility_rewarded_an_unrelated_memory_reply() -> None:
    """The defect this fixes: under the plain utility, returning an unrelated stored
    fact (quality 0, free) beats an honest decline that cost a little prompt time."""
    unrelated_memory = utility(0.0, 0.0, 0, LAT, TOK)
    decline = utility(0.0, 0.1, 0, LAT, TOK)
    assert unrelated_memory > decline          # the old labelling
    assert (U.honest_utility(0.0, 0.0, 0, LAT, TOK, from_memory=True)
            < U.honest_utility(0.0, 0.1, 0, LAT, TOK, declined=True) - 0.02)


def test_correct_beats_decline_beats_wrong_whatever_the_costs() -> None:
    cheapest_correct = U.honest_utility(U.CORRECT_QUALITY, 2.0, 256, LAT, TOK)
    free_decline = U.honest_utility(0.0, 0.0, 0, LAT, TOK, declined=True)
    assert cheapest_correct < free_decline    # 2 s + 256 tokens cost more than the margin...
    typical_correct = U.honest_utility(1.0, 0.5, 40, LAT, TOK)
    assert typical_correct > free_decline     # ...but a normal right answer wins
    for q in (0.0, 0.2, 0.45, 0.49):          # every wrong answer, even free, loses to a decline
        wrong_free = U.honest_utility(q, 0.0, 0, LAT, TOK)
        decline = U.honest_utility(0.0, 0.3, 10, LAT, TOK, declined=True)
        assert wrong_free < decline - 0.02, q


def test_memory_reply_that_does_not_answer_pays_the_risk_cost() -> None:
    generated_wrong = U.honest_utility(0.2, 0.4, 20, LAT, TOK)
    memory_wrong = U.honest_utility(0.2, 0.0, 0, LAT, TOK, from_memory=True)
    assert memory_wrong < generated_wrong - 0.3
    # a memory reply that answers is not penalised, and costs nothing
    assert U.honest_utility(1.0, 0.0, 0, LAT, TOK, from_memory=True) == pytest.approx(1.0)
    # partial credit keeps its order among wrong answers
    assert U.honest_utility(0.4, 0, 0, LAT, TOK) > U.honest_utility(0.1, 0, 0, LAT, TOK)


def test_decline_is_recognised_from_the_answer_paths_reply() -> None:
    from ruvllm_edge.answer.policy import DECLINE
    assert U.is_decline(DECLINE)
    assert U.is_decline("  I don\u2019t have that in my notes.")
    assert U.is_decline("anything", "declined")
    assert not U.is_decline("The gate code is 7341.", "stop")
    assert U.outcome_kind(0.9, False) == "correct"
    assert U.outcome_kind(0.9, True) == "declined"
    assert U.outcome_kind(0.1, False) == "wrong"


def test_unanswerable_questions_are_labelled() -> None:
    assert not U.answerable([0.0, 0.2, 0.49])
    assert U.answerable([0.0, 0.6])
    assert not U.answerable([0.0, 1.0], [False, True])   # a decline is not an answer
