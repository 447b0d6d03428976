"""Learning signals: the replay sample type, utility, and quality from feedback.

Why a separate module: the trainer, the replay buffer and the explorer all
speak in ``ReplaySample`` and utility, but only the replay buffer does I/O. The
trainer must stay pure (plain data in, plain data out), so the shared types
live here, free of any storage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

LABEL_SOURCES = ("logged", "explored", "feedback", "curriculum")


@dataclass(frozen=True)
class ReplaySample:
    """One answered request as the router saw it, with what came of it.

    ``target_*`` are set when the best decision for this query is known
    (exploration tried the alternatives, or feedback settled it); otherwise the
    trainer can only reinforce the logged decision in proportion to how much
    better than average its utility was.
    """

    request_id: str
    features: np.ndarray          # (N_FEATURES,) float32
    context_class: int            # decision taken
    mode_class: int
    temperature: float
    top_p: float
    quality: float | None = None  # 0..1, None until judged or rated
    latency_s: float = 0.0
    completion_tokens: int = 0
    utility: float | None = None
    session_id: str | None = None
    turn_index: int = 0
    target_context: int | None = None
    target_mode: int | None = None
    target_temperature: float | None = None
    target_top_p: float | None = None
    label_source: str = "logged"
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, "
                             f"got {self.label_source!r}")
        if self.quality is not None and not 0.0 <= self.quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {self.quality}")

    @property
    def labelled(self) -> bool:
        return self.target_context is not None and self.target_mode is not None

    def with_outcome(self, quality: float, utility: float) -> "ReplaySample":
        return replace(self, quality=quality, utility=utility)


def utility(quality: float, latency_s: float, tokens: int, latency_weight_per_s: float,
            cost_weight_per_token: float) -> float:
    """U = quality - lambda * latency - mu * tokens (reference.md, Router)."""
    assert latency_s >= 0 and tokens >= 0, (latency_s, tokens)
    return float(quality) - latency_weight_per_s * float(latency_s) \
        - cost_weight_per_token * float(tokens)


# --------------------------------------------------------------------------
# The honest utility: what the explorer and the benchmarks label decisions by.
#
# The plain utility above gives a memory-mode reply 0 tokens and 0 latency, so
# for a question no decision answers, the "best" decision used to be replying
# with an unrelated stored fact, at no cost. An assistant that says something
# confident and unrelated is worse than one that says it does not know, and a
# label that rewards it teaches the router to do it. So an outcome is first
# put in one of three classes and valued by class, and only then are the costs
# taken off:
#   correct  (quality >= CORRECT_QUALITY): its quality;
#   declined (an honest "I don't have that"): DECLINE_VALUE, less than any
#            correct answer and more than any wrong one;
#   wrong    (anything else): its quality scaled below WRONG_CEILING, so a
#            decline beats it by more than the explorer's tie margin whatever
#            it cost; a wrong reply given in memory mode (a stored record that
#            does not answer the question, said with the confidence of a
#            trusted fact) also pays MEMORY_RISK_COST.
# Among wrong answers the order is kept (partial credit still counts), so
# with no decline on offer the cheapest answer of the right form wins, never
# the confident unrelated one.

CORRECT_QUALITY = 0.5
DECLINE_VALUE = 0.3
WRONG_CEILING = 0.25
MEMORY_RISK_COST = 0.5
# The reply the answer path gives when no record supports a personal question
# (ruvllm_edge/answer/policy.py DECLINE; a test keeps the two in step), and the
# finish_reason it reports.
DECLINE_PREFIXES = ("i don't have that in my notes", "i do not have that in my notes")
DECLINED = "declined"
OUTCOME_KINDS = ("correct", "declined", "wrong")


def is_decline(text: str, finish_reason: str = "") -> bool:
    """An honest decline: the answer path's finish_reason, or its fixed reply."""
    if finish_reason == DECLINED:
        return True
    t = text.strip().lower().replace("\u2019", "'")
    return t.startswith(DECLINE_PREFIXES)


def outcome_kind(quality: float, declined: bool) -> str:
    """correct | declined | wrong (see the block comment above)."""
    if declined:
        return "declined"
    return "correct" if quality >= CORRECT_QUALITY else "wrong"


def answer_value(quality: float, *, declined: bool, from_memory: bool) -> float:
    """The worth of an answer before its costs: by class, then by quality within the class."""
    q = min(max(float(quality), 0.0), 1.0)
    kind = outcome_kind(q, declined)
    if kind == "correct":
        return q
    if kind == "declined":
        return DECLINE_VALUE
    value = q * WRONG_CEILING / CORRECT_QUALITY   # < WRONG_CEILING < DECLINE_VALUE
    return value - (MEMORY_RISK_COST if from_memory else 0.0)


def honest_utility(quality: float, latency_s: float, tokens: int, latency_weight_per_s: float,
                   cost_weight_per_token: float, *, declined: bool = False,
                   from_memory: bool = False) -> float:
    """U = value(class, quality) - lambda * latency - mu * tokens.

    ``from_memory``: the reply was given in memory mode (a stored record
    returned as the answer). ``declined``: the reply was an honest decline
    (``is_decline``). Never rewards a wrong answer over a decline.
    """
    assert latency_s >= 0 and tokens >= 0, (latency_s, tokens)
    return answer_value(quality, declined=declined, from_memory=from_memory) \
        - latency_weight_per_s * float(latency_s) - cost_weight_per_token * float(tokens)


def answerable(qualities: Sequence[float], declined: Sequence[bool] | None = None) -> bool:
    """Some decision answered correctly; otherwise the question is labelled unanswerable
    (by this device, with this memory and model), whatever the best label says."""
    dec = list(declined) if declined is not None else [False] * len(qualities)
    return any(outcome_kind(q, d) == "correct" for q, d in zip(qualities, dec))


def quality_from_feedback(rating: int | None, correction: str | None,
                          judged: float | None = None) -> float | None:
    """Explicit feedback outranks the model judge; a correction means the answer was wrong.

    A rating r in 1..5 maps to (r - 1) / 4, the judge's scale. A correction
    without a rating scores 0: the user had to supply the answer. With neither,
    the judge's score stands (or None when there is none).
    """
    if rating is not None:
        if not 1 <= int(rating) <= 5:
            raise ValueError(f"rating must be 1..5, got {rating}")
        q = (int(rating) - 1) / 4.0
        return min(q, 0.25) if correction else q
    if correction:
        return 0.0
    return judged


def advantage_weights(utilities: np.ndarray) -> np.ndarray:
    """Weights for imitating logged (unexplored) decisions: only better-than-average ones.

    Advantage-weighted imitation: w = clip((U - mean) / std, 0, 1). A decision
    that did worse than average teaches nothing about what would have been
    better, so it gets weight 0 rather than a push towards an unknown class.
    """
    u = np.asarray(utilities, dtype=np.float64)  # (n,)
    if u.size == 0:
        return u
    std = float(u.std())
    if not math.isfinite(std) or std < 1e-9:
        return np.full(u.shape, 0.5)
    return np.clip((u - u.mean()) / std, 0.0, 1.0)
