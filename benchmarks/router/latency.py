"""Router decision latency and model size: the production path against the numpy reference."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from _common import pct
from ruvllm_edge.learning import curriculum as C
from ruvllm_edge.router import fastgrnn as fg
from ruvllm_edge.router import features as fe
from ruvllm_edge.router import policy as P


def bench_latency(router: P.Router, n: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    inputs = [C.synthetic_inputs(rng) for _ in range(256)]
    defaults = {"max_tokens": 256, "temperature": 0.7, "top_p": 0.9}
    h = router.initial_hidden()
    for inp in inputs[:32]:  # warm-up (numba dispatch, caches)
        router.decide(fe.build_features(inp), h, defaults)

    def timed(fn: Callable[[Any], Any], reps: int) -> list[float]:
        out = []
        for i in range(reps):
            inp = inputs[i % len(inputs)]
            t0 = time.perf_counter_ns()
            fn(inp)
            out.append((time.perf_counter_ns() - t0) / 1000.0)
        return out

    full = timed(lambda inp: router.decide(fe.build_features(inp), h, defaults), n)
    feats = timed(lambda inp: fe.build_features(inp), n)
    xs = [fe.build_features(inp) for inp in inputs]
    dec = []
    for i in range(n):
        x = xs[i % len(xs)]
        t0 = time.perf_counter_ns()
        router.decide(x, h, defaults)
        dec.append((time.perf_counter_ns() - t0) / 1000.0)
    theta = router.state.theta
    ref_n = max(200, n // 10)
    ref = timed(lambda inp: fg.step_ref(theta, router.layout, fe.build_features_ref(inp), h),
                ref_n)
    return {
        "decide_with_features_us": {"p50": pct(full, 50), "p90": pct(full, 90), "n": n},
        "features_us": {"p50": pct(feats, 50), "p90": pct(feats, 90)},
        "decide_only_us": {"p50": pct(dec, 50), "p90": pct(dec, 90)},
        "numpy_reference_us": {"p50": pct(ref, 50), "n": ref_n},
        "speedup_vs_numpy_reference": pct(ref, 50) / pct(full, 50),
        "goal_p50_us": 50.0,
    }


def size_figures(router: P.Router) -> dict[str, Any]:
    """The deployable model (CSR W + float32 rest) and the full training-state file."""
    return {"model_bytes": router.size_bytes(), "state_file_bytes": len(router.state_bytes()),
            "w_nonzeros": int(np.count_nonzero(router.layout.view(router.state.theta, "W"))),
            "parameters": router.layout.size, "goal_model_bytes": 16384}
