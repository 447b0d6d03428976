"""Counterfactual exploration: in idle time, answer past queries again under other decisions.

The logged decision tells us how one choice turned out; it cannot tell us
whether fewer memory nodes, a shorter budget or answering from memory would
have done as well for less. The device is idle most of the time, so it can
afford to find out: for a past query, try a small grid of alternative
decisions through the real pipeline (``answer_with``), score each answer with
the judge, compute the honest utility (``utility.honest_utility``: a correct
answer > an honest decline > a wrong answer; a memory-mode reply that does not
answer pays a risk cost) minus latency and token costs, and label the sample
with the best decision. Those labels are what the router trains on.
See docs/learning.md for the why and the safety rules.

Pure orchestration over callbacks: no storage here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from ..router.policy import CONTEXT_CLASSES, LONG, MEMORY, SHORT, Decision, Router
from .utility import ReplaySample, answerable, honest_utility, is_decline, outcome_kind

log = logging.getLogger(__name__)

EXPLORE_TEMPERATURE = 0.2
EXPLORE_TOP_P = 0.9
ALT_TEMPERATURE = 0.8
ALT_TOP_P = 0.95
# Utilities closer than this count as a tie, and the cheaper decision wins:
# the judge is noisy and a cheaper decision that is as good is the better one.
TIE_EPS = 0.02


@dataclass(frozen=True)
class Outcome:
    """What the pipeline produced for one query under one decision."""

    text: str
    completion_tokens: int
    latency_s: float
    finish_reason: str = ""   # "declined" marks an honest decline; "" when not reported


AnswerWith = Callable[[str, Decision], Outcome]
Judge = Callable[[str, str, "str | None"], float]   # (question, answer, reference) -> 0..1


@dataclass(frozen=True)
class Candidate:
    context_class: int
    mode_class: int
    temperature: float = EXPLORE_TEMPERATURE
    top_p: float = EXPLORE_TOP_P

    def cost_rank(self) -> tuple[int, int, float]:
        """Nominally cheaper first (the order the grid is tried in): memory < short < long,
        then fewer context nodes."""
        mode_cost = {MEMORY: 0, SHORT: 1, LONG: 2}[self.mode_class]
        return (mode_cost, self.context_class, self.temperature)

    def tie_rank(self) -> tuple[int, int, float]:
        """Among outcomes that are equally good *and* cost the same, the simpler decision:
        fewer nodes, then short < long < memory (memory mode that found no trusted memory
        fell back to generating, so it must not take the credit), then cooler."""
        mode_pref = {SHORT: 0, LONG: 1, MEMORY: 2}[self.mode_class]
        return (self.context_class, mode_pref, self.temperature)


@dataclass
class ExploreResult:
    request_id: str
    outcomes: list[dict[str, Any]]
    best: Candidate
    best_utility: float
    sample: ReplaySample        # labelled with the best decision (unlabelled if stopped)
    stopped: bool = False
    # Some decision answered correctly (judge >= CORRECT_QUALITY). False: the question is
    # unanswerable here, and the label is the honest decline or the cheapest attempt.
    answerable: bool | None = None


def candidate_grid(max_candidates: int, logged: Candidate | None = None) -> list[Candidate]:
    """Memory mode once (k is irrelevant there), then every k with short and long; cheapest first.

    The logged decision is always included so its outcome is re-measured under
    the same conditions as the alternatives.
    """
    grid = [Candidate(1, MEMORY)]
    for c in range(len(CONTEXT_CLASSES)):
        grid += [Candidate(c, SHORT), Candidate(c, LONG)]
    grid.sort(key=Candidate.cost_rank)
    if logged is not None:
        key = (logged.context_class, logged.mode_class)
        grid = [g for g in grid if (g.context_class, g.mode_class) != key]
        grid.insert(0, Candidate(logged.context_class, logged.mode_class))
    return grid[:max(1, max_candidates - 1)]  # one slot is kept for the temperature probe


def pick_best(scored: Sequence[tuple[Candidate, float, float]]) -> tuple[Candidate, float]:
    """(candidate, utility, cost) -> the best candidate and its utility.

    Highest utility; within TIE_EPS of it, the one whose *measured* cost
    (lambda * latency + mu * tokens) was lowest, then the simplest (tie_rank).
    """
    assert scored
    top = max(u for _, u, _ in scored)
    near = [(c, u, cost) for c, u, cost in scored if u >= top - TIE_EPS]
    best = min(near, key=lambda t: (round(t[2], 9), t[0].tie_rank()))
    return best[0], best[1]


def explore_one(sample: ReplaySample, query: str, reference: str | None, router: Router,
                answer_with: AnswerWith, judge: Judge, *, max_tokens: int, max_candidates: int,
                latency_weight_per_s: float, cost_weight_per_token: float,
                should_stop: Callable[[], bool] = lambda: False) -> ExploreResult:
    """Try the grid on one past query and return the outcomes and the best decision."""
    logged = Candidate(sample.context_class, sample.mode_class)
    scored: list[tuple[Candidate, float, float]] = []
    outcomes: list[dict[str, Any]] = []

    def run(c: Candidate) -> tuple[Candidate, float, float]:
        dec = router.decision_for(c.context_class, c.mode_class, c.temperature, c.top_p,
                                  max_tokens)
        t0 = time.monotonic()
        out = answer_with(query, dec)
        latency = out.latency_s if out.latency_s > 0 else time.monotonic() - t0
        q = min(max(float(judge(query, out.text, reference)), 0.0), 1.0)
        declined = is_decline(out.text, out.finish_reason)
        # Memory mode that returned a stored record (nothing generated) answers with the
        # confidence of a trusted fact: if it does not answer, it pays the risk cost.
        from_memory = c.mode_class == MEMORY and out.completion_tokens == 0
        u = honest_utility(q, latency, out.completion_tokens, latency_weight_per_s,
                           cost_weight_per_token, declined=declined, from_memory=from_memory)
        cost = latency_weight_per_s * latency + cost_weight_per_token * out.completion_tokens
        outcomes.append({"context_class": c.context_class, "mode_class": c.mode_class,
                         "temperature": c.temperature, "top_p": c.top_p, "quality": q,
                         "latency_s": latency, "completion_tokens": out.completion_tokens,
                         "utility": u, "kind": outcome_kind(q, declined)})
        return c, u, cost

    stopped = False
    for c in candidate_grid(max_candidates, logged):
        if should_stop():
            stopped = True
            break
        scored.append(run(c))
    if not stopped and scored and should_stop():
        stopped = True
    if scored and not stopped:
        best, _ = pick_best(scored)
        if best.mode_class != MEMORY:  # the temperature probe: does a warmer answer do better?
            alt = Candidate(best.context_class, best.mode_class, ALT_TEMPERATURE, ALT_TOP_P)
            if should_stop():
                stopped = True
            else:
                scored.append(run(alt))
    if not scored:
        return ExploreResult(sample.request_id, [], logged, float("nan"), sample, stopped=True)
    best, best_u = pick_best(scored)
    if stopped:  # a partial grid proves nothing: keep the outcomes, do not label
        return ExploreResult(sample.request_id, outcomes, best, best_u, sample, stopped=True)
    can = answerable([o["quality"] for o in outcomes], [o["kind"] == "declined" for o in outcomes])
    labelled = replace(sample, target_context=best.context_class, target_mode=best.mode_class,
                       target_temperature=best.temperature, target_top_p=best.top_p,
                       label_source="explored")
    log.info("explored a past query", extra={
        "request_id": sample.request_id, "tried": len(outcomes), "stopped": stopped,
        "best_context_k": CONTEXT_CLASSES[best.context_class], "best_mode": best.mode_class,
        "best_utility": round(best_u, 4), "answerable": can})
    return ExploreResult(sample.request_id, outcomes, best, best_u, labelled, stopped, can)
