"""Trainer: Adam, EWC, sparsity/rank after training, accept-if-not-worse, pre-emption."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning import trainer as T
from ruvllm_edge.learning.utility import ReplaySample
from ruvllm_edge.router import fastgrnn as fg
from ruvllm_edge.router.features import N_FEATURES

LAYOUT = fg.Layout(N_FEATURES, 16, 4)
CFG = dataclasses.replace(T.TrainConfig.from_configs(RouterConfig(), LearningConfig()),
                          sparsity=0.9, min_train_samples=8, epochs=30, batch_size=16)


def _rule(x: np.ndarray) -> tuple[int, int]:
    """A learnable synthetic routing rule on two features."""
    return (0 if x[0] < 0.5 else 3), (1 if x[1] < 0.5 else 2)


def _samples(rng: np.random.Generator, n: int, rule=_rule, prefix: str = "s",
             sessions: int | None = None) -> list[ReplaySample]:
    out = []
    for i in range(n):
        x = rng.random(N_FEATURES).astype(np.float32)
        c, m = rule(x)
        sid = f"{prefix}-sess{i % sessions}" if sessions else None
        out.append(ReplaySample(request_id=f"{prefix}{i}", features=x, context_class=c,
                                mode_class=m, temperature=0.3, top_p=0.9, session_id=sid,
                                turn_index=i // sessions if sessions else 0, target_context=c,
                                target_mode=m, target_temperature=0.3, target_top_p=0.9,
                                label_source="explored"))
    return out


def _fresh(seed: int = 0) -> T.TrainState:
    return T.TrainState.fresh(fg.init_params(LAYOUT, np.random.default_rng(seed), CFG.sparsity))


def test_adam_first_step_moves_each_parameter_by_lr_against_the_gradient() -> None:
    s = T.TrainState.fresh(np.zeros(5))
    g = np.array([0.3, -2.0, 1e-3, -1e-2, 5.0])
    T.adam_step(s, g, lr=0.01)
    np.testing.assert_allclose(s.theta, -0.01 * np.sign(g), rtol=1e-4)
    assert s.t == 1


def test_ewc_penalty_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    theta, anchor, fisher = rng.standard_normal(7), rng.standard_normal(7), rng.random(7)
    val, grad = T.ewc_penalty(theta, fisher, anchor, 0.4)
    assert val == pytest.approx(0.4 * np.sum(fisher * (theta - anchor) ** 2))
    for i in range(7):
        e = np.zeros(7)
        e[i] = 1e-6
        fd = (T.ewc_penalty(theta + e, fisher, anchor, 0.4)[0]
              - T.ewc_penalty(theta - e, fisher, anchor, 0.4)[0]) / 2e-6
        assert grad[i] == pytest.approx(fd, rel=1e-5)


def test_fisher_is_the_mean_squared_per_sequence_gradient() -> None:
    rng = np.random.default_rng(1)
    samples = _samples(rng, 6)
    seqs = [[s] for s in samples]
    theta = _fresh().theta
    want = np.mean([fg.loss_and_grad_ref(theta, LAYOUT, T.make_batch([q], LAYOUT), 0.5)[1] ** 2
                    for q in seqs], axis=0)
    np.testing.assert_allclose(T.fisher_diagonal(theta, LAYOUT, seqs, 0.5), want, rtol=1e-9,
                               atol=1e-15)


def test_fit_learns_and_keeps_sparsity_and_rank() -> None:
    rng = np.random.default_rng(2)
    train, test = _samples(rng, 400, sessions=100), _samples(rng, 200, prefix="t")
    state = _fresh()
    before = T.evaluate(state.theta, LAYOUT, [[s] for s in test], 0.5)
    info = T.fit(state, LAYOUT, T.build_sequences(train, 8), CFG, rng, 600)
    after = T.evaluate(state.theta, LAYOUT, [[s] for s in test], 0.5)
    assert info["last_loss"] < info["first_loss"]
    assert after["acc"] >= 0.9 > before["acc"]
    assert np.count_nonzero(LAYOUT.view(state.theta, "W")) <= fg.n_keep(LAYOUT, CFG.sparsity)
    u = LAYOUT.view(state.theta, "U1") @ LAYOUT.view(state.theta, "U2")
    assert np.linalg.matrix_rank(u) <= LAYOUT.rank


def test_build_sequences_orders_turns_and_chunks() -> None:
    rng = np.random.default_rng(3)
    samples = _samples(rng, 20, sessions=2)
    rng.shuffle(samples)
    seqs = T.build_sequences(samples, max_len=4)
    assert sorted(len(s) for s in seqs) == [2, 2, 4, 4, 4, 4]
    for seq in seqs:
        assert len({s.session_id for s in seq}) == 1
        turns = [s.turn_index for s in seq]
        assert turns == sorted(turns)


def test_holdout_split_is_stable_and_by_session() -> None:
    rng = np.random.default_rng(4)
    samples = _samples(rng, 300, sessions=60)
    tr, ho = T.split_holdout(samples, 0.2)
    tr2, ho2 = T.split_holdout(list(reversed(samples)), 0.2)
    assert {s.request_id for s in ho} == {s.request_id for s in ho2}
    assert not {s.session_id for s in tr} & {s.session_id for s in ho}
    assert 0.05 < len(ho) / len(samples) < 0.4


def test_train_accepts_an_improvement_and_consolidates() -> None:
    rng = np.random.default_rng(5)
    samples = _samples(rng, 300)
    tr, ho = samples[:240], samples[240:]
    old = _fresh()
    new, rep = T.train(old, LAYOUT, tr, ho, CFG, rng)
    assert rep.accepted and not rep.rolled_back
    assert rep.holdout_acc_after > rep.holdout_acc_before
    assert new is not old and new.consolidations == 1 and new.fisher.sum() > 0
    np.testing.assert_array_equal(new.anchor, new.theta)


def test_train_rolls_back_when_worse_on_holdout() -> None:
    rng = np.random.default_rng(6)
    good = _samples(rng, 300)
    old = _fresh()
    T.fit(old, LAYOUT, [[s] for s in good], CFG, rng, 600)
    flipped = _samples(rng, 240, rule=lambda x: (4 - _rule(x)[0], 3 - _rule(x)[1]), prefix="f")
    before = old.theta.copy()
    result, rep = T.train(old, LAYOUT, flipped, good[:60], CFG, rng)
    assert rep.rolled_back and not rep.accepted
    assert result is old
    np.testing.assert_array_equal(result.theta, before)
    assert rep.holdout_acc_after < rep.holdout_acc_before


def test_train_is_preempted_cooperatively() -> None:
    rng = np.random.default_rng(7)
    samples = _samples(rng, 200)
    old = _fresh()
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    result, rep = T.train(old, LAYOUT, samples[:160], samples[160:], CFG, rng, stop)
    assert rep.preempted and rep.steps == 5 and result is old


def test_train_skips_with_too_few_samples_or_no_holdout() -> None:
    rng = np.random.default_rng(8)
    s = _samples(rng, 20)
    old = _fresh()
    assert T.train(old, LAYOUT, s[:3], s[3:], CFG, rng)[1].reason.startswith("too few")
    result, rep = T.train(old, LAYOUT, s, [], CFG, rng)
    assert "held-out" in rep.reason and result is old


def test_unlabelled_samples_imitate_only_above_average_outcomes() -> None:
    rng = np.random.default_rng(9)
    x = rng.random(N_FEATURES).astype(np.float32)
    mk = lambda rid, u: ReplaySample(request_id=rid, features=x, context_class=2, mode_class=1,  # noqa: E731
                                     temperature=0.5, top_p=0.9, quality=0.5, utility=u)
    samples = [mk("good", 0.9), mk("avg", 0.5), mk("bad", 0.1)]
    w = T.imitation_weights(samples)
    assert w["good"] > 0 and w["bad"] == 0 and w["avg"] == 0
    batch = T.make_batch([[s] for s in samples], LAYOUT, w)
    assert batch.y_ctx[0, 0] == 2 and batch.w_cls[0, 0] > 0 and batch.w_cls[2, 0] == 0


def test_ewc_holds_the_parameters_task_a_relied_on() -> None:
    """After consolidating on A, training on a conflicting B moves high-Fisher parameters
    far less with EWC than without (the property EWC is for; what that buys in accuracy
    is measured, honestly, in benchmarks/bench_router.py)."""
    rng = np.random.default_rng(10)
    task_a = _samples(rng, 300, prefix="a")
    rule_b = lambda x: (3 - _rule(x)[0], 3 - _rule(x)[1])  # noqa: E731
    task_b = _samples(rng, 300, rule=rule_b, prefix="b")
    base = _fresh()
    T.fit(base, LAYOUT, [[s] for s in task_a], dataclasses.replace(CFG, ewc_lambda=0), rng, 600)
    T.consolidate(base, LAYOUT, [[s] for s in task_a], CFG)
    important = base.fisher >= np.quantile(base.fisher, 0.9)
    drift = {}
    for lam in (0.0, 400.0):
        s = base.copy()
        T.fit(s, LAYOUT, [[x] for x in task_b], dataclasses.replace(CFG, ewc_lambda=lam),
              np.random.default_rng(11), 300)
        drift[lam] = float(np.abs(s.theta - base.anchor)[important].mean())
    assert drift[400.0] < 0.5 * drift[0.0]


@pytest.mark.parametrize("before,after,ok", [
    ({"loss": 1.0, "acc": 0.80}, {"loss": 0.5, "acc": 0.79}, True),    # tiny acc dip, better loss
    ({"loss": 1.0, "acc": 0.80}, {"loss": 0.5, "acc": 0.70}, False),   # real accuracy loss
    ({"loss": 1.0, "acc": 0.80}, {"loss": 1.1, "acc": 0.90}, False),   # loss rose
    ({"loss": 1.0, "acc": None}, {"loss": 0.9, "acc": None}, True),
    ({"loss": 1.0, "acc": 0.8}, {"loss": float("nan"), "acc": 0.9}, False),
])
def test_acceptance_rule(before: dict, after: dict, ok: bool) -> None:
    assert T._no_worse(before, after, 0.02) is ok


def test_step_losses_sum_to_the_kernels_loss() -> None:
    """The gate's per-sample losses are the very terms the trained loss is made of."""
    rng = np.random.default_rng(21)
    seqs = T.build_sequences(_samples(rng, 40, sessions=6), 8)
    ev = T.evaluate(_fresh(3).theta, LAYOUT, seqs, 0.5)
    assert ev["step_loss"].shape == (ev["n_labelled"],)
    assert float(ev["step_loss"].mean()) == pytest.approx(ev["loss"], rel=1e-9)


