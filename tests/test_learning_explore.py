"""Counterfactual exploration: the grid, tie-breaking, labelling, pre-emption, real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.config import RouterConfig
from ruvllm_edge.learning import explore as E
from ruvllm_edge.learning.judge import judge_answer
from ruvllm_edge.learning.utility import ReplaySample
from ruvllm_edge.router import fastgrnn as fg
from ruvllm_edge.router.features import N_FEATURES
from ruvllm_edge.router.policy import CONTEXT_CLASSES, LONG, MEMORY, SHORT, Decision, Router
from ruvllm_edge.router.state import TrainState

MODEL = Path(__file__).resolve().parent.parent / "models" / "smollm2-135m-instruct-q4_1.gguf"


@pytest.fixture(scope="module")
def router() -> Router:
    """Exploration only uses decision_for(); an untrained router is enough."""
    cfg = RouterConfig()
    layout = Router.layout_for(cfg)
    state = TrainState.fresh(fg.init_params(layout, np.random.default_rng(0), cfg.sparsity))
    return Router(layout, state, cfg)


def _sample(ctx: int = 4, mode: int = LONG) -> ReplaySample:
    return ReplaySample(request_id="r1", features=np.zeros(N_FEATURES, np.float32),
                        context_class=ctx, mode_class=mode, temperature=0.7, top_p=0.9)


def test_grid_is_cheapest_first_with_the_logged_decision_first() -> None:
    grid = E.candidate_grid(64)
    assert len(grid) == 11  # memory once + 5 k x {short, long}
    assert grid[0].mode_class == MEMORY
    assert [g.cost_rank() for g in grid] == sorted(g.cost_rank() for g in grid)
    logged = E.Candidate(3, LONG)
    g2 = E.candidate_grid(6, logged)
    assert (g2[0].context_class, g2[0].mode_class) == (3, LONG) and len(g2) == 5
    assert len({(c.context_class, c.mode_class) for c in g2}) == 5


def test_pick_best_prefers_cheaper_within_the_tie_margin() -> None:
    cheap, dear = E.Candidate(0, SHORT), E.Candidate(4, LONG)
    assert E.pick_best([(dear, 0.80, 0.20), (cheap, 0.79, 0.05)])[0] == cheap
    assert E.pick_best([(dear, 0.90, 0.20), (cheap, 0.70, 0.05)])[0] == dear
    # measured cost decides before nominal cheapness
    assert E.pick_best([(dear, 0.80, 0.01), (cheap, 0.79, 0.05)])[0] == dear


def test_memory_mode_that_fell_back_does_not_take_the_credit() -> None:
    mem, short = E.Candidate(1, MEMORY), E.Candidate(1, SHORT)
    # same answer and cost: memory mode found no trusted memory and generated short
    assert E.pick_best([(mem, 0.9, 0.05), (short, 0.9, 0.05)])[0] == short
    # a real answer from memory costs nothing, and wins
    assert E.pick_best([(mem, 0.95, 0.0), (short, 0.9, 0.05)])[0] == mem


def _world(best_k: int) -> tuple[E.AnswerWith, E.Judge, list[Decision]]:
    """Answers are right only with at least best_k memory nodes; long costs more tokens."""
    seen: list[Decision] = []

    def answer_with(query: str, d: Decision) -> E.Outcome:
        seen.append(d)
        ok = d.mode != "memory" and d.context_k >= best_k
        tokens = 0 if d.mode == "memory" else (20 if d.mode == "short" else 120)
        return E.Outcome("the answer is 4417" if ok else "no idea", tokens, 0.1 + tokens / 100)

    def judge(q: str, a: str, ref: str | None) -> float:
        return 1.0 if "4417" in a else 0.0
    return answer_with, judge, seen


def test_explore_labels_the_best_decision(router: Router) -> None:
    answer_with, judge, seen = _world(best_k=4)
    res = E.explore_one(_sample(), "garage code?", None, router, answer_with, judge,
                        max_tokens=256, max_candidates=12, latency_weight_per_s=0.05,
                        cost_weight_per_token=0.001)
    assert not res.stopped and len(res.outcomes) == 12  # 11 grid + one temperature probe
    assert (res.best.context_class, res.best.mode_class) == (CONTEXT_CLASSES.index(4), SHORT)
    s = res.sample
    assert s.labelled and s.label_source == "explored"
    assert (s.target_context, s.target_mode) == (2, SHORT)
    assert s.target_temperature in (E.EXPLORE_TEMPERATURE, E.ALT_TEMPERATURE)
    assert {d.max_tokens for d in seen if d.mode == "short"} == {RouterConfig().short_max_tokens}
    best_u = max(o["utility"] for o in res.outcomes)
    assert res.best_utility >= best_u - E.TIE_EPS


def test_preemption_discards_the_partial_grid(router: Router) -> None:
    answer_with, judge, seen = _world(best_k=0)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    res = E.explore_one(_sample(), "q", None, router, answer_with, judge, max_tokens=256,
                        max_candidates=12, latency_weight_per_s=0.05,
                        cost_weight_per_token=0.001, should_stop=stop)
    assert res.stopped and len(seen) == 3
    assert not res.sample.labelled


@pytest.mark.slow
def test_explore_with_the_real_model(router: Router) -> None:
    """The fake world above stands in for this: real generations, real judge, small budget."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(MODEL), n_ctx=1024, n_threads=1, verbose=False, seed=3)
    notes = ["The garage door code is 4417.", "The wifi password is maple-river-82.",
             "The bins go out on Tuesday.", "The cat is called Miso."] * 4

    def generate(messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                         temperature=temperature)
        return out["choices"][0]["message"]["content"] or ""

    def answer_with(query: str, d: Decision) -> E.Outcome:
        ctx = "\n".join(notes[:d.context_k])
        user = f"Notes:\n{ctx}\n\nQuestion: {query}" if ctx else query
        out = llm.create_chat_completion(messages=[{"role": "user", "content": user}],
                                         max_tokens=min(d.max_tokens, 16),
                                         temperature=d.temperature, top_p=d.top_p)
        return E.Outcome(out["choices"][0]["message"]["content"] or "",
                         out["usage"]["completion_tokens"], 0.0)

    def judge(q: str, a: str, ref: str | None) -> float:
        return judge_answer(generate, q, a, ref)

    res = E.explore_one(_sample(), "What is the garage door code?", "The garage code is 4417.",
                        router, answer_with, judge, max_tokens=256, max_candidates=4,
                        latency_weight_per_s=0.05, cost_weight_per_token=0.001)
    assert len(res.outcomes) >= 3 and res.sample.labelled
    assert all(0.0 <= o["quality"] <= 1.0 for o in res.outcomes)
    k0 = [o for o in res.outcomes if o["context_class"] == 0 and o["mode_class"] != MEMORY]
    with_notes = [o for o in res.outcomes if o["context_class"] > 0 and o["mode_class"] != MEMORY]
    # without the note the model cannot know the code; with it, it can
    assert max(o["quality"] for o in with_notes) >= max(o["quality"] for o in k0)


