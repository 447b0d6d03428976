"""Routing accuracy and cost against always-max settings and the oracle, and the printout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from _common import pct
from ruvllm_edge.learning.explore import TIE_EPS, Candidate, pick_best
from ruvllm_edge.router import policy as P

from .workload import Query


def _decision_name(c: Candidate) -> str:
    return f"k={P.CONTEXT_CLASSES[c.context_class]},{P.MODES[c.mode_class]}"


def _best(rows: list[dict[str, Any]]) -> tuple[Candidate, float]:
    return pick_best([(Candidate(r["context_class"], r["mode_class"]), r["utility"],
                       r["quality"] - r["utility"]) for r in rows])


def _row(rows: list[dict[str, Any]], c: int, m: int) -> dict[str, Any]:
    return next(r for r in rows if r["context_class"] == c and r["mode_class"] == m)


def routing_report(folds: list[tuple[P.Router, list[int]]], items: list[Query],
                   feats: list[np.ndarray], grid: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Router accuracy and cost on held-out items (each fold: a router and the items it
    never trained on), against always-max settings (k=16, long) and the oracle.

    exact: the router picked the labelled best decision; equivalent: the picked
    decision's utility equals the best one's (the same answer at the same cost, e.g.
    long mode when the short answer stopped on its own); within tie: the picked
    decision's utility is within TIE_EPS of the best one's (the explorer's own tie
    rule: such decisions count as equally good, and the label goes to the cheaper).
    """
    defaults = {"max_tokens": 256, "temperature": 0.7, "top_p": 0.9}
    exact = equiv = near = fallbacks = 0
    answerable = ans_exact = ans_near = 0
    picked, maxed, best_rows, cats, chosen = [], [], [], [], []
    for router, test_idx in folds:
        for i in test_idx:
            rows = grid[i]
            best, best_u = _best(rows)
            dec, _ = router.decide(feats[i], None, defaults)
            fallbacks += int(dec.fallback)
            r = _row(rows, dec.context_class, dec.mode_class)
            exact += int((dec.context_class, dec.mode_class)
                         == (best.context_class, best.mode_class))
            near += int(r["utility"] >= best_u - TIE_EPS)
            equiv += int(r["utility"] >= best_u - 1e-9)
            if any(x["correct"] for x in rows):  # some decision answers it correctly
                answerable += 1
                ans_exact += int((dec.context_class, dec.mode_class)
                                 == (best.context_class, best.mode_class))
                ans_near += int(r["utility"] >= best_u - TIE_EPS)
            picked.append(r)
            maxed.append(_row(rows, len(P.CONTEXT_CLASSES) - 1, P.LONG))
            best_rows.append(_row(rows, best.context_class, best.mode_class))
            cats.append(items[i].category)
            chosen.append({"query": items[i].query, "category": items[i].category,
                           "picked": _decision_name(Candidate(dec.context_class, dec.mode_class)),
                           "best": _decision_name(best), "fallback": dec.fallback,
                           "confidence": round(dec.confidence, 3),
                           "picked_correct": r["correct"], "picked_kind": r.get("kind"),
                           "answerable": any(x["correct"] for x in rows),
                           "within_tie": r["utility"] >= best_u - TIE_EPS})
    n = max(len(picked), 1)

    def agg(rs: list[dict[str, Any]]) -> dict[str, float]:
        k = max(len(rs), 1)
        return {"answer_accuracy": sum(r["correct"] for r in rs) / k,
                "declined": sum(bool(r.get("declined")) for r in rs) / k,
                "wrong": sum(r.get("kind", "wrong" if not r["correct"] else "correct") == "wrong"
                             for r in rs) / k,
                "tokens": float(sum(r["tokens"] for r in rs)),
                "cpu_s": float(sum(r["cpu_s"] for r in rs)),
                "wall_s": float(sum(r["wall_s"] for r in rs)),
                "modelled_latency_s": float(sum(r["latency_s"] for r in rs))}

    rt, mx, orc = agg(picked), agg(maxed), agg(best_rows)

    def red(a: dict[str, float], b: dict[str, float], key: str) -> float | None:
        return 1 - a[key] / b[key] if b[key] else None

    per_cat = {}
    for cat in sorted(set(cats)):
        idx = [j for j, c in enumerate(cats) if c == cat]
        r_, m_, o_ = (agg([rs[j] for j in idx]) for rs in (picked, maxed, best_rows))
        per_cat[cat] = {"n": len(idx),
                        "router_accuracy_exact": sum(chosen[j]["picked"] == chosen[j]["best"]
                                                     for j in idx) / len(idx),
                        "router_accuracy_within_tie": sum(chosen[j]["within_tie"]
                                                          for j in idx) / len(idx),
                        "answer_accuracy": {"router": r_["answer_accuracy"],
                                            "always_max": m_["answer_accuracy"],
                                            "oracle": o_["answer_accuracy"]},
                        "tokens": {"router": r_["tokens"], "always_max": m_["tokens"],
                                   "oracle": o_["tokens"]},
                        "cpu_s": {"router": r_["cpu_s"], "always_max": m_["cpu_s"],
                                  "oracle": o_["cpu_s"]}}
    return {"n_test": len(picked), "router_accuracy_exact": exact / n,
            "router_accuracy_equivalent": equiv / n, "router_accuracy_within_tie": near / n,
            # where no decision gives a correct answer the "best" is merely the cheapest
            # wrong one; the accuracy on the queries some decision does answer:
            "n_answerable": answerable,
            "router_accuracy_exact_answerable": ans_exact / max(answerable, 1),
            "router_accuracy_within_tie_answerable": ans_near / max(answerable, 1),
            "tie_eps": TIE_EPS, "fallbacks": fallbacks,
            "router": rt, "always_max": mx, "oracle_best": orc,
            "token_reduction": red(rt, mx, "tokens"), "cpu_reduction": red(rt, mx, "cpu_s"),
            "wall_reduction": red(rt, mx, "wall_s"),
            "oracle_token_reduction": red(orc, mx, "tokens"),
            "oracle_cpu_reduction": red(orc, mx, "cpu_s"),
            "oracle_wall_reduction": red(orc, mx, "wall_s"),
            "by_category": per_cat, "decisions": chosen}


