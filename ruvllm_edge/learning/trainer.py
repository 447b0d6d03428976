"""Router training: BPTT + Adam + EWC + hard-threshold sparsity, accept-if-not-worse.

Pure: parameters and samples in, new parameters and a report out. The caller
(the idle job in ``jobs``) owns files and the database.

Why these pieces:
- BPTT over a session's turns because the hidden state is carried across
  turns at run time; training on single turns would teach a different model.
- Adam because the replay buffer is small and noisy and per-parameter step
  sizes make the few sparse W entries and the heads train at sensible rates.
- Hard thresholding after every step (FastGRNN's IHT) so W keeps the configured
  sparsity, and hence the model size, whatever the gradients do.
- EWC (diagonal Fisher at each consolidation) so a week of one kind of traffic
  does not erase what earlier traffic taught.
- A held-out slice chosen by a hash of the session, so it is never trained on,
  and a new router replaces the old one only if it is no worse there.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..config import LearningConfig, RouterConfig
from ..router import fastgrnn as fg
from ..router.state import TrainState
from .utility import ReplaySample, advantage_weights

log = logging.getLogger(__name__)

ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class TrainConfig:
    """The training knobs, gathered from the router and learning config sections."""

    learning_rate: float = 0.01
    epochs: int = 20
    batch_size: int = 32
    ewc_lambda: float = 0.4
    ewc_decay: float = 0.9
    sparsity: float = 0.95
    reg_weight: float = 0.5         # alpha on the SmoothL1 temperature/top_p terms
    max_seq_len: int = 8
    holdout_fraction: float = 0.2
    min_train_samples: int = 16
    max_steps: int = 2000
    min_steps: int = 200
    accept_acc_tolerance: float = 0.02
    # The accept gate's z: a run is rejected only if it is worse on the held-out slice by
    # more than z standard errors of the paired difference (see ``_no_worse``). 1.64 is a
    # one-sided 95 % test; 0 restores the old exact gate (loss must not rise at all).
    accept_z: float = 1.64

    @classmethod
    def from_configs(cls, router: RouterConfig, learning: LearningConfig) -> "TrainConfig":
        return cls(learning_rate=learning.learning_rate, epochs=learning.epochs,
                   batch_size=learning.batch_size, ewc_lambda=learning.ewc_lambda,
                   ewc_decay=learning.ewc_decay, sparsity=router.sparsity,
                   reg_weight=learning.reg_weight, max_seq_len=learning.max_seq_turns,
                   holdout_fraction=learning.holdout_fraction,
                   min_train_samples=learning.min_train_samples,
                   max_steps=learning.max_steps_per_run,
                   min_steps=min(learning.min_steps_per_run, learning.max_steps_per_run),
                   accept_acc_tolerance=learning.accept_acc_tolerance)


@dataclass
class TrainReport:
    accepted: bool = False
    rolled_back: bool = False
    preempted: bool = False
    reason: str = ""
    n_train: int = 0
    n_holdout: int = 0
    n_labelled_holdout: int = 0
    steps: int = 0
    holdout_acc_before: float | None = None
    holdout_acc_after: float | None = None
    holdout_loss_before: float | None = None
    holdout_loss_after: float | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    duration_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------
# samples -> padded batches


def is_holdout(sample: ReplaySample, fraction: float) -> bool:
    """Stable split by session (or request): the same sample is always on the same side."""
    key = (sample.session_id or sample.request_id).encode("utf-8", "surrogatepass")
    return (zlib.crc32(key) % 10_000) < int(round(fraction * 10_000))


def split_holdout(samples: Sequence[ReplaySample],
                  fraction: float) -> tuple[list[ReplaySample], list[ReplaySample]]:
    train: list[ReplaySample] = []
    hold: list[ReplaySample] = []
    for s in samples:
        (hold if is_holdout(s, fraction) else train).append(s)
    return train, hold


def build_sequences(samples: Sequence[ReplaySample], max_len: int) -> list[list[ReplaySample]]:
    """Group a session's turns in order; cut long sessions into chunks for truncated BPTT."""
    assert max_len >= 1
    by_session: dict[str, list[ReplaySample]] = {}
    out: list[list[ReplaySample]] = []
    for s in samples:
        if s.session_id is None:
            out.append([s])
        else:
            by_session.setdefault(s.session_id, []).append(s)
    for seq in by_session.values():
        seq.sort(key=lambda s: (s.turn_index, s.created_at))
        for i in range(0, len(seq), max_len):
            out.append(seq[i:i + max_len])
    return out


