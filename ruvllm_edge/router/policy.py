"""The decision layer: FastGRNN heads -> a Decision, fallback, first-start policy, persistence.

Confidence is derived, not a separate head: confidence = max p(context) x max
p(mode), the probability the model gives to the joint decision it is about to
take. Why: both class heads are trained with cross-entropy, a proper scoring
rule, so their probabilities are the calibrated quantity we already have; a
separate confidence head would need its own labels ("was this decision the
best?"), which exist only for explored queries, and would be least reliable
exactly when it matters (on unfamiliar inputs). The product is also honest on
first start: a router that has not learned something spreads its probability
and falls back to the config defaults.

First start: a router whose weights are random would make random decisions for
weeks. Instead the first router is trained, deterministically (seeded), on a
small synthetic curriculum of hand-written rules ("a taught fact matches
closely -> answer from memory", "nothing related -> no context", "chat -> short,
warmer"), with thresholds calibrated to similarities measured with the real
embedder (see ``curriculum_target``). This is the prior; real outcomes then
move it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import LearningConfig, RouterConfig
from ..learning import trainer
from ..learning.utility import ReplaySample
from . import fastgrnn as fg
from .features import (FEATURE_NAMES, N_FEATURES, TRUSTED_CLOSE_SIM, TRUSTED_TOP_MARGIN,
                       FeatureInputs, build_features, question_type)

log = logging.getLogger(__name__)

CONTEXT_CLASSES: tuple[int, ...] = (0, 2, 4, 8, 16)
MODES: tuple[str, ...] = ("memory", "short", "long")
MEMORY, SHORT, LONG = 0, 1, 2
FILE_FORMAT = 1
MODEL_MAGIC = b"RVRT"
_FEATURES_HASH = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    """How to answer one request (``to_info`` goes into the reply's routing_info).

    ``max_tokens`` in memory mode is the budget to use if the pipeline finds no
    trusted memory to answer from after all (it then generates short).
    """

    context_k: int
    mode: str
    max_tokens: int
    temperature: float
    top_p: float
    confidence: float
    fallback: bool
    context_class: int
    mode_class: int
    router_version: int = 0

    def to_info(self) -> dict[str, Any]:
        return {"context_k": self.context_k, "mode": self.mode, "max_tokens": self.max_tokens,
                "temperature": round(self.temperature, 3), "top_p": round(self.top_p, 3),
                "confidence": round(self.confidence, 3), "fallback": self.fallback,
                "context_class": self.context_class, "mode_class": self.mode_class,
                "router_version": self.router_version}


def context_class_of(k: int) -> int:
    """The class whose size is nearest to k (ties go to the smaller)."""
    return min(range(len(CONTEXT_CLASSES)), key=lambda i: abs(CONTEXT_CLASSES[i] - k))


def encode_hidden(h: np.ndarray) -> bytes:
    """A session's hidden state for sessions.router_state."""
    return np.ascontiguousarray(h, dtype=np.float32).tobytes()


def decode_hidden(blob: bytes | None, hidden: int) -> np.ndarray | None:
    """None when absent or from a router of another size (the session then restarts at 0)."""
    if not blob or len(blob) != 4 * hidden:
        return None
    h = np.frombuffer(blob, dtype=np.float32).copy()
    return h if np.isfinite(h).all() else None


# --------------------------------------------------------------------------
# first-start curriculum
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


_INITIAL_CACHE: dict[tuple[Any, ...], trainer.TrainState] = {}


def initial_state(layout: fg.Layout, cfg: trainer.TrainConfig, seed: int,
                  n_sessions: int = 3000, steps: int = 3000) -> trainer.TrainState:
    """Train the first-start router on the curriculum: dense first, then hard-thresholded.

    Deterministic for a given (layout, sparsity, seed, ...), so the result is
    memoised per process (a copy is returned each time).
    """
    key = (layout, cfg.sparsity, cfg.max_seq_len, cfg.reg_weight, seed, n_sessions, steps)
    if key in _INITIAL_CACHE:
        return _INITIAL_CACHE[key].copy()
    rng = np.random.default_rng(seed)
    theta = fg.init_params(layout, rng, cfg.sparsity)
    state = trainer.TrainState.fresh(theta)
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


# --------------------------------------------------------------------------
# the router


class Router:
    """Holds the current FastGRNN and turns its outputs into Decisions.

    Thread-safe for concurrent ``decide`` calls: the inference arrays are
    swapped as one tuple when a newly trained state is installed.
    """

    def __init__(self, layout: fg.Layout, state: trainer.TrainState, cfg: RouterConfig,
                 learning: LearningConfig, version: int = 0) -> None:
        assert layout.n_in == N_FEATURES, (layout.n_in, N_FEATURES)
        self.layout = layout
        self.cfg = cfg
        self.learning = learning
        self.train_config = trainer.TrainConfig.from_configs(cfg, learning)
        self.version = version
        self._state = state
        self._infer = self._inference_arrays(state.theta)

    # -- construction ------------------------------------------------------

    @staticmethod
    def layout_for(cfg: RouterConfig) -> fg.Layout:
        return fg.Layout(N_FEATURES, cfg.hidden_dim, cfg.low_rank)

    @classmethod
    def init(cls, cfg: RouterConfig, learning: LearningConfig) -> "Router":
        layout = cls.layout_for(cfg)
        t0 = time.monotonic()
        state = initial_state(layout, trainer.TrainConfig.from_configs(cfg, learning),
                              cfg.init_seed)
        log.info("router initialised from the curriculum",
                 extra={"duration_s": round(time.monotonic() - t0, 3)})
        return cls(layout, state, cfg, learning, version=0)

    @classmethod
    def load_or_init(cls, path: Path, cfg: RouterConfig, learning: LearningConfig) -> "Router":
        """Load the saved router, or build the first-start policy if there is none usable.

        An unreadable or incompatible file is kept aside (renamed) rather than
        overwritten, so nothing learned is lost to a config mistake.
        """
        path = Path(path)
        if path.exists():
            try:
                return cls.load(path, cfg, learning)
            except (ValueError, OSError, KeyError) as exc:
                aside = path.with_name(f"{path.name}.unusable-{int(time.time())}")
                log.warning("router file unusable; starting from the initial policy",
                            extra={"path": str(path), "error": str(exc), "kept_as": str(aside)})
                try:
                    os.replace(path, aside)
                except OSError:
                    pass
        return cls.init(cfg, learning)

    @classmethod
    def load(cls, path: Path, cfg: RouterConfig, learning: LearningConfig) -> "Router":
        layout = cls.layout_for(cfg)
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {k: np.array(z[k], dtype=np.float64)
                      for k in ("theta", "adam_m", "adam_v", "fisher", "anchor")}
        if meta.get("format") != FILE_FORMAT:
            raise ValueError(f"router file format {meta.get('format')} is not {FILE_FORMAT}")
        if meta.get("features_hash") != _FEATURES_HASH:
            raise ValueError("router file was trained on a different feature set")
        if (meta.get("hidden"), meta.get("rank")) != (layout.hidden, layout.rank):
            raise ValueError(f"router file has hidden={meta.get('hidden')} rank={meta.get('rank')}, "
                             f"config wants {layout.hidden}/{layout.rank}")
        for name, arr in arrays.items():
            if arr.shape != (layout.size,) or not np.isfinite(arr).all():
                raise ValueError(f"router file array {name} is malformed")
        state = trainer.TrainState(arrays["theta"], arrays["adam_m"], arrays["adam_v"],
                                   int(meta["adam_t"]), arrays["fisher"], arrays["anchor"],
                                   int(meta.get("consolidations", 0)))
        if np.count_nonzero(layout.view(state.theta, "W")) > fg.n_keep(layout, cfg.sparsity):
            fg.hard_threshold(state.theta, layout, cfg.sparsity)  # config asked for sparser
        return cls(layout, state, cfg, learning, version=int(meta["version"]))

    # -- state -------------------------------------------------------------

    def _inference_arrays(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return fg.pack_inference(theta, self.layout)

    @property
    def state(self) -> trainer.TrainState:
        """A copy: training works on its own copy and installs it with ``install``."""
        return self._state.copy()

    def install(self, state: trainer.TrainState) -> int:
        """Make a newly trained state current; bumps and returns the version."""
        assert state.theta.shape == (self.layout.size,)
        self._state = state.copy()
        self._infer = self._inference_arrays(self._state.theta)
        self.version += 1
        return self.version

    def initial_hidden(self) -> np.ndarray:
        return np.zeros(self.layout.hidden, dtype=np.float32)

    # -- deciding ----------------------------------------------------------

    def predict(self, x: np.ndarray, h: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw heads for one step: (out, h').

        out = [p_ctx (5), p_mode (3), temp, top_p, argmax ctx, argmax mode, confidence].
        """
        H = self.layout.hidden
        if x.shape != (N_FEATURES,):
            raise ValueError(f"features must have shape ({N_FEATURES},), got {x.shape}")
        if h is None:
            h = np.zeros(H, dtype=np.float32)
        elif h.shape != (H,):
            raise ValueError(f"hidden state must have shape ({H},), got {h.shape}")
        out = np.empty(H + fg.INFER_EXTRA, dtype=np.float32)
        th, idx, meta = self._infer
        fg.infer_step(x, h, th, idx, meta, out)
        return out[H:], out[:H]

    def decide(self, x: np.ndarray, h: np.ndarray | None,
               defaults: Mapping[str, Any]) -> tuple[Decision, np.ndarray]:
        """One request's decision and the session's next hidden state.

        ``defaults``: max_tokens, temperature, top_p (the request's or config's
        values, used on fallback and as the long-mode budget); optional
        context_k and mode override the fallback context/mode.
        """
        try:
            max_tokens = int(defaults["max_tokens"])
        except KeyError:
            raise ValueError("decide() defaults lack 'max_tokens'") from None
        out, h_next = self.predict(x, h)
        temp, top_p, ctx_f, mode_f, conf = out[fg.N_CONTEXT + fg.N_MODE:].tolist()
        ctx, mode = int(ctx_f), int(mode_f)
        if not self.cfg.enabled or not conf >= self.cfg.confidence_threshold:
            return self._fallback(defaults, max_tokens, conf), h_next
        return self.decision_for(ctx, mode, temp, top_p, max_tokens, conf), h_next

    def _fallback(self, defaults: Mapping[str, Any], max_tokens: int, conf: float) -> Decision:
        """The config's safe defaults, used below the confidence threshold."""
        try:
            d_temp = float(defaults["temperature"])
            d_top_p = float(defaults["top_p"])
        except KeyError as exc:
            raise ValueError(f"decide() defaults lack {exc.args[0]!r}") from None
        k = int(defaults.get("context_k", self.cfg.fallback_context_k))
        mode_name = str(defaults.get("mode", "long"))
        if mode_name not in MODES:
            raise ValueError(f"defaults mode must be one of {MODES}, got {mode_name!r}")
        return Decision(context_k=k, mode=mode_name, max_tokens=max_tokens, temperature=d_temp,
                        top_p=d_top_p, confidence=conf if math.isfinite(conf) else 0.0,
                        fallback=True, context_class=context_class_of(k),
                        mode_class=MODES.index(mode_name), router_version=self.version)

    def decision_for(self, context_class: int, mode_class: int, temperature: float, top_p: float,
                     max_tokens: int, confidence: float = 1.0) -> Decision:
        """A Decision for given classes (also used by exploration to build alternatives)."""
        if not 0 <= context_class < len(CONTEXT_CLASSES) or not 0 <= mode_class < len(MODES):
            raise ValueError(f"no such decision class ({context_class}, {mode_class})")
        budget = max_tokens if mode_class == LONG else min(self.cfg.short_max_tokens, max_tokens)
        return Decision(CONTEXT_CLASSES[context_class], MODES[mode_class], budget,
                        min(max(temperature, 0.0), 2.0), min(max(top_p, 0.05), 1.0), confidence,
                        False, context_class, mode_class, self.version)

    # -- persistence -------------------------------------------------------

    def model_bytes(self) -> bytes:
        """The deployable model alone (CSR W + float32 dense blocks): what size_bytes counts."""
        theta = self._state.theta
        csr = fg.to_csr(theta, self.layout)
        rest = np.concatenate([theta[self.layout.block(n)] for n in
                               ("U1", "U2", "bz", "bh", "zeta", "nu", "Wc", "bc", "Wm", "bm",
                                "wt", "bt", "wp", "bp")]).astype("<f4")
        header = struct.pack("<4sHHHHHI", MODEL_MAGIC, FILE_FORMAT, self.layout.n_in,
                             self.layout.hidden, self.layout.rank, 0, len(csr.data))
        return b"".join([header, csr.indptr.astype("<u2").tobytes(),
                         csr.indices.astype("<u2").tobytes(), csr.data.astype("<f4").tobytes(),
                         rest.tobytes()])

    def size_bytes(self) -> int:
        return len(self.model_bytes())

    def state_bytes(self) -> bytes:
        """The full training state file: weights, Adam moments, Fisher, anchor, version."""
        s = self._state
        meta = {"format": FILE_FORMAT, "version": self.version, "features_hash": _FEATURES_HASH,
                "n_features": N_FEATURES, "hidden": self.layout.hidden, "rank": self.layout.rank,
                "adam_t": s.t, "consolidations": s.consolidations, "saved_at": time.time()}
        buf = io.BytesIO()
        np.savez(buf, theta=s.theta, adam_m=s.m, adam_v=s.v, fisher=s.fisher, anchor=s.anchor,
                 meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
        return buf.getvalue()

    def save(self, path: Path) -> None:
        """Atomic: write a temp file, fsync, rename over the old one, fsync the directory.

        A crash at any point leaves either the previous file or the new one,
        never a torn file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.state_bytes()
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            try:
                stale.unlink()
            except OSError:
                pass
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.info("router saved", extra={"path": str(path), "version": self.version,
                                        "bytes": len(data)})


def params_from_model_bytes(data: bytes) -> tuple[fg.Layout, np.ndarray]:
    """Inverse of ``Router.model_bytes`` (theta as float64, W dense)."""
    hdr = struct.calcsize("<4sHHHHHI")
    magic, fmt, d, h, r, _, nnz = struct.unpack("<4sHHHHHI", data[:hdr])
    if magic != MODEL_MAGIC or fmt != FILE_FORMAT:
        raise ValueError("not a router model blob")
    layout = fg.Layout(d, h, r)
    pos = hdr
    indptr = np.frombuffer(data, "<u2", h + 1, pos).astype(np.int64)
    pos += 2 * (h + 1)
    indices = np.frombuffer(data, "<u2", nnz, pos).astype(np.int64)
    pos += 2 * nnz
    vals = np.frombuffer(data, "<f4", nnz, pos).astype(np.float64)
    pos += 4 * nnz
    rest = np.frombuffer(data, "<f4", offset=pos).astype(np.float64)
    theta = np.zeros(layout.size)
    w = layout.view(theta, "W")
    for i in range(h):
        w[i, indices[indptr[i]:indptr[i + 1]]] = vals[indptr[i]:indptr[i + 1]]
    theta[layout.block("W").stop:] = rest
    return layout, theta
