"""The first-start router: a small synthetic curriculum of hand-written rules, trained in.

Why: a router whose weights are random would make random decisions for weeks.
Instead the first router is trained, deterministically (seeded), on a small
synthetic curriculum of hand-written rules ("a taught fact matches closely ->
answer from memory", "nothing related -> no context", "chat -> short,
warmer"), with thresholds calibrated to similarities measured with the real
embedder (see ``curriculum_target``). This is the prior; real outcomes then
move it through the same trainer.

It lives in ``learning/`` because it is training: ``router/`` holds the model
and its decisions and never imports ``learning/``. The composition root calls
``initial_router`` when no usable router file exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import LearningConfig, RouterConfig
from ..router import fastgrnn as fg
from ..router.features import (TRUSTED_CLOSE_SIM, TRUSTED_TOP_MARGIN, FeatureInputs,
                               build_features, question_type)
from ..router.policy import LONG, MEMORY, SHORT, Router
from ..router.state import TrainState
from . import trainer
from .utility import ReplaySample

log = logging.getLogger(__name__)

#
# The thresholds below are calibrated to similarities measured with the real
# int8 MiniLM embedder through the real retrieval (benchmarks/bench_router.py,
# "similarity_profile" in benchmarks/results/bench_router.json), not to which
# decision won there:
# - a fact the user taught against a differently worded question about it:
#   0.69-0.91 (median 0.82) for the trusted fact (a correction is embedded
#   with its question, so it scores like a memory.add fact);
# - the best trusted fact for a question it does NOT answer (documents on
#   related subjects share words like "ISO" and "code"): at most ~0.71;
# - a question against the document that answers it: 0.63-0.80;
# - chat, general knowledge and writing requests against an unrelated memory:
#   0.04-0.38.

# Answer straight from a trusted fact only when it matches this well and is
# (about) the best match - within the margin prompt packing uses, 0.1: a
# clearly better-matching document means the fact is a neighbour, not the
# answer. Between the pipeline's own floor (0.55) and this, the router
# generates with the fact in the prompt, which is safe either way. The same
# test is the r_trusted_close feature, so the rule is one feature away.
MEMORY_MIN_SIM = TRUSTED_CLOSE_SIM          # 0.75
MEMORY_TOP_MARGIN = TRUSTED_TOP_MARGIN      # 0.1
# Below this the best record is unrelated: no context (it would only cost
# prompt tokens and distract a small model).
CONTEXT_MIN_SIM = 0.45
# At or above this one close record answers: k = 2 (prompt packing drops the
# near misses anyway). Between the two, a weaker match: k = 4.
CONTEXT_CLOSE_SIM = 0.6
LONG_TYPES = ("how", "why", "code", "compose")

_TOPICS = ("the wifi password", "photosynthesis", "the garage door code", "my dentist appointment",
           "the Eiffel tower", "TCP", "a raspberry pi", "the lab printer", "quantum computing",
           "the meeting notes", "the backup drive", "my sister's birthday", "the tax deadline",
           "solar panels", "the project budget", "the train schedule")
_ACTIONS = ("reset the router", "bake bread", "sort a list", "back up my files",
            "water the plants", "renew my passport", "set up ssh", "clean the filter")
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "what": ("What is {t}?", "What does {t} mean?", "Which one is {t}?", "Explain {t}"),
    "who": ("Who installed {t}?", "Who is responsible for {t}?"),
    "when": ("When is {t}?", "Where is {t}?", "What year was {t} introduced?"),
    "how": ("How do I {a}?", "How does {t} work?", "How much does {t} cost?"),
    "why": ("Why is {t} important?", "Why does {t} keep failing?"),
    "yes_no": ("Is {t} safe?", "Can I {a} today?", "Does {t} need a reboot?"),
    "code": ("Write a python function to {a}", "Fix this code: def f(x): return x +",
             "sql query for {t}"),
    "math": ("What is 17 * 23?", "Solve 2x + 3 = 11", "calculate 15 percent of 80"),
    "chat": ("hi", "hello there", "thanks!", "good morning", "how are you"),
    "compose": ("Write a paragraph about {t}", "Write a short story about {t}",
                "Draft an email about {t}", "Write a few sentences about {t}",
                "Summarise the notes on {t}"),
    "other": ("{t}", "remind me about {t}", "notes on {t} please"),
}


def curriculum_target(inp: FeatureInputs) -> tuple[int, int, float, float]:
    """The hand-written prior policy: (context class, mode class, temperature, top_p).

    1. A trusted fact matches closely and is the best match -> answer from memory.
    2. Chat -> no context, short and warmer.
    3. Context by the best similarity: unrelated -> 0, close -> 2, weaker -> 4 nodes.
    4. Under pressure (memory, queue, tight latency budget) -> at most 2 nodes, short.
    5. Long answers for how/why/code/compose requests or long queries, unless the
       request caps max_tokens at the short budget or less.
    """
    r = inp.retrieval
    qt = question_type(inp.query)
    n_hits = int(r.get("n_hits", 0) or 0)
    top = float(r.get("top_sim", 0.0) or 0.0)
    trusted = float(r.get("best_trusted_sim", 0.0) or 0.0)
    tight = (inp.memory_pressure >= 0.85 or inp.queue_len >= 4
             or (inp.latency_budget_ms is not None and inp.latency_budget_ms < 1500))
    if trusted >= MEMORY_MIN_SIM and trusted >= top - MEMORY_TOP_MARGIN:
        return 1, MEMORY, 0.2, 0.9
    if qt == "chat":
        return 0, SHORT, 0.8, 0.95
    if n_hits == 0 or top < CONTEXT_MIN_SIM:
        ctx = 0
    elif top >= CONTEXT_CLOSE_SIM:
        ctx = 1
    else:
        ctx = 2
    if tight:
        ctx = min(ctx, 1)
    long = qt in LONG_TYPES or inp.query_tokens > 64
    if tight or (inp.max_tokens is not None and inp.max_tokens <= 64):
        long = False
    temp = {"code": 0.2, "math": 0.1, "how": 0.4, "why": 0.5, "compose": 0.7,
            "other": 0.6}.get(qt, 0.3)
    top_p = 0.8 if qt in ("code", "math") else 0.9
    return ctx, LONG if long else SHORT, temp, top_p


_QTYPES = tuple(_TEMPLATES)
_KIND_NAMES = ("query", "qa_pair", "fact", "document", "concept")


def _pick(rng: np.random.Generator, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def synthetic_inputs(rng: np.random.Generator) -> FeatureInputs:
    """One plausible request, drawn to cover every branch of ``curriculum_target``.

    Shaped like the real retrieval statistics: a non-empty memory returns its
    full k hits (n_hits is k unless the memory is small); the best similarity is
    spread over the whole range so every threshold is learned; when the memory
    holds trusted facts the best of them is often the top hit itself, otherwise
    some way below it.
    """
    u = rng.random(12)  # (12,) uniforms for the coin flips below
    q = _pick(rng, _TEMPLATES[_pick(rng, _QTYPES)]).format(t=_pick(rng, _TOPICS),
                                                          a=_pick(rng, _ACTIONS))
    tokens = int(len(q.split()) * 1.3) + 1 if u[0] >= 0.05 else 65 + int(u[1] * 335)
    vec = rng.standard_normal(384).astype(np.float32)
    vec /= np.linalg.norm(vec)
    retrieval: dict[str, Any] = {}
    if u[2] >= 0.1:
        n = 16 if u[9] < 0.7 else int(rng.integers(1, 17))
        top = 0.02 + 0.96 * float(u[3])
        share = rng.dirichlet(np.ones(5)) * n
        kinds = {k: int(round(float(c))) for k, c in zip(_KIND_NAMES, share)}
        trusted = 0.0
        if u[4] < 0.6:  # the memory holds trusted facts
            gap = 0.0 if u[5] < 0.5 else 0.3 * float(rng.random())
            trusted = max(top - gap, 0.0)
            kinds["fact"] = max(1, kinds["fact"])
        mean = max(0.0, top - 0.4 * float(u[6]))
        retrieval = {"n_hits": n, "top_sim": top, "mean_sim": mean,
                     "sim_std": 0.15 * float(u[7]), "hits_by_kind": kinds,
                     "best_trusted_sim": trusted, "graph_density": float(u[8]),
                     "n_expanded": int(rng.integers(0, 21))}
    v = rng.random(8)
    return FeatureInputs(
        query=q, query_tokens=tokens, query_vec=vec, retrieval=retrieval, turn_index=0,
        memory_pressure=0.85 + 0.15 * float(v[0]) if v[1] < 0.1 else float(rng.beta(2, 5)),
        queue_len=1 + int(v[2] * 8) if v[3] < 0.1 else 0,
        model_loaded=bool(u[10] < 0.9),
        latency_budget_ms=float(10 ** (2.3 + 2.0 * float(v[4]))) if v[5] < 0.3 else None,
        max_tokens=(16, 32, 64, 128, 256, 512)[int(v[6] * 6)] if v[7] < 0.3 else None,
        recent_quality=0.3 + 0.7 * float(u[11]))


def curriculum_samples(rng: np.random.Generator, n_sessions: int,
                       max_turns: int = 4) -> list[ReplaySample]:
    """Labelled synthetic sessions of 1..max_turns turns for the first-start policy."""
    out: list[ReplaySample] = []
    for s in range(n_sessions):
        for t in range(int(rng.integers(1, max_turns + 1))):
            inp = synthetic_inputs(rng)
            inp = dataclasses.replace(inp, turn_index=t)
            c, m, temp, top_p = curriculum_target(inp)
            out.append(ReplaySample(
                request_id=f"cur-{s}-{t}", features=build_features(inp), context_class=c,
                mode_class=m, temperature=temp, top_p=top_p, session_id=f"cur-{s}",
                turn_index=t, target_context=c, target_mode=m, target_temperature=temp,
                target_top_p=top_p, label_source="curriculum", created_at=float(t)))
    return out


N_SESSIONS = 3000   # synthetic sessions in the first-start curriculum
STEPS = 3000        # optimiser steps over them (a third dense, then hard-thresholded)
_INITIAL_CACHE: dict[tuple[Any, ...], TrainState] = {}


def initial_state(layout: fg.Layout, cfg: trainer.TrainConfig, seed: int,
                  n_sessions: int = N_SESSIONS, steps: int = STEPS) -> TrainState:
    """Train the first-start router on the curriculum: dense first, then hard-thresholded.

    Deterministic for a given (layout, sparsity, seed, ...), so the result is
    memoised per process (a copy is returned each time).
    """
    key = (layout, cfg.sparsity, cfg.max_seq_len, cfg.reg_weight, seed, n_sessions, steps)
    if key in _INITIAL_CACHE:
        return _INITIAL_CACHE[key].copy()
    rng = np.random.default_rng(seed)
    theta = fg.init_params(layout, rng, cfg.sparsity)
    state = TrainState.fresh(theta)
    seqs = trainer.build_sequences(curriculum_samples(rng, n_sessions), cfg.max_seq_len)
    fit_cfg = trainer.TrainConfig(**{**cfg.__dict__, "learning_rate": 0.01, "batch_size": 32,
                                     "ewc_lambda": 0.0})
    trainer.fit(state, layout, seqs, fit_cfg, rng, steps, dense_steps=steps // 3)
    # The prior is not protected by EWC: real outcomes should be free to overrule it.
    state.m[:] = 0.0
    state.v[:] = 0.0
    state.t = 0
    state.anchor = state.theta.copy()
    _INITIAL_CACHE[key] = state.copy()
    return state


# Every module whose code decides the trained first-start weights or their file:
# an edit to any of them changes ``initial_key``, so a stale installed router is
# never used (the daemon trains its own instead).
_KEY_SOURCES = ("learning/curriculum.py", "learning/trainer.py", "learning/utility.py",
                "router/fastgrnn.py", "router/features.py", "router/state.py",
                "router/policy.py")


def initial_key(cfg: RouterConfig, learning: LearningConfig) -> str:
    """Hash of everything the first-start router depends on: its installed file's key.

    Why a hash and not the config's name: any config (or curriculum code) that
    would train different weights gets a different key, so ``ruvllm-edge warm``
    can precompute the default config's router and a custom config still trains
    its own on first start instead of loading one that does not match.
    """
    h = hashlib.sha256()
    train_cfg = trainer.TrainConfig.from_configs(cfg, learning)
    h.update(repr((Router.layout_for(cfg), cfg.sparsity, cfg.init_seed, sorted(
        dataclasses.asdict(train_cfg).items()), N_SESSIONS, STEPS, np.__version__)).encode())
    root = Path(__file__).resolve().parent.parent
    for rel in _KEY_SOURCES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:20]


def initial_router(cfg: RouterConfig, learning: LearningConfig) -> Router:
    """The first-start router (version 0) for this config: the curriculum, trained in."""
    layout = Router.layout_for(cfg)
    t0 = time.monotonic()
    state = initial_state(layout, trainer.TrainConfig.from_configs(cfg, learning), cfg.init_seed)
    log.info("router initialised from the curriculum",
             extra={"duration_s": round(time.monotonic() - t0, 3)})
    return Router(layout, state, cfg, version=0)