def _unanswerable_world(decline_at_k: int | None) -> tuple[E.AnswerWith, E.Judge]:
    """Nothing answers: memory mode returns an unrelated stored fact (free), generating
    gives a wrong attempt; optionally the answer path declines from k >= decline_at_k."""
    def answer_with(query: str, d: Decision) -> E.Outcome:
        if d.mode == "memory":
            return E.Outcome("The ISO 4217 code of the Euro is EUR.", 0, 0.0)
        if decline_at_k is not None and d.context_k >= decline_at_k:
            return E.Outcome("I don't have that in my notes.", 0, 0.05, "declined")
        tokens = 12 if d.mode == "short" else 60
        return E.Outcome("It is probably 12.", tokens, 0.1 + tokens / 100)

    def judge(q: str, a: str, ref: str | None) -> float:
        return 0.0
    return answer_with, judge


def test_unrelated_memory_reply_is_never_the_label(router: Router) -> None:
    """Under the old utility the free, unrelated memory reply was labelled best."""
    answer_with, judge = _unanswerable_world(None)
    res = E.explore_one(_sample(), "How many subdivisions has Peru?", None, router,
                        answer_with, judge, max_tokens=128, max_candidates=12,
                        latency_weight_per_s=0.05, cost_weight_per_token=0.001)
    assert res.best.mode_class != MEMORY
    assert (res.best.context_class, res.best.mode_class) == (0, SHORT)  # the cheapest attempt
    assert res.answerable is False
    assert {o["kind"] for o in res.outcomes} == {"wrong"}


def test_an_honest_decline_beats_a_wrong_attempt(router: Router) -> None:
    answer_with, judge = _unanswerable_world(decline_at_k=2)
    res = E.explore_one(_sample(), "What is my sister's name?", None, router,
                        answer_with, judge, max_tokens=128, max_candidates=12,
                        latency_weight_per_s=0.05, cost_weight_per_token=0.001)
    assert CONTEXT_CLASSES[res.best.context_class] >= 2 and res.best.mode_class != MEMORY
    assert "declined" in {o["kind"] for o in res.outcomes}
    assert res.answerable is False
