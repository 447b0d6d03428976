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
