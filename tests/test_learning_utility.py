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