def _targets(sample: ReplaySample, adv: float | None) -> tuple[int, int, float, float, float, float]:
    """(y_ctx, y_mode, y_temp, y_top_p, w_cls, w_reg) for one sample."""
    if sample.labelled:
        has_reg = sample.target_temperature is not None and sample.target_top_p is not None
        return (int(sample.target_context), int(sample.target_mode),  # type: ignore[arg-type]
                float(sample.target_temperature or 0.0), float(sample.target_top_p or 0.0),
                1.0, 1.0 if has_reg else 0.0)
    if adv is not None and adv > 0:
        return (sample.context_class, sample.mode_class, sample.temperature, sample.top_p,
                adv, adv)
    return (-1, -1, 0.0, 0.0, 0.0, 0.0)


def make_batch(seqs: Sequence[Sequence[ReplaySample]], layout: fg.Layout,
               adv: dict[str, float] | None = None) -> fg.Batch:
    """Pad sequences into one Batch; ``adv`` maps request_id to an imitation weight."""
    B = len(seqs)
    T = max(len(s) for s in seqs)
    D = layout.n_in
    X = np.zeros((B, T, D))
    yc = np.full((B, T), -1, dtype=np.int64)
    ym = np.full((B, T), -1, dtype=np.int64)
    yt = np.zeros((B, T))
    yp = np.zeros((B, T))
    wc = np.zeros((B, T))
    wr = np.zeros((B, T))
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    adv = adv or {}
    for b, seq in enumerate(seqs):
        for t, s in enumerate(seq):
            if s.features.shape != (D,):
                raise ValueError(f"sample {s.request_id} has {s.features.shape} features, "
                                 f"the router expects ({D},)")
            X[b, t] = s.features
            yc[b, t], ym[b, t], yt[b, t], yp[b, t], wc[b, t], wr[b, t] = _targets(
                s, adv.get(s.request_id))
    return fg.Batch(X, np.zeros((B, layout.hidden)), yc, ym, yt, yp, wc, wr, lengths)


def imitation_weights(samples: Sequence[ReplaySample]) -> dict[str, float]:
    """Advantage weights for the unlabelled samples that have a known utility."""
    pool = [s for s in samples if not s.labelled and s.utility is not None]
    w = advantage_weights(np.array([s.utility for s in pool], dtype=np.float64))
    return {s.request_id: float(x) for s, x in zip(pool, w)}


# --------------------------------------------------------------------------
# optimisation pieces


def ewc_penalty(theta: np.ndarray, fisher: np.ndarray, anchor: np.ndarray,
                lam: float) -> tuple[float, np.ndarray]:
    """lambda * sum F (theta - theta*)^2 and its gradient."""
    d = theta - anchor  # (P,)
    return float(lam * np.sum(fisher * d * d)), 2.0 * lam * fisher * d


def adam_step(state: TrainState, grad: np.ndarray, lr: float) -> None:
    """In-place Adam update of state.theta (bias-corrected)."""
    assert grad.shape == state.theta.shape
    state.t += 1
    state.m *= ADAM_BETA1
    state.m += (1.0 - ADAM_BETA1) * grad
    state.v *= ADAM_BETA2
    state.v += (1.0 - ADAM_BETA2) * grad * grad
    mhat = state.m / (1.0 - ADAM_BETA1 ** state.t)
    vhat = state.v / (1.0 - ADAM_BETA2 ** state.t)
    state.theta -= lr * mhat / (np.sqrt(vhat) + ADAM_EPS)


def fisher_diagonal(theta: np.ndarray, layout: fg.Layout, seqs: Sequence[Sequence[ReplaySample]],
                    alpha: float, adv: dict[str, float] | None = None) -> np.ndarray:
    """Empirical diagonal Fisher: the mean squared per-sequence gradient of the task loss."""
    acc = np.zeros(layout.size)
    n = 0
    if not seqs:
        return acc
    full = make_batch(seqs, layout, adv)
    for i in range(len(seqs)):
        batch = full.take(np.array([i]))
        if not ((batch.w_cls > 0) | (batch.w_reg > 0)).any():
            continue
        _, g = fg.loss_and_grad(theta, layout, batch, alpha)
        acc += g * g
        n += 1
    return acc / max(n, 1)


def consolidate(state: TrainState, layout: fg.Layout, seqs: Sequence[Sequence[ReplaySample]],
                cfg: TrainConfig, adv: dict[str, float] | None = None) -> None:
    """Online EWC: F <- decay * F + F_new, anchor <- theta (in place)."""
    f_new = fisher_diagonal(state.theta, layout, seqs, cfg.reg_weight, adv)
    state.fisher = cfg.ewc_decay * state.fisher + f_new
    state.anchor = state.theta.copy()
    state.consolidations += 1


