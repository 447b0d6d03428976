"""The first-start curriculum: its rules, its coverage, and the router trained on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning import curriculum as C
from ruvllm_edge.router import fastgrnn as fg
from ruvllm_edge.router import policy as P
from ruvllm_edge.router.features import FeatureInputs, build_features

DEFAULTS = {"max_tokens": 256, "temperature": 0.7, "top_p": 0.9}


@pytest.fixture(scope="module")
def router() -> P.Router:
    return C.initial_router(RouterConfig(), LearningConfig())


def _inp(query: str = "What is the wifi password?", **kw: object) -> FeatureInputs:
    v = np.random.default_rng(11).standard_normal(384).astype(np.float32)
    return dataclasses.replace(FeatureInputs(query=query, query_tokens=8,
                                             query_vec=v / np.linalg.norm(v)), **kw)


def test_initial_policy_follows_the_curriculum(router: P.Router) -> None:
    rng = np.random.default_rng(2024)  # inputs the initial training never saw
    agree = 0
    n = 600
    for _ in range(n):
        inp = C.synthetic_inputs(rng)
        out, _ = router.predict(build_features(inp))
        c, m, _, _ = C.curriculum_target(inp)
        agree += int(int(out[10]) == c and int(out[11]) == m)
    assert agree / n >= 0.85


def _ret(top: float, trusted: float = 0.0, n_hits: int = 16, **kw: object) -> dict[str, object]:
    """Retrieval stats shaped like the real ones (a non-empty memory returns its full k)."""
    return {"n_hits": n_hits, "top_sim": top, "mean_sim": max(top - 0.25, 0.0), "sim_std": 0.05,
            "best_trusted_sim": trusted, "hits_by_kind": {"fact": 8, "document": 8}, **kw}


def test_initial_policy_key_rules(router: P.Router) -> None:
    def decide(query: str, retrieval: dict[str, object]) -> P.Decision:
        return router.decide(build_features(_inp(query=query, retrieval=retrieval)), None,
                             DEFAULTS)[0]

    # a taught fact asked in other words (measured 0.69-0.91, median 0.82): from memory,
    # including matches the earlier 0.8 rule missed
    for sim in (0.93, 0.82, 0.79):
        d = decide("Which code does ISO give the Zloty?", _ret(sim, sim))
        assert d.mode == "memory" and not d.fallback, sim
    # a trusted fact that is only a neighbour (a document matches much better): generate
    d = decide("What is the ISO 3166-2 code of Borno?", _ret(0.95, 0.78))
    assert d.mode != "memory" and d.context_k == 2
    # a document answers it, the best trusted fact is unrelated (measured <= 0.71)
    d = decide("How many regions does the profile list?", _ret(0.72, 0.6))
    assert d.mode != "memory" and d.context_k == 2
    # nothing related in memory (measured 0.04-0.38): no context
    d = decide("Why do cats purr?", _ret(0.2, 0.2))
    assert d.context_k == 0 and d.mode == "long"
    d = decide("Why do cats purr?", {})
    assert d.context_k == 0 and d.mode != "memory"
    chat = decide("hello there", _ret(0.15, 0.15))
    assert chat.mode == "short" and chat.context_k == 0
    assert chat.max_tokens == RouterConfig().short_max_tokens
    # a writing request needs the long budget whatever its topic
    d = decide("Write a paragraph about the ocean.", _ret(0.12, 0.1))
    assert d.mode == "long" and d.context_k == 0 and d.max_tokens == DEFAULTS["max_tokens"]
    d = decide("What is the capital of France?", _ret(0.3, 0.3))
    assert d.mode == "short" and d.context_k == 0


@pytest.mark.parametrize("retrieval,query,expected", [
    (_ret(0.76, 0.76), "What is the number?", (1, P.MEMORY)),            # just over the threshold
    (_ret(0.85, 0.76), "What is the number?", (1, P.MEMORY)),            # within the top margin
    (_ret(0.74, 0.74), "What is the number?", (1, P.SHORT)),             # just under: generate, k=2
    (_ret(0.90, 0.78), "What is the number?", (1, P.SHORT)),             # a better match exists
    (_ret(0.59, 0.5), "What is the number?", (2, P.SHORT)),              # weaker match: k=4
    (_ret(0.46, 0.0), "What is the number?", (2, P.SHORT)),
    (_ret(0.44, 0.44), "What is the number?", (0, P.SHORT)),             # unrelated: no context
    ({}, "What is the number?", (0, P.SHORT)),                           # empty memory
    (_ret(0.9, 0.9), "hello there", (1, P.MEMORY)),                    # a taught answer wins
    (_ret(0.7, 0.2), "hello there", (0, P.SHORT)),
    (_ret(0.7, 0.2), "How do I reset the router?", (1, P.LONG)),
    (_ret(0.2, 0.2), "Draft an email about the tax deadline", (0, P.LONG)),
])
def test_curriculum_rules(retrieval: dict[str, object], query: str,
                          expected: tuple[int, int]) -> None:
    c, m, temp, top_p = C.curriculum_target(_inp(query=query, retrieval=retrieval))
    assert (c, m) == expected
    assert 0.0 <= temp <= 2.0 and 0.0 < top_p <= 1.0


def test_curriculum_rules_under_pressure_and_caps() -> None:
    base = _inp(query="How do I reset the router?", retrieval=_ret(0.5, 0.2))
    assert C.curriculum_target(base)[:2] == (2, P.LONG)
    for tight in (dataclasses.replace(base, memory_pressure=0.9),
                  dataclasses.replace(base, queue_len=5),
                  dataclasses.replace(base, latency_budget_ms=800.0)):
        assert C.curriculum_target(tight)[:2] == (1, P.SHORT)
    assert C.curriculum_target(dataclasses.replace(base, max_tokens=64))[:2] == (2, P.SHORT)


def test_synthetic_inputs_cover_every_rule() -> None:
    """The first-start router can only learn the branches its curriculum samples."""
    rng = np.random.default_rng(5)
    seen: dict[tuple[int, int], int] = {}
    n = 4000
    for _ in range(n):
        c, m, _, _ = C.curriculum_target(C.synthetic_inputs(rng))
        seen[(c, m)] = seen.get((c, m), 0) + 1
    for key in [(1, P.MEMORY), (0, P.SHORT), (0, P.LONG), (1, P.SHORT), (1, P.LONG),
                (2, P.SHORT), (2, P.LONG)]:
        assert seen.get(key, 0) >= 0.01 * n, (key, seen)
    assert sum(v for (c, _), v in seen.items() if c > 2) == 0   # k=8/16 are learned, not assumed


def test_initial_policy_is_deterministic_and_sparse(router: P.Router) -> None:
    w = router.layout.view(router.state.theta, "W")
    assert np.count_nonzero(w) <= fg.n_keep(router.layout, RouterConfig().sparsity)
    u = router.layout.view(router.state.theta, "U1") @ router.layout.view(router.state.theta, "U2")
    assert np.linalg.matrix_rank(u) <= RouterConfig().low_rank
    assert router.size_bytes() <= 16 * 1024


def test_initial_router_is_version_0_and_memoised(router: P.Router) -> None:
    again = C.initial_router(RouterConfig(), LearningConfig())
    assert router.version == again.version == 0
    np.testing.assert_array_equal(again.state.theta, router.state.theta)
    again.state.theta[:] = 0.0          # state is a copy: the cached prior is untouched
    np.testing.assert_array_equal(C.initial_router(RouterConfig(), LearningConfig()).state.theta,
                                  router.state.theta)


def test_initial_key_changes_with_what_the_weights_depend_on() -> None:
    """The installed first-start router's key: same config -> same key; a config that
    trains different weights -> another key (so it never loads a mismatched router)."""
    r, lc = RouterConfig(), LearningConfig()
    key = C.initial_key(r, lc)
    assert key == C.initial_key(RouterConfig(), LearningConfig()) and len(key) == 20
    others = {C.initial_key(dataclasses.replace(r, init_seed=r.init_seed + 1), lc),
              C.initial_key(dataclasses.replace(r, hidden_dim=r.hidden_dim + 8), lc),
              C.initial_key(dataclasses.replace(r, sparsity=0.9), lc),
              C.initial_key(r, dataclasses.replace(lc, reg_weight=lc.reg_weight / 2))}
    assert key not in others and len(others) == 4
    # Settings that do not shape the weights keep the key (the file stays usable).
    assert C.initial_key(dataclasses.replace(r, confidence_threshold=0.9), lc) == key


def test_initial_key_covers_the_code_that_trains_it(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: "Path") -> None:
    """An edit to the curriculum's source gives another key (a stale file is not used)."""
    import shutil
    from pathlib import Path

    key = C.initial_key(RouterConfig(), LearningConfig())
    pkg = Path(C.__file__).resolve().parent.parent
    fake = tmp_path / "ruvllm_edge"
    for rel in C._KEY_SOURCES:
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pkg / rel, fake / rel)
    fake_file = fake / "learning" / "curriculum.py"
    monkeypatch.setattr(C, "__file__", str(fake_file))
    assert C.initial_key(RouterConfig(), LearningConfig()) == key
    fake_file.write_text(fake_file.read_text() + "\n# an edit\n")
    assert C.initial_key(RouterConfig(), LearningConfig()) != key
