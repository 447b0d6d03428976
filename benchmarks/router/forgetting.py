"""Forgetting, on synthetic tasks (and said so).

Task A = "household assistant" traffic (what/who/when/yes-no/other questions)
labelled by the first-start rules; task B = "developer" traffic
(how/why/code/math/chat/compose). Two shifts: "input" (B labelled by the same
rules, only the traffic changes) and "rule" (B also prefers one more context
class, long answers and warmer sampling). Accuracy on A before and after N
optimiser updates (batch 32) on B, for: no protection, EWC at the configured
lambda, EWC at larger lambdas, reservoir replay (the buffer as the daemon
keeps it), replay + EWC, and the daemon's own loop (reservoir + training runs
of 500 steps, each kept only if no worse on the held-out slice), with and
without EWC.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning import curriculum as C
from ruvllm_edge.learning import trainer as T
from ruvllm_edge.learning.utility import ReplaySample
from ruvllm_edge.router import fastgrnn as fg
from ruvllm_edge.router import features as fe
from ruvllm_edge.router import policy as P

A_TYPES = {"what", "who", "when", "yes_no", "other"}


def _rule_shift(inp: fe.FeatureInputs) -> tuple[int, int, float, float]:
    c, m, t, p = C.curriculum_target(inp)
    return min(c + 1, 4), (P.LONG if m != P.MEMORY else m), min(t + 0.3, 1.0), 0.95


def _task(rng: np.random.Generator, n: int, task: str, shift: str) -> list[list[ReplaySample]]:
    out: list[list[ReplaySample]] = []
    while len(out) < n:
        inp = C.synthetic_inputs(rng)
        if (fe.question_type(inp.query) in A_TYPES) != (task == "A"):
            continue
        c, m, t, p = (_rule_shift(inp) if task == "B" and shift == "rule"
                      else C.curriculum_target(inp))
        out.append([ReplaySample(request_id=f"{task}{len(out)}", features=fe.build_features(inp),
                                 context_class=c, mode_class=m, temperature=t, top_p=p,
                                 target_context=c, target_mode=m, target_temperature=t,
                                 target_top_p=p, label_source="curriculum")])
    return out


def bench_forgetting(updates: int, lambdas: Sequence[float], seed: int = 1) -> dict[str, Any]:
    rcfg, lcfg = RouterConfig(), LearningConfig()
    layout = P.Router.layout_for(rcfg)
    tc = T.TrainConfig.from_configs(rcfg, lcfg)
    out: dict[str, Any] = {"updates": updates, "batch_size": tc.batch_size,
                           "learning_rate": tc.learning_rate, "config_ewc_lambda": tc.ewc_lambda,
                           "replay_capacity": lcfg.replay_capacity, "shifts": {}}
    for shift in ("input", "rule"):
        rng = np.random.default_rng(seed)
        a_tr, a_te = _task(rng, 3000, "A", shift), _task(rng, 1000, "A", shift)
        b_tr, b_te = _task(rng, 3000, "B", shift), _task(rng, 1000, "B", shift)
        base = T.TrainState.fresh(fg.init_params(layout, np.random.default_rng(0), tc.sparsity))
        T.fit(base, layout, a_tr, dataclasses.replace(tc, ewc_lambda=0.0),
              np.random.default_rng(0), 3000, dense_steps=1000)
        T.consolidate(base, layout, a_tr[:1000], tc)

        def acc(s: T.TrainState, seqs: list[list[ReplaySample]]) -> float:
            return float(T.evaluate(s.theta, layout, seqs, tc.reg_weight)["acc"])

        a0, b0 = acc(base, a_te), acc(base, b_te)
        rows = []

        def run(name: str, lam: float, replay: bool) -> None:
            s = base.copy()
            cfg = dataclasses.replace(tc, ewc_lambda=lam)
            t0 = time.perf_counter()
            if replay:
                _fit_with_reservoir(s, layout, a_tr, b_tr, cfg, updates, lcfg.replay_capacity)
            else:
                T.fit(s, layout, b_tr, cfg, np.random.default_rng(5), updates)
            a1, b1 = acc(s, a_te), acc(s, b_te)
            rows.append({"condition": name, "ewc_lambda": lam, "replay": replay,
                         "acc_A_before": a0, "acc_A_after": a1, "acc_B_before": b0,
                         "acc_B_after": b1, "A_loss_points": a0 - a1,
                         "A_relative_loss": (a0 - a1) / a0 if a0 else None,
                         "seconds": time.perf_counter() - t0})
            print(f"  forgetting[{shift}] {name:<18} A {a0:.3f} -> {a1:.3f}  "
                  f"B {b0:.3f} -> {b1:.3f}", flush=True)

        run("none", 0.0, False)
        run("ewc_config", tc.ewc_lambda, False)
        for lam in lambdas:
            run(f"ewc_{lam:g}", lam, False)
        run("replay", 0.0, True)
        run("replay+ewc_config", tc.ewc_lambda, True)
        for name, lam in (("daemon_loop", tc.ewc_lambda), ("daemon_loop_no_ewc", 0.0)):
            s = base.copy()
            t0 = time.perf_counter()
            info = _daemon_loop(s, layout, a_tr, b_tr, dataclasses.replace(tc, ewc_lambda=lam),
                                updates, lcfg)
            a1, b1 = acc(s, a_te), acc(s, b_te)
            rows.append({"condition": name, "ewc_lambda": lam, "replay": True,
                         "acc_A_before": a0, "acc_A_after": a1, "acc_B_before": b0,
                         "acc_B_after": b1, "A_loss_points": a0 - a1,
                         "A_relative_loss": (a0 - a1) / a0 if a0 else None,
                         "seconds": time.perf_counter() - t0, **info})
            print(f"  forgetting[{shift}] {name:<18} A {a0:.3f} -> {a1:.3f}  B {b0:.3f} -> "
                  f"{b1:.3f}  ({info['runs_accepted']}/{info['runs']} runs accepted)", flush=True)
        out["shifts"][shift] = rows
    return out


def _reservoir(seqs: list, capacity: int, rng: np.random.Generator) -> tuple[list, int]:
    """Reservoir sampling of ``seqs`` (the replay buffer's rule): (buffer, items seen)."""
    res: list = []
    t = 0
    for seq in seqs:
        t += 1
        if len(res) < capacity:
            res.append(seq)
        elif (j := int(rng.integers(0, t))) < capacity:
            res[j] = seq
    return res, t


def _fit_with_reservoir(s: T.TrainState, layout: fg.Layout, a_seqs: list, b_seqs: list,
                        cfg: T.TrainConfig, updates: int, capacity: int) -> None:
    """A's traffic fills the reservoir, then each update sees one new B sample and
    trains on a batch drawn from the reservoir (as the daemon's replay buffer does)."""
    rng = np.random.default_rng(7)
    res, t = _reservoir(a_seqs, capacity, rng)
    for i in range(updates):
        t += 1
        if (j := int(rng.integers(0, t))) < capacity:
            res[j] = b_seqs[i % len(b_seqs)]
        batch = T.make_batch([res[k] for k in rng.integers(0, len(res), cfg.batch_size)], layout)
        _, g = fg.loss_and_grad(s.theta, layout, batch, cfg.reg_weight)
        if cfg.ewc_lambda > 0:
            g += T.ewc_penalty(s.theta, s.fisher, s.anchor, cfg.ewc_lambda)[1]
        T.adam_step(s, g, cfg.learning_rate)
        fg.hard_threshold(s.theta, layout, cfg.sparsity)


def _daemon_loop(s: T.TrainState, layout: fg.Layout, a_seqs: list, b_seqs: list,
                 cfg: T.TrainConfig, updates: int, lcfg: LearningConfig,
                 steps_per_run: int = 500) -> dict[str, int]:
    """What the daemon does: a reservoir buffer, and every so often a training run on its
    contents (EWC at the configured lambda) that is kept only if no worse on the
    buffer's hash-chosen held-out slice. ``updates`` optimiser steps in total."""
    rng = np.random.default_rng(7)
    cap = lcfg.replay_capacity
    res, t = _reservoir(a_seqs, cap, rng)
    run_cfg = dataclasses.replace(cfg, max_steps=steps_per_run, epochs=10_000)
    runs = accepted = 0
    b_per_run = max(1, len(b_seqs) * steps_per_run // updates)
    i = 0
    while runs * steps_per_run < updates:
        for _ in range(b_per_run):  # new traffic arrives between runs
            t += 1
            if (j := int(rng.integers(0, t))) < cap:
                res[j] = b_seqs[i % len(b_seqs)]
            i += 1
        samples = [seq[0] for seq in res]
        tr, ho = T.split_holdout(samples, lcfg.holdout_fraction)
        new, rep = T.train(s, layout, tr, ho, run_cfg, rng)
        runs += 1
        if rep.accepted:
            accepted += 1
            s.theta, s.m, s.v, s.t = new.theta, new.m, new.v, new.t
            s.fisher, s.anchor, s.consolidations = new.fisher, new.anchor, new.consolidations
    return {"runs": runs, "runs_accepted": accepted, "steps_per_run": steps_per_run}