def fit(state: TrainState, layout: fg.Layout, seqs: Sequence[Sequence[ReplaySample]],
        cfg: TrainConfig, rng: np.random.Generator, steps: int,
        should_stop: Callable[[], bool] | None = None, dense_steps: int = 0,
        adv: dict[str, float] | None = None) -> dict:
    """Minibatch Adam steps in place; returns {steps, first_loss, last_loss, stopped}.

    ``dense_steps``: train W densely first, then threshold (the paper's schedule
    for training from scratch); 0 thresholds after every step.
    """
    n = len(seqs)
    bs = max(1, min(cfg.batch_size, n))
    full = make_batch(seqs, layout, adv)
    order = rng.permutation(n)
    pos = 0
    first = last = None
    done = 0
    for step in range(steps):
        if should_stop is not None and should_stop():
            return {"steps": done, "first_loss": first, "last_loss": last, "stopped": True}
        if pos + bs > n:
            order = rng.permutation(n)
            pos = 0
        batch = full.take(order[pos:pos + bs])
        pos += bs
        loss, grad = fg.loss_and_grad(state.theta, layout, batch, cfg.reg_weight)
        if cfg.ewc_lambda > 0 and state.consolidations > 0:
            pen, pgrad = ewc_penalty(state.theta, state.fisher, state.anchor, cfg.ewc_lambda)
            loss += pen
            grad += pgrad
        if not np.isfinite(grad).all():
            raise FloatingPointError("non-finite gradient in router training")
        adam_step(state, grad, cfg.learning_rate)
        if step >= dense_steps:
            fg.hard_threshold(state.theta, layout, cfg.sparsity)
        first = loss if first is None else first
        last = loss
        done += 1
    return {"steps": done, "first_loss": first, "last_loss": last, "stopped": False}


def evaluate(theta: np.ndarray, layout: fg.Layout, seqs: Sequence[Sequence[ReplaySample]],
             alpha: float, adv: dict[str, float] | None = None) -> dict:
    """Held-out task loss and, on labelled steps, joint (context and mode) accuracy."""
    if not seqs:
        return {"loss": None, "acc": None, "n_labelled": 0}
    batch = make_batch(seqs, layout, adv)
    loss, _ = fg.loss_and_grad(theta, layout, batch, alpha)
    heads = fg.forward(theta, layout, batch.X, batch.h0, batch.lengths)
    labelled = np.zeros(batch.y_ctx.shape, dtype=bool)
    for b, seq in enumerate(seqs):
        for t, s in enumerate(seq):
            labelled[b, t] = s.labelled
    n_lab = int(labelled.sum())
    if n_lab == 0:
        return {"loss": loss, "acc": None, "n_labelled": 0,
                "step_loss": _step_losses(heads, batch, alpha), "step_ok": None}
    ok = (heads.p_ctx.argmax(-1) == batch.y_ctx) & (heads.p_mode.argmax(-1) == batch.y_mode)
    return {"loss": loss, "acc": float(ok[labelled].mean()), "n_labelled": n_lab,
            "step_loss": _step_losses(heads, batch, alpha), "step_ok": ok[labelled]}


def _step_losses(heads: fg.Heads, batch: fg.Batch, alpha: float) -> np.ndarray:
    """The task loss of every labelled step (the terms ``fg.loss_and_grad`` sums), (n,).

    The accept gate needs the spread of the held-out loss, not only its mean.
    """
    B, T = batch.y_ctx.shape
    valid = np.arange(T)[None, :] < np.asarray(batch.lengths)[:, None]
    total = np.zeros((B, T))
    for p, y in ((heads.p_ctx, batch.y_ctx), (heads.p_mode, batch.y_mode)):
        w = np.where(y >= 0, batch.w_cls, 0.0)
        py = np.take_along_axis(p, np.maximum(y, 0)[..., None], -1)[..., 0]
        total += w * -np.log(np.maximum(py, 1e-300))
    total += alpha * batch.w_reg * (fg._sl1(heads.temp - batch.y_temp, fg.SMOOTH_L1_BETA)
                                    + fg._sl1(heads.top_p - batch.y_top_p, fg.SMOOTH_L1_BETA))
    keep = valid & ((batch.w_cls > 0) | (batch.w_reg > 0))
    return total[keep]


def _paired_se(before: np.ndarray | None, after: np.ndarray | None) -> float:
    """Standard error of the mean paired difference (after - before) on the same samples."""
    if before is None or after is None or len(before) < 2 or len(before) != len(after):
        return 0.0
    d = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    return float(d.std(ddof=1) / math.sqrt(len(d)))


def gate_tolerances(before: dict, after: dict, acc_tolerance: float,
                    z: float) -> tuple[float, float]:
    """(loss tolerance, accuracy tolerance) for one run: z standard errors of the paired
    held-out difference, and never less than ``acc_tolerance`` for accuracy."""
    loss_tol = z * _paired_se(before.get("step_loss"), after.get("step_loss"))
    acc_tol = max(acc_tolerance, z * _paired_se(before.get("step_ok"), after.get("step_ok")))
    return loss_tol, acc_tol