def _quantiles(xs: Sequence[float]) -> dict[str, float] | None:
    if not xs:
        return None
    v = [float(x) for x in xs]
    return {"n": len(v), "min": min(v), "p10": pct(v, 10), "p50": pct(v, 50),
            "p90": pct(v, 90), "max": max(v)}


def similarity_profile(items: list[Query], obs: list[dict[str, Any]]) -> dict[str, Any]:
    """The real similarity distributions per category (what the curriculum is calibrated to)."""
    out: dict[str, Any] = {}
    for cat in sorted({q.category for q in items}):
        idx = [i for i, q in enumerate(items) if q.category == cat]
        st = [obs[i]["stats"] for i in idx]
        out[cat] = {
            "top_sim": _quantiles([float(s["top_sim"] or 0) for s in st]),
            "best_trusted_sim": _quantiles([float(s["best_trusted_sim"] or 0) for s in st]),
            "n_hits": _quantiles([float(s["n_hits"] or 0) for s in st]),
            "trusted_hit_found": sum(obs[i]["trusted_hit_sim"] is not None for i in idx),
            "trusted_hit_correct": sum(obs[i]["trusted_hit_correct"] for i in idx)}
    # a trusted fact that is NOT the answer: the best trusted similarity on queries whose
    # trusted hit (if any) is wrong or that are not taught-fact questions at all
    wrong = [float(o["stats"]["best_trusted_sim"] or 0) for q, o in zip(items, obs)
             if not o["trusted_hit_correct"]]
    right = [float(o["stats"]["best_trusted_sim"] or 0) for q, o in zip(items, obs)
             if o["trusted_hit_correct"]]
    out["trusted_sim_when_trusted_answer_right"] = _quantiles(right)
    out["trusted_sim_when_no_right_trusted_answer"] = _quantiles(wrong)
    return out


# --------------------------------------------------------------------------
# the printout, and the figures of sections skipped this time


def print_latency(lat: dict[str, Any], size: dict[str, Any]) -> None:
    print(f"decision latency incl. features: p50 {lat['decide_with_features_us']['p50']:.1f} us "
          f"(goal <= 50), p90 {lat['decide_with_features_us']['p90']:.1f} us; features p50 "
          f"{lat['features_us']['p50']:.1f} us; decide only p50 {lat['decide_only_us']['p50']:.1f}"
          f" us; numpy reference p50 {lat['numpy_reference_us']['p50']:.1f} us "
          f"(x{lat['speedup_vs_numpy_reference']:.1f})")
    print(f"model size {size['model_bytes']} B (goal <= 16384); full state file "
          f"{size['state_file_bytes']} B")


def print_pipeline(pr: dict[str, Any]) -> None:
    def line(name: str, r: dict[str, Any]) -> None:
        print(f"  {name} [{r['split']}, n={r['n_test']}]: router accuracy exact "
              f"{r['router_accuracy_exact']:.3f}, equivalent {r['router_accuracy_equivalent']:.3f}"
              f", within tie {r['router_accuracy_within_tie']:.3f} (goal >= 0.90); answer "
              f"accuracy router {r['router']['answer_accuracy']:.3f} (wrong "
              f"{r['router']['wrong']:.3f}, declined {r['router']['declined']:.3f}) vs always-max "
              f"{r['always_max']['answer_accuracy']:.3f}, oracle "
              f"{r['oracle_best']['answer_accuracy']:.3f}; tokens "
              f"-{100 * (r['token_reduction'] or 0):.0f}% (oracle "
              f"-{100 * (r['oracle_token_reduction'] or 0):.0f}%), CPU s "
              f"-{100 * (r['cpu_reduction'] or 0):.0f}% vs always-max (goal >= 50%)")
    for split in ("dev", "heldout"):
        line(f"initial_policy", pr["initial_policy"][split])
    line("after_training", pr["after_training"])
    sm = pr["after_training_seeds"]
    print(f"  after_training over {sm['seeds']} seeds [{sm['split']}]: exact median "
          f"{sm['router_accuracy_exact_median']:.3f} (range "
          f"{sm['router_accuracy_exact_range'][0]:.3f}-{sm['router_accuracy_exact_range'][1]:.3f})"
          f", within tie median {sm['router_accuracy_within_tie_median']:.3f}; tokens "
          f"-{100 * sm['token_reduction_median']:.0f}%, CPU s -{100 * sm['cpu_reduction_median']:.0f}%")


def carry_over(res: dict[str, Any], out: Path, keys: Sequence[str]) -> None:
    """Sections skipped this time keep their last figures (and say from when)."""
    if not out.exists():
        return
    old = json.loads(out.read_text())
    for key in keys:
        if key not in res and key in old:
            res[key] = old[key]
            res.setdefault("carried_over", []).append(f"{key} from {old.get('started_at')}")