def _gate_case(n: int, lost: int, gained: int, loss_shift: float) -> tuple[dict, dict]:
    """n held-out samples; accuracy 0.9 before; `lost` right answers turn wrong and `gained`
    wrong ones turn right; every sample's loss moves by loss_shift +- 0.5 (paired)."""
    rng = np.random.default_rng(n)
    ok0 = np.zeros(n, bool)
    ok0[:int(0.9 * n)] = True
    ok1 = ok0.copy()
    ok1[:lost] = False
    ok1[n - gained:] = True
    l0 = rng.random(n) + 0.5
    l1 = l0 + loss_shift + rng.uniform(-0.5, 0.5, n)
    return ({"loss": l0.mean(), "acc": ok0.mean(), "step_loss": l0, "step_ok": ok0},
            {"loss": l1.mean(), "acc": ok1.mean(), "step_loss": l1, "step_ok": ok1})


def test_gate_tolerance_scales_with_the_held_out_size() -> None:
    """Same shape of change, two held-out sizes: the old fixed gate rejects both (accuracy
    fell 3.3 points > 0.02), the SE gate accepts the small slice (two samples flipped is
    noise) and rejects the same relative change on a slice 100 times larger."""
    small = _gate_case(60, lost=3, gained=1, loss_shift=-0.2)
    large = _gate_case(6000, lost=300, gained=100, loss_shift=-0.2)
    assert not T._no_worse(*small, 0.02)            # the old gate (z = 0)
    assert not T._no_worse(*large, 0.02)
    assert T._no_worse(*small, 0.02, z=1.64)
    assert not T._no_worse(*large, 0.02, z=1.64)
    lt_s, at_s = T.gate_tolerances(*small, 0.02, 1.64)
    lt_l, at_l = T.gate_tolerances(*large, 0.02, 1.64)
    assert lt_l < lt_s / 5 and at_l < at_s


def test_gate_still_rejects_a_loss_rise_beyond_the_noise() -> None:
    before, after = _gate_case(400, lost=0, gained=0, loss_shift=0.3)
    assert not T._no_worse(before, after, 0.02, z=1.64)
    before, after = _gate_case(400, lost=0, gained=0, loss_shift=0.01)
    assert T._no_worse(before, after, 0.02, z=1.64)   # within the noise of 400 samples
    assert not T._no_worse(before, after, 0.02)         # the old gate: any rise rejects


def test_train_reports_the_gate_it_applied() -> None:
    rng = np.random.default_rng(5)
    samples = _samples(rng, 120, sessions=40)
    tr, ho = T.split_holdout(samples, 0.25)
    _, rep = T.train(_fresh(), LAYOUT, tr, ho, dataclasses.replace(CFG, max_steps=50,
                                                                   min_steps=50), rng)
    g = rep.extra["gate"]
    assert g["z"] == CFG.accept_z and g["acc_tolerance"] >= CFG.accept_acc_tolerance
    assert g["loss_tolerance"] >= 0