def _no_worse(before: dict, after: dict, acc_tolerance: float, z: float = 0.0) -> bool:
    """No worse on the held-out slice than chance allows: a non-inferiority test.

    Loss (cross-entropy, a proper scoring rule) is the primary test: it is
    smooth and uses every held-out sample's full probabilities; accuracy is a
    guard. Both compare the *same* held-out samples before and after, so the
    tolerance is z standard errors of the paired difference: it shrinks as the
    held-out slice grows, and on a slice of a few dozen samples it does not
    reject a run because two samples flipped. (With a fixed tolerance, a run
    that halved the held-out loss while a new kind of traffic moved the labels
    was rejected every time, and the router never learned the new rule:
    benchmarks/router/forgetting.py, the "rule" shift.) Never accept a NaN.
    """
    if after["loss"] is None or not math.isfinite(after["loss"]):
        return False
    loss_tol, acc_tol = gate_tolerances(before, after, acc_tolerance, z)
    if after["loss"] > before["loss"] + loss_tol + 1e-12:
        return False
    if before["acc"] is not None and after["acc"] is not None:
        return after["acc"] >= before["acc"] - acc_tol
    return True


def train(state: TrainState, layout: fg.Layout, samples: Sequence[ReplaySample],
          holdout: Sequence[ReplaySample], cfg: TrainConfig, rng: np.random.Generator,
          should_stop: Callable[[], bool] | None = None) -> tuple[TrainState, TrainReport]:
    """Train a copy of ``state``; return it if no worse on ``holdout``, else the old one.

    The returned state is consolidated (EWC anchor and Fisher updated) when
    accepted. ``should_stop`` is polled every step; a pre-empted run keeps the
    old state, since a half-trained router was never validated.
    """
    t0 = time.monotonic()
    rep = TrainReport(n_train=len(samples), n_holdout=len(holdout))
    adv = imitation_weights(list(samples) + list(holdout))
    train_seqs = [s for s in build_sequences(samples, cfg.max_seq_len)
                  if any(x.labelled or adv.get(x.request_id, 0.0) > 0 for x in s)]
    hold_seqs = build_sequences(holdout, cfg.max_seq_len)
    if len(train_seqs) < 1 or len(samples) < cfg.min_train_samples:
        rep.reason = f"too few training samples ({len(samples)} < {cfg.min_train_samples})"
        rep.duration_s = time.monotonic() - t0
        return state, rep
    if not hold_seqs:
        rep.reason = "no held-out samples to validate against"
        rep.duration_s = time.monotonic() - t0
        return state, rep
    before = evaluate(state.theta, layout, hold_seqs, cfg.reg_weight, adv)
    new = state.copy()
    steps = min(cfg.max_steps, max(cfg.min_steps, cfg.epochs * max(
        1, math.ceil(len(train_seqs) / max(1, cfg.batch_size)))))
    info = fit(new, layout, train_seqs, cfg, rng, steps, should_stop, adv=adv)
    rep.steps = info["steps"]
    rep.train_loss_first, rep.train_loss_last = info["first_loss"], info["last_loss"]
    rep.holdout_acc_before, rep.holdout_loss_before = before["acc"], before["loss"]
    rep.n_labelled_holdout = before["n_labelled"]
    if info["stopped"]:
        rep.preempted = True
        rep.reason = "pre-empted by a request; previous router kept"
        rep.duration_s = time.monotonic() - t0
        return state, rep
    after = evaluate(new.theta, layout, hold_seqs, cfg.reg_weight, adv)
    rep.holdout_acc_after, rep.holdout_loss_after = after["acc"], after["loss"]
    loss_tol, acc_tol = gate_tolerances(before, after, cfg.accept_acc_tolerance, cfg.accept_z)
    rep.extra["gate"] = {"z": cfg.accept_z, "loss_tolerance": loss_tol,
                         "acc_tolerance": acc_tol}
    if _no_worse(before, after, cfg.accept_acc_tolerance, cfg.accept_z):
        consolidate(new, layout, train_seqs, cfg, adv)
        rep.accepted = True
        rep.reason = "no worse on the held-out slice"
        result = new
    else:
        rep.rolled_back = True
        rep.reason = "worse on the held-out slice; previous router kept"
        result = state
    rep.duration_s = time.monotonic() - t0
    log.info("router training finished", extra={
        "accepted": rep.accepted, "steps": rep.steps, "n_train": rep.n_train,
        "n_holdout": rep.n_holdout, "acc_before": rep.holdout_acc_before,
        "acc_after": rep.holdout_acc_after, "loss_before": rep.holdout_loss_before,
        "loss_after": rep.holdout_loss_after, "duration_s": round(rep.duration_s, 3)})
    return result, rep
