"""Forgetting through the daemon's own learning code, on synthetic tasks (and said so).

Task A = "household assistant" traffic (what/who/when/yes-no/other questions)
labelled by the first-start rules; task B = "developer" traffic
(how/why/code/math/chat/compose). Two shifts: "input" (B labelled by the same
rules, only the traffic changes) and "rule" (B also prefers one more context
class, long answers and warmer sampling).

The router starts trained on A only. Then B traffic arrives, and between
batches of it the daemon's idle learning runs, exactly as in the daemon: the
samples go into the real ``ReplayBuffer`` (reservoir, in a real SQLite file),
and ``IdleScheduler.run_now`` runs the real ``RouterLearningJob``, which
splits the buffer into train and the hash-chosen held-out slice, trains a copy
(BPTT, Adam, EWC at the configured lambda, hard thresholding) and installs it
only if the accept gate (``trainer._no_worse``) passes. Conditions: the gate
as shipped (z standard errors of the paired held-out difference), the same
without EWC, and the old fixed gate (z = 0: no loss rise at all, accuracy
within 0.02), plus the unprotected optimiser (plain Adam on B, no replay, no
gate) as the reference for how much there is to forget.

Accuracy = the context and mode heads both right, on 1,000 fresh A and 1,000
fresh B requests per seed (test sets, never in the buffer). Seeds change the
data drawn, its order, the initial weights, the reservoir's draws and the
minibatch order.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning import curriculum as C
from ruvllm_edge.learning import trainer as T
from ruvllm_edge.learning.jobs import JOB_NAME, RouterLearningJob
from ruvllm_edge.learning.replay import ReplayBuffer
from ruvllm_edge.learning.scheduler import IdleScheduler
from ruvllm_edge.learning.utility import ReplaySample
from ruvllm_edge.memory.db import Database
from ruvllm_edge.router import fastgrnn as fg
from ruvllm_edge.router import features as fe
from ruvllm_edge.router import policy as P

A_TYPES = {"what", "who", "when", "yes_no", "other"}
# "A is kept": the goal (< 5 % relative loss). "B is learned": B's accuracy reaches
# 90 % of what the unprotected optimiser reaches on B with the same data and seed (that run
# gives up A entirely, so it is the most B can get here); the absolute figure is reported
# beside it (B_LEARNED_ACC was the first, absolute reading of the goal).
B_LEARNED_ACC = 0.90
B_LEARNED_SHARE_OF_UNPROTECTED = 0.90
A_MAX_RELATIVE_LOSS = 0.05


def _rule_shift(inp: fe.FeatureInputs) -> tuple[int, int, float, float]:
    c, m, t, p = C.curriculum_target(inp)
    return min(c + 1, 4), (P.LONG if m != P.MEMORY else m), min(t + 0.3, 1.0), 0.95


def _task(rng: np.random.Generator, n: int, task: str, shift: str,
          tag: str) -> list[ReplaySample]:
    out: list[ReplaySample] = []
    while len(out) < n:
        inp = C.synthetic_inputs(rng)
        if (fe.question_type(inp.query) in A_TYPES) != (task == "A"):
            continue
        c, m, t, p = (_rule_shift(inp) if task == "B" and shift == "rule"
                      else C.curriculum_target(inp))
        out.append(ReplaySample(request_id=f"{tag}{task}{len(out)}",
                                features=fe.build_features(inp), context_class=c,
                                mode_class=m, temperature=t, top_p=p, target_context=c,
                                target_mode=m, target_temperature=t, target_top_p=p,
                                label_source="curriculum"))
    return out


def _acc(theta: np.ndarray, layout: fg.Layout, samples: Sequence[ReplaySample],
         alpha: float) -> float:
    return float(T.evaluate(theta, layout, [[s] for s in samples], alpha)["acc"])


def _daemon_loop(base: T.TrainState, rcfg: RouterConfig, lcfg: LearningConfig,
                 a_tr: list[ReplaySample], b_tr: list[ReplaySample], runs: int, seed: int,
                 accept_z: float) -> tuple[T.TrainState, dict[str, Any]]:
    """The daemon's loop: real ReplayBuffer in SQLite, real RouterLearningJob via
    IdleScheduler.run_now, B traffic arriving between runs."""
    layout = P.Router.layout_for(rcfg)
    with tempfile.TemporaryDirectory(prefix="bench-forget-") as tmp:
        db = Database(Path(tmp) / "ruvllm-edge.db", 16)
        try:
            replay = ReplayBuffer(db, lcfg.replay_capacity, np.random.default_rng(seed))
            router = P.Router(layout, base.copy(), rcfg)
            job = RouterLearningJob(router, Path(tmp) / "router.npz", replay, lcfg, seed=seed,
                                    accept_z=accept_z)
            sched = IdleScheduler(lcfg, [job.job()], max_memory_mb=1e9)
            for s in a_tr:                     # A's traffic filled the buffer first
                replay.add(s)
            per_run = max(1, len(b_tr) // runs)
            reports = []
            for r in range(runs):
                for s in b_tr[r * per_run:(r + 1) * per_run]:
                    replay.add(s)
                res = sched.run_now(wait=True, preemptible=False)[JOB_NAME]
                tr = res.get("report", {}).get("train", {})
                gate = tr.get("extra", {}).get("gate", {})
                reports.append({k: tr.get(k) for k in (
                    "accepted", "steps", "n_train", "n_holdout", "holdout_acc_before",
                    "holdout_acc_after", "holdout_loss_before", "holdout_loss_after")}
                    | {"acc_tolerance": gate.get("acc_tolerance"),
                       "loss_tolerance": gate.get("loss_tolerance"), "status": res["status"]})
            state = router.state.copy()
            in_buffer = sum(1 for s in replay.all() if s.request_id.split("-")[-1][:1] == "B")
        finally:
            db.close()
    return state, {"runs": runs, "runs_accepted": sum(bool(r["accepted"]) for r in reports),
                   "optimiser_steps": sum(int(r["steps"] or 0) for r in reports),
                   "b_per_run": per_run, "b_in_buffer_at_end": in_buffer, "run_reports": reports}


def bench_forgetting(runs: int, seeds: Sequence[int] = (1, 2, 3)) -> dict[str, Any]:
    rcfg, lcfg = RouterConfig(), LearningConfig()
    layout = P.Router.layout_for(rcfg)
    tc = T.TrainConfig.from_configs(rcfg, lcfg)
    out: dict[str, Any] = {
        "split": "synthetic: router trained on task A; test = 1,000 fresh A and 1,000 fresh B "
                 "requests per seed, never in the replay buffer",
        "runs": runs, "seeds": list(seeds), "replay_capacity": lcfg.replay_capacity,
        "holdout_fraction": lcfg.holdout_fraction, "config_ewc_lambda": tc.ewc_lambda,
        "accept_z": tc.accept_z, "accept_acc_tolerance": tc.accept_acc_tolerance,
        "goal": {"A_max_relative_loss": A_MAX_RELATIVE_LOSS,
                 "B_learned": f"acc_B_after >= {B_LEARNED_SHARE_OF_UNPROTECTED} x the "
                              "unprotected optimiser's acc_B_after (same seed)",
                 "B_absolute_reference": B_LEARNED_ACC},
        "shifts": {}}
    for shift in ("input", "rule"):
        rows = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            tag = f"s{seed}-"
            a_tr, a_te = _task(rng, 1500, "A", shift, tag), _task(rng, 1000, "A", shift, "tA")
            b_tr, b_te = _task(rng, 3000, "B", shift, tag), _task(rng, 1000, "B", shift, "tB")
            base = T.TrainState.fresh(fg.init_params(layout, np.random.default_rng(seed),
                                                     tc.sparsity))
            T.fit(base, layout, [[s] for s in a_tr], dataclasses.replace(tc, ewc_lambda=0.0),
                  np.random.default_rng(seed), 3000, dense_steps=1000)
            T.consolidate(base, layout, [[s] for s in a_tr[:1000]], tc)
            a0, b0 = _acc(base.theta, layout, a_te, tc.reg_weight), \
                _acc(base.theta, layout, b_te, tc.reg_weight)

            def row(name: str, state: T.TrainState, t0: float, **info: Any) -> None:
                a1 = _acc(state.theta, layout, a_te, tc.reg_weight)
                b1 = _acc(state.theta, layout, b_te, tc.reg_weight)
                ref = next((r["acc_B_after"] for r in rows if r["seed"] == seed
                            and r["condition"] == "optimiser_only"), b1)
                learned = b1 >= B_LEARNED_SHARE_OF_UNPROTECTED * ref
                rows.append({"condition": name, "seed": seed, "acc_A_before": a0,
                             "acc_A_after": a1, "acc_B_before": b0, "acc_B_after": b1,
                             "A_relative_loss": (a0 - a1) / a0 if a0 else None,
                             "B_share_of_unprotected": b1 / ref if ref else None,
                             "B_learned": learned, "B_above_0.90": b1 >= B_LEARNED_ACC,
                             "goal_met": learned
                             and (a0 - a1) / max(a0, 1e-9) < A_MAX_RELATIVE_LOSS,
                             "seconds": time.perf_counter() - t0, **info})
                extra = (f"  ({info['runs_accepted']}/{info['runs']} runs accepted)"
                         if "runs" in info else "")
                print(f"  forgetting[{shift}] seed {seed} {name:<22} A {a0:.3f} -> {a1:.3f}  "
                      f"B {b0:.3f} -> {b1:.3f}{extra}", flush=True)

            t0 = time.perf_counter()
            s = base.copy()
            T.fit(s, layout, [[x] for x in b_tr], tc, np.random.default_rng(seed + 100),
                  runs * 500)
            row("optimiser_only", s, t0, optimiser_steps=runs * 500)
            for name, lam, z in (("daemon", tc.ewc_lambda, tc.accept_z),
                                 ("daemon_no_ewc", 0.0, tc.accept_z),
                                 ("daemon_old_gate", tc.ewc_lambda, 0.0)):
                t0 = time.perf_counter()
                state, info = _daemon_loop(base, rcfg, dataclasses.replace(lcfg, ewc_lambda=lam),
                                           a_tr, b_tr, runs, seed, z)
                row(name, state, t0, ewc_lambda=lam, accept_z=z, **info)
        out["shifts"][shift] = rows
        out.setdefault("summary", {})[shift] = _summary(rows)
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per condition: median and range over seeds of A's relative loss and B's accuracy."""
    out: dict[str, Any] = {}
    for cond in dict.fromkeys(r["condition"] for r in rows):
        rs = [r for r in rows if r["condition"] == cond]
        la = [r["A_relative_loss"] for r in rs]
        bb = [r["acc_B_after"] for r in rs]
        out[cond] = {"A_relative_loss_median": float(np.median(la)),
                     "A_relative_loss_range": [float(min(la)), float(max(la))],
                     "acc_B_after_median": float(np.median(bb)),
                     "acc_B_after_range": [float(min(bb)), float(max(bb))],
                     "goal_met_seeds": sum(bool(r["goal_met"]) for r in rs), "seeds": len(rs),
                     "runs_accepted": [r.get("runs_accepted") for r in rs]}
    return out
