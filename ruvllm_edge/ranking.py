"""Graph-attention ranking of retrieved memories, learned from feedback.

The query attends over its candidates with H heads. Head h gives candidate i
the logit

    z[h, i] = beta[h] * sim[i] + U[h] . e[i]

where sim is the cosine of the query with the candidate (query and keys share
the embedding space, so the content term needs one scale per head) and e[i]
are edge features: relation kind (one-hot, "hit" for a direct KNN hit), path
weight, recency exp(-age/30 d), log(1 + age_days)/10, hop distance, trust,
quality and the similarity propagated along the path.

Each head also attends to a *sink* with a learned logit sink[h]: "none of these
memories is relevant". A masked softmax over [sink, candidates] gives the
attention a[h, :], the heads are mixed with weights pi = softmax(rho), and

    relevance[i] = A[i] / (A[i] + A[sink]),   A = sum_h pi[h] * a[h, :]

For one head this is sigmoid(z[i] - sink), independent of which other
candidates were retrieved, so ``min_relevance`` means the same thing for
every query; ordering by relevance equals ordering by attention mass.

Why a sink: feedback can then say "nothing here helped" (target = sink), and
the threshold has an absolute meaning. Why so few parameters (~70): feedback
arrives a few times a day on a device; a large model would overfit the first
dozen ratings. Training is a listwise cross-entropy step on the mixed
attention, pulled back towards the initial parameters by an L2 term so a burst
of odd feedback cannot wreck ranking.

Initial parameters (``FITTED`` below) rank by similarity and by the share of
the question's rare words a record holds, fitted on the development split;
every head starts the same, so relevance is one calibrated logistic score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from numba import njit

RELATIONS = ("hit", "follows", "same_topic", "answered_by", "cites", "contains", "derived")
# Evidence features (added in version 2): ``lexical`` is 1 for a record the
# BM25 (FTS5) pool found, ``cover`` the idf-weighted share of the question's
# content words the record holds. Dense similarity alone cannot tell "the
# front gate code" from "the garage code"; shared rare words can.
EVIDENCE = ("lexical", "cover")
FEATURES = tuple(f"rel_{r}" for r in RELATIONS) + (
    "path_weight", "recency", "log_age", "hop", "trust", "quality", "prop_sim") + EVIDENCE
N_FEATURES = len(FEATURES)
_F = {name: i for i, name in enumerate(FEATURES)}
RECENCY_DAYS = 30.0
PARAMS_VERSION = 2


def edge_features(relations: Sequence[str], path_weight: np.ndarray, age_days: np.ndarray,
                  hop: np.ndarray, trust: np.ndarray, quality: np.ndarray,
                  prop_sim: np.ndarray, lexical: np.ndarray | None = None,
                  cover: np.ndarray | None = None) -> np.ndarray:
    """Per-candidate feature rows. All inputs (n,) -> (n, N_FEATURES) float32."""
    n = len(relations)
    e = np.zeros((n, N_FEATURES), dtype=np.float32)                  # (n, F)
    for i, r in enumerate(relations):
        e[i, RELATIONS.index(r)] = 1.0
    age = np.maximum(np.asarray(age_days, dtype=np.float64), 0.0)    # (n,)
    e[:, _F["path_weight"]] = path_weight
    e[:, _F["recency"]] = np.exp(-age / RECENCY_DAYS)
    e[:, _F["log_age"]] = np.log1p(age) / 10.0
    e[:, _F["hop"]] = np.asarray(hop, dtype=np.float32) / 2.0
    e[:, _F["trust"]] = trust
    e[:, _F["quality"]] = quality
    e[:, _F["prop_sim"]] = prop_sim
    if lexical is not None:
        e[:, _F["lexical"]] = lexical
    if cover is not None:
        e[:, _F["cover"]] = cover
    assert np.all(np.isfinite(e))
    return e


@dataclass(frozen=True)
class RankingParams:
    beta: np.ndarray   # (H,) scale of the query-candidate cosine
    U: np.ndarray      # (H, F) edge-feature weights
    sink: np.ndarray   # (H,) "nothing relevant" logit
    rho: np.ndarray    # (H,) head mixing logits
    steps: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def heads(self) -> int:
        return int(self.beta.shape[0])

    def pi(self) -> np.ndarray:
        """(H,) head mixing weights."""
        r = self.rho - self.rho.max()
        w = np.exp(r)
        return (w / w.sum()).astype(np.float64)

    def flat(self) -> np.ndarray:
        return np.concatenate([self.beta, self.U.ravel(), self.sink, self.rho]).astype(np.float64)

    def with_flat(self, theta: np.ndarray, steps: int | None = None) -> "RankingParams":
        h, f = self.heads, self.U.shape[1]
        assert theta.shape == (3 * h + h * f,), theta.shape
        beta = theta[:h]
        U = theta[h:h + h * f].reshape(h, f)
        sink = theta[h + h * f:2 * h + h * f]
        rho = theta[2 * h + h * f:]
        return RankingParams(beta.copy(), U.copy(), sink.copy(), rho.copy(),
                             self.steps if steps is None else steps, dict(self.meta))

    def to_json(self) -> str:
        return json.dumps({"version": PARAMS_VERSION, "features": list(FEATURES),
                           "beta": self.beta.tolist(), "U": self.U.tolist(),
                           "sink": self.sink.tolist(), "rho": self.rho.tolist(),
                           "steps": self.steps, "meta": self.meta})

    @classmethod
    def from_json(cls, text: str, heads: int) -> "RankingParams":
        """Parse stored parameters; a different layout falls back to the initial ones."""
        d = json.loads(text)
        if d.get("version") != PARAMS_VERSION or d.get("features") != list(FEATURES) \
                or len(d.get("beta", [])) != heads:
            return initial_params(heads)
        p = cls(np.array(d["beta"], np.float64), np.array(d["U"], np.float64),
                np.array(d["sink"], np.float64), np.array(d["rho"], np.float64),
                int(d.get("steps", 0)), dict(d.get("meta", {})))
        if not np.all(np.isfinite(p.flat())):
            return initial_params(heads)
        return p


# Initial parameters: one logistic model of "this record answers the question",
# fitted by ``benchmarks/fit_ranking.py`` on the development split only (the
# dev house notes and the LoCoMo ``fit`` conversations; results/fit_ranking.json).
# Every head starts identical, so before any feedback the relevance of a
# candidate is exactly sigmoid(z - sink): a calibrated probability that does
# not depend on which other candidates were retrieved (``min_relevance`` means
# the same for every query). Identical heads get identical gradients, so
# feedback keeps them identical: in effect one head, trained listwise. Trust
# is not in the fitted model (weight 0): provenance is a rule instead
# (retrieval.provenance_cap), because a fit would learn it from too few model
# answers to be trusted.
# MiniLM cosines: paraphrases ~0.75-0.9, same topic ~0.4-0.55, unrelated < 0.2.
FITTED = {"bias": -6.6296, "cosine": 1.6956, "lexical": 0.0, "cover": 5.0869, "trust": 0.0,
          "hop": 0.8478, "prop_sim": 1.6956}
FITTED_ON = "dev: notes-dev + LoCoMo conv-26/conv-30 (fit_ranking.py, 2026-12-03)"


def initial_params(heads: int = 4, fitted: Mapping[str, float] = FITTED) -> RankingParams:
    """Parameters that rank by similarity and shared words before any feedback.

    ``fitted`` is ``FITTED`` unless a fit (benchmarks/fit_ranking.py) compares others.
    """
    beta = np.full(heads, fitted["cosine"])
    U = np.zeros((heads, N_FEATURES))
    for name in ("lexical", "cover", "trust", "hop", "prop_sim"):
        U[:, _F[name]] = fitted[name]
    sink = np.full(heads, -fitted["bias"])
    return RankingParams(beta, U, sink, np.zeros(heads), meta={"fitted_on": FITTED_ON})


# ---------------------------------------------------------------------------
# Forward pass: numpy reference and numba kernel (compared in the tests)


def forward_reference(sim: np.ndarray, E: np.ndarray, mask: np.ndarray,
                      p: RankingParams) -> tuple[np.ndarray, np.ndarray]:
    """sim (n,), E (n, F), mask (n,) bool -> attention (H, n+1) [0 = sink], relevance (n,)."""
    n = sim.shape[0]
    assert E.shape == (n, N_FEATURES) and mask.shape == (n,)
    z = p.beta[:, None] * sim[None, :] + p.U @ E.T.astype(np.float64)   # (H, n)
    logits = np.concatenate([p.sink[:, None], z], axis=1)              # (H, n+1)
    valid = np.concatenate([[True], mask.astype(bool)])                # (n+1,)
    logits = np.where(valid[None, :], logits, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    w = np.exp(logits)                                                  # (H, n+1)
    attn = w / w.sum(axis=1, keepdims=True)                             # (H, n+1)
    A = p.pi() @ attn                                                   # (n+1,)
    rel = np.where(mask, A[1:] / np.maximum(A[1:] + A[0], 1e-300), 0.0)  # (n,)
    return attn, rel


@njit(cache=True, nogil=True)
def _forward_kernel(sim: np.ndarray, E: np.ndarray, mask: np.ndarray, beta: np.ndarray,
                    U: np.ndarray, sink: np.ndarray, pi: np.ndarray):  # pragma: no cover - numba
    H = beta.shape[0]
    n = sim.shape[0]
    F = E.shape[1]
    attn = np.zeros((H, n + 1))
    for h in range(H):
        m = sink[h]
        z = np.empty(n)
        for i in range(n):
            if mask[i]:
                s = beta[h] * sim[i]
                for f in range(F):
                    s += U[h, f] * E[i, f]
                z[i] = s
                if s > m:
                    m = s
        total = math.exp(sink[h] - m)
        attn[h, 0] = total
        for i in range(n):
            if mask[i]:
                v = math.exp(z[i] - m)
                attn[h, i + 1] = v
                total += v
        for j in range(n + 1):
            attn[h, j] /= total
    rel = np.zeros(n)
    a0 = 0.0
    for h in range(H):
        a0 += pi[h] * attn[h, 0]
    for i in range(n):
        if mask[i]:
            ai = 0.0
            for h in range(H):
                ai += pi[h] * attn[h, i + 1]
            d = ai + a0
            rel[i] = ai / d if d > 0 else 0.0
    return attn, rel


def forward(sim: np.ndarray, E: np.ndarray, mask: np.ndarray,
            p: RankingParams) -> tuple[np.ndarray, np.ndarray]:
    """Numba version of ``forward_reference`` (same inputs, same outputs)."""
    assert E.shape == (sim.shape[0], N_FEATURES) and mask.shape == sim.shape
    return _forward_kernel(np.ascontiguousarray(sim, np.float64), np.ascontiguousarray(E, np.float64),
                           np.ascontiguousarray(mask, np.bool_), p.beta.astype(np.float64),
                           np.ascontiguousarray(p.U, np.float64), p.sink.astype(np.float64), p.pi())


def rank(sim: np.ndarray, E: np.ndarray, mask: np.ndarray | None, p: RankingParams) -> np.ndarray:
    """(n,) relevance in [0, 1]; masked entries get 0."""
    if sim.shape[0] == 0:
        return np.zeros(0)
    m = np.ones(sim.shape[0], bool) if mask is None else mask
    return forward(sim, E, m, p)[1]


# ---------------------------------------------------------------------------
# Learning from feedback


def loss_and_grad(sim: np.ndarray, E: np.ndarray, mask: np.ndarray, target: np.ndarray,
                  p: RankingParams) -> tuple[float, np.ndarray]:
    """Listwise cross-entropy of the mixed attention against ``target``.

    target: (n+1,) non-negative, index 0 = sink, summing to 1 over valid
    entries. Returns (loss, gradient as ``p.flat()`` layout).
    """
    n = sim.shape[0]
    valid = np.concatenate([[True], mask.astype(bool)])
    assert target.shape == (n + 1,) and np.all(target >= 0)
    assert abs(float(target.sum()) - 1.0) < 1e-6 and np.all(target[~valid] == 0)
    attn, _ = forward_reference(sim, E, mask, p)                        # (H, n+1)
    pi = p.pi()                                                         # (H,)
    A = pi @ attn                                                       # (n+1,)
    pos = target > 0
    loss = float(-np.sum(target[pos] * np.log(np.maximum(A[pos], 1e-300))))
    ratio = np.zeros(n + 1)
    ratio[pos] = target[pos] / np.maximum(A[pos], 1e-300)              # y_j / A_j
    c = attn @ ratio                                                    # (H,)
    # dL/dz[h, k] = -pi_h * a_hk * (y_k / A_k - c_h)
    dz = -pi[:, None] * attn * (ratio[None, :] - c[:, None])           # (H, n+1)
    dz[:, ~valid] = 0.0
    d_sink = dz[:, 0]                                                   # (H,)
    dzc = dz[:, 1:]                                                     # (H, n)
    d_beta = dzc @ sim.astype(np.float64)                               # (H,)
    d_U = dzc @ E.astype(np.float64)                                    # (H, F)
    d_rho = pi * (1.0 - c)                                              # (H,)
    grad = np.concatenate([d_beta, d_U.ravel(), d_sink, d_rho])
    return loss, grad


def train_step(p: RankingParams, sim: np.ndarray, E: np.ndarray, mask: np.ndarray,
               target: np.ndarray, *, lr: float, l2: float, anchor: RankingParams | None = None,
               weight: float = 1.0, max_grad_norm: float = 5.0) -> tuple[RankingParams, float]:
    """One SGD step on one feedback example; returns (new params, loss before).

    The L2 pull towards ``anchor`` (the initial parameters by default) keeps
    sparse feedback from dragging ranking far from "similarity and trust".
    """
    anchor = anchor or initial_params(p.heads)
    loss, g = loss_and_grad(sim, E, mask, target, p)
    theta = p.flat()
    g = weight * g + l2 * (theta - anchor.flat())
    norm = float(np.linalg.norm(g))
    if norm > max_grad_norm:
        g *= max_grad_norm / norm
    new = p.with_flat(theta - lr * g, steps=p.steps + 1)
    assert np.all(np.isfinite(new.flat()))
    return new, loss


def target_for(mask: np.ndarray, positive_idx: Sequence[int]) -> np.ndarray:
    """Target distribution: uniform over the given candidate indices, else the sink."""
    n = mask.shape[0]
    y = np.zeros(n + 1)
    idx = [i for i in positive_idx if 0 <= i < n and mask[i]]
    if idx:
        y[np.array(idx) + 1] = 1.0 / len(idx)
    else:
        y[0] = 1.0
    return y
