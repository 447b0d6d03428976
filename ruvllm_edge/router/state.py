"""The router's persisted training state: what must survive a restart.

It lives in ``router/`` because the router file (``Router.save``/``load``)
stores it; ``learning/trainer`` imports it from here and updates it. The
dependency runs one way: learning -> router, never back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrainState:
    """Everything that must survive a restart for training to continue where it was."""

    theta: np.ndarray    # (P,) float64 parameters
    m: np.ndarray        # (P,) Adam first moment
    v: np.ndarray        # (P,) Adam second moment
    t: int               # Adam step count
    fisher: np.ndarray   # (P,) diagonal Fisher of the last consolidation(s)
    anchor: np.ndarray   # (P,) parameters at the last consolidation
    consolidations: int = 0

    @classmethod
    def fresh(cls, theta: np.ndarray) -> "TrainState":
        z = np.zeros_like(theta, dtype=np.float64)
        return cls(theta.astype(np.float64).copy(), z.copy(), z.copy(), 0, z.copy(),
                   theta.astype(np.float64).copy(), 0)

    def copy(self) -> "TrainState":
        return TrainState(self.theta.copy(), self.m.copy(), self.v.copy(), self.t,
                          self.fisher.copy(), self.anchor.copy(), self.consolidations)
