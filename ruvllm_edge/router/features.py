"""The router's fixed-length, bounded input vector for one request.

Why bounded: the router keeps learning on the device for months. If a feature
could grow without limit (a raw token count, a queue length) its scale would
drift away from what the weights were trained on, and an old, well-trained
router would silently degrade. Every entry is therefore squashed into [0, 1]
(or [-1, 1] for the embedding sketch) by a fixed transform chosen here, not by
statistics collected at run time, so the same request always maps to the same
vector on every device and after every restart.

The vector has ``N_FEATURES`` entries, in the order of ``FEATURE_NAMES``:

=====  ====================  ==================================================
index  name                  meaning (transform)
=====  ====================  ==================================================
0      q_tokens              query tokens, log1p(n) / log1p(512), clipped to 1
1      q_long                1 if the query has more than 64 tokens
2      q_has_qmark           1 if the query contains "?"
3      q_digits              share of characters that are digits (x4, clip 1)
4-14   qtype_*               one-hot question type from ``question_type``:
                             what, who, when, how, why, yes_no, code, math,
                             chat, compose (write/draft a paragraph, story,
                             email ...: a request for a long answer), other
15     emb_norm_dev          |1 - ||v||| (0 for a proper unit vector), clip 1
16     emb_entropy           Renyi-2 entropy of v**2 / log(dim): how spread
                             the embedding is (generic text is more spread)
17     emb_max_abs           max |v_i| x 4, clipped to 1
18-25  emb_proj_0..7         v projected onto 8 fixed random unit directions
                             (seed 20240917), x sqrt(dim) / 3, clipped to
                             [-1, 1]: a stable, cheap sketch of the topic
26     r_no_hits             1 if retrieval found nothing
27     r_n_hits              min(n_hits, 16) / 16
28     r_top_sim             best cosine similarity, clipped to [0, 1]
29     r_mean_sim            mean similarity of the hits, clipped to [0, 1]
30     r_sim_std             spread of the similarities x 4, clipped to 1
31     r_margin              top_sim - mean_sim, clipped to [0, 1]
32-36  r_kind_*              hits by kind (query, qa_pair, fact, document,
                             concept), each min(n, 8) / 8
37     r_trusted_sim         best similarity among trusted user facts
                             (corrections and memory.add facts, trust >= 0.9)
38     r_trusted_close       1 if r_trusted_sim >= TRUSTED_CLOSE_SIM (0.75) and
                             r_trusted_sim >= r_top_sim - TRUSTED_TOP_MARGIN
                             (0.1): a taught fact that answers this query and
                             no record matches clearly better (measured with
                             the real embedder: a taught fact against a
                             paraphrase of its question 0.69-0.91, median
                             0.82; an unrelated fact at most ~0.71)
39     r_graph_density       neighbourhood density from the memory graph
40     r_expanded            graph-expanded nodes, log1p(n) / log1p(32)
41     s_turn                session turn index, log1p(t) / log1p(32)
42     s_first_turn          1 on the first turn of a session
43     sys_mem_pressure      memory pressure, 0 (free) .. 1 (at the budget)
44     sys_queue             requests waiting, log1p(n) / log1p(16)
45     sys_model_loaded      1 if the LLM is already loaded (no cold start)
46     c_has_budget          1 if the request gives a latency budget
47     c_budget              latency budget, log10(ms / 100) / 2 clipped to
                             [0, 1] (100 ms -> 0, 10 s -> 1); 1 if none
48     c_max_tokens          request max_tokens, log2(n) / log2(4096), clipped;
                             1 if none
49     recent_quality        rolling mean judged quality of recent answers
50     bias                  constant 1 (lets sparse W learn per-unit offsets)
=====  ====================  ==================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from numba import njit

EMBED_DIM = 384
N_PROJ = 8
_PROJ_SEED = 20240917

QUESTION_TYPES: tuple[str, ...] = (
    "what", "who", "when", "how", "why", "yes_no", "code", "math", "chat", "compose", "other",
)
KINDS: tuple[str, ...] = ("query", "qa_pair", "fact", "document", "concept")

FEATURE_NAMES: tuple[str, ...] = (
    ("q_tokens", "q_long", "q_has_qmark", "q_digits")
    + tuple(f"qtype_{t}" for t in QUESTION_TYPES)
    + ("emb_norm_dev", "emb_entropy", "emb_max_abs")
    + tuple(f"emb_proj_{i}" for i in range(N_PROJ))
    + ("r_no_hits", "r_n_hits", "r_top_sim", "r_mean_sim", "r_sim_std", "r_margin")
    + tuple(f"r_kind_{k}" for k in KINDS)
    + ("r_trusted_sim", "r_trusted_close", "r_graph_density", "r_expanded",
       "s_turn", "s_first_turn", "sys_mem_pressure", "sys_queue", "sys_model_loaded",
       "c_has_budget", "c_budget", "c_max_tokens", "recent_quality", "bias")
)
N_FEATURES = len(FEATURE_NAMES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
TRUSTED_CLOSE_SIM = 0.75
# "About the best match": the same margin prompt packing uses to keep records
# beside the best one (memory.similarity_margin's default).
TRUSTED_TOP_MARGIN = 0.1

# Question-type rules. Priority: code, math, compose, chat, why, how, who, when,
# what, yes/no, else other. Code and math come first because "how do I sort a
# list in python" is a code question before it is a "how" question; compose
# ("write a paragraph about ...") comes next because it is the one type that
# asks for a long answer whatever its topic. The text is
# lower-cased once and the rules are few, cheap regexes (no backtracking-heavy
# patterns): this runs on every request.
_CODE_RE = re.compile(
    r"```|\b(?:def|function|python|javascript|bash|sql|regex|compile[a-z]*|syntax|stack ?trace"
    r"|exception|code|script|api)\b|\w\(")
_MATH_RE = re.compile(
    r"\d\s*[-+*/^x×÷=]\s*\d|\b(?:square root|sum of|percent|equation|integral|derivative"
    r"|calculate|solve)\b")
_LEAD_RE = re.compile(
    r"\s*(?:(?P<chat>(?:hi|hello|hey|thanks|thank you|good (?:morning|evening|night)|bye|ok|okay"
    r"|cool|how are you|what's up|lol|nice)\b)"
    r"|(?P<why>why\b)|(?P<how>how\b)|(?P<who>(?:who|whom|whose)\b)"
    r"|(?P<when>(?:when|where|what time|what year|which year)\b)"
    r"|(?P<what>(?:what|which|name|list|define|describe|explain|tell me)\b)"
    r"|(?P<yes_no>(?:is|are|was|were|do|does|did|can|could|should|will|would|has|have|am)\b))")
_COMPOSE_RE = re.compile(
    r"^\s*(?:please\s+)?(?:write|compose|draft|summari[sz]e)\b"
    r"|\b(?:write|compose|draft)\b.*\b(?:paragraphs?|essay|story|poem|letter|e-?mail|article"
    r"|speech|sentences|summary)\b"
    r"|\bin (?:a|one|two|three|a few|some) (?:short )?(?:paragraphs?|sentences)\b")
_WHY_MID_RE = re.compile(r"\bwhy (?:is|are|do|does|did|would)\b")
_HOW_MID_RE = re.compile(r"\bhow (?:do|does|can|to|should|much|many)\b")


def question_type(query: str) -> str:
    """Cheap keyword classifier; the router only needs a coarse hint, not NLU."""
    q = query.lower()
    if _CODE_RE.search(q):
        return "code"
    if _MATH_RE.search(q):
        return "math"
    if _COMPOSE_RE.search(q):
        return "compose"
    m = _LEAD_RE.match(q)
    lead = m.lastgroup if m else None
    if lead == "chat":
        return "chat"
    if lead == "why" or _WHY_MID_RE.search(q):
        return "why"
    if lead == "how" or _HOW_MID_RE.search(q):
        return "how"
    return lead or "other"


def _projection_matrix() -> np.ndarray:
    """Fixed random unit directions: a seed, not data, so every device agrees."""
    rng = np.random.default_rng(_PROJ_SEED)
    p = rng.standard_normal((N_PROJ, EMBED_DIM))  # (8, 384)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return np.ascontiguousarray(p, dtype=np.float32)


PROJECTION = _projection_matrix()  # (8, 384) float32


@dataclass(frozen=True)
class FeatureInputs:
    """Everything the router may look at, gathered by the pipeline before routing."""

    query: str
    query_tokens: int
    query_vec: np.ndarray  # (384,) float32, unit norm
    retrieval: Mapping[str, Any] = field(default_factory=dict)
    turn_index: int = 0
    memory_pressure: float = 0.0
    queue_len: int = 0
    model_loaded: bool = True
    latency_budget_ms: float | None = None
    max_tokens: int | None = None
    recent_quality: float = 0.5


def embedding_stats_ref(v: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """Numpy reference for ``embedding_stats``: norm deviation, spread, max, sketch."""
    v = v.astype(np.float64)  # (d,)
    d = v.shape[0]
    out = np.zeros(3 + proj.shape[0], dtype=np.float32)
    ss = float(np.dot(v, v))
    norm = math.sqrt(ss)
    out[0] = min(abs(1.0 - norm), 1.0)
    if ss > 0:
        p = v * v / ss  # (d,) sums to 1
        out[1] = -math.log(float(np.dot(p, p))) / math.log(d)
        u = v / norm
    else:
        u = v
    out[2] = min(float(np.abs(v).max()) * 4.0, 1.0)
    out[3:] = np.clip(proj.astype(np.float64) @ u * (math.sqrt(d) / 3.0), -1.0, 1.0)
    return out


# Reassociation lets the reductions vectorise; no nnan/ninf, so the NaN check stays valid.
@njit(cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"})
def embedding_stats(v: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """One pass over the 384 values instead of ~10 numpy calls (routing is hot).

    The spread is the Renyi-2 entropy -log(sum p^2) / log(d) of p = v^2 / |v|^2,
    which needs one log instead of d (Shannon's); both are 1 for a perfectly
    flat vector and 0 for a one-hot one.
    """
    d = v.shape[0]
    m = proj.shape[0]
    out = np.zeros(3 + m, dtype=np.float32)
    ss = 0.0
    s4 = 0.0
    mx = 0.0
    for i in range(d):
        x = float(v[i])
        x2 = x * x
        ss += x2
        s4 += x2 * x2
        a = abs(x)
        if a > mx:
            mx = a
    if not math.isfinite(ss):
        raise ValueError("query_vec contains NaN or infinite values")
    norm = math.sqrt(ss)
    out[0] = min(abs(1.0 - norm), 1.0)
    inv = 0.0
    if ss > 0.0:
        inv = 1.0 / norm
        out[1] = -math.log(s4 / (ss * ss)) / math.log(d)
    out[2] = min(mx * 4.0, 1.0)
    scale = math.sqrt(d) / 3.0
    for j in range(m):
        acc = 0.0
        for i in range(d):
            acc += float(proj[j, i]) * float(v[i])
        val = acc * inv * scale
        out[3 + j] = min(max(val, -1.0), 1.0)
    return out


_LOG513 = math.log1p(512)
_LOG33 = math.log1p(32)
_LOG17 = math.log1p(16)
_LOG2_4096 = 12.0
_NO_DIGITS = str.maketrans("", "", "0123456789")
_QTYPE_ONEHOT: dict[str, list[float]] = {
    t: [1.0 if t == u else 0.0 for u in QUESTION_TYPES] for t in QUESTION_TYPES}


def _clip01(v: float) -> float:
    """Clip to [0, 1]; NaN becomes 0 so a bad statistic can never poison the vector."""
    return 0.0 if not v >= 0.0 else (1.0 if v > 1.0 else v)


def _num(r: Mapping[str, Any], key: str) -> float:
    v = r.get(key)
    return float(v) if v else 0.0


def build_features_ref(inp: FeatureInputs) -> np.ndarray:
    """Readable reference for ``build_features`` (tests compare the two)."""
    q = inp.query
    vec = inp.query_vec
    if vec is None or np.size(vec) != EMBED_DIM:
        raise ValueError(f"query_vec must have {EMBED_DIM} values, got {np.size(vec)}")
    n_tok = inp.query_tokens if inp.query_tokens > 0 else 0
    n_chars = len(q)
    digits = n_chars - len(q.translate(_NO_DIGITS))
    f = [min(math.log1p(n_tok) / _LOG513, 1.0), 1.0 if n_tok > 64 else 0.0,
         1.0 if "?" in q else 0.0, min(4.0 * digits / n_chars, 1.0) if n_chars else 0.0]
    f += _QTYPE_ONEHOT[question_type(q)]
    f += embedding_stats_ref(np.asarray(vec, dtype=np.float32), PROJECTION).tolist()
    r = inp.retrieval or {}
    n_hits = int(r.get("n_hits") or 0)
    top = _clip01(_num(r, "top_sim"))
    mean = _clip01(_num(r, "mean_sim"))
    f += [1.0 if n_hits <= 0 else 0.0, min(max(n_hits, 0), 16) / 16.0, top, mean,
          _clip01(4.0 * _num(r, "sim_std")), _clip01(top - mean)]
    by_kind = r.get("hits_by_kind") or {}
    f += [min(max(int(by_kind.get(k) or 0), 0), 8) / 8.0 for k in KINDS]
    trusted = _clip01(_num(r, "best_trusted_sim"))
    n_exp = int(r.get("n_expanded") or 0)
    turn = inp.turn_index if inp.turn_index > 0 else 0
    queue = inp.queue_len if inp.queue_len > 0 else 0
    budget = inp.latency_budget_ms
    has_budget = budget is not None and budget > 0
    budget_ms = float(budget) if budget is not None and budget > 0 else 1.0
    mt = inp.max_tokens
    close = trusted >= TRUSTED_CLOSE_SIM and trusted >= top - TRUSTED_TOP_MARGIN
    f += [trusted, 1.0 if close else 0.0,
          _clip01(_num(r, "graph_density")),
          min(math.log1p(n_exp) / _LOG33, 1.0) if n_exp > 0 else 0.0,
          min(math.log1p(turn) / _LOG33, 1.0), 1.0 if turn == 0 else 0.0,
          _clip01(float(inp.memory_pressure)), min(math.log1p(queue) / _LOG17, 1.0),
          1.0 if inp.model_loaded else 0.0,
          1.0 if has_budget else 0.0,
          _clip01(math.log10(max(budget_ms, 1.0) / 100.0) / 2.0) if has_budget else 1.0,
          _clip01(math.log2(max(mt, 1)) / _LOG2_4096) if mt is not None and mt > 0 else 1.0,
          _clip01(float(inp.recent_quality)), 1.0]
    x = np.array(f, dtype=np.float32)
    assert x.shape == (N_FEATURES,), x.shape
    return x


@njit(cache=True, inline="always")
def _c01(v: float) -> float:
    return 0.0 if not v >= 0.0 else (1.0 if v > 1.0 else v)


@njit(cache=True)
def _assemble(raw: np.ndarray, vec: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """The transforms of ``build_features_ref`` on raw numbers packed by ``build_features``.

    raw = [n_tok, n_chars, digits, has_qmark, qtype, n_hits, top, mean, std,
           5 kind counts, trusted, density, n_expanded, turn, pressure, queue,
           loaded, budget (-1 none), max_tokens (-1 none), recent_quality]
    """
    x = np.zeros(N_FEATURES, dtype=np.float32)
    n_tok = max(raw[0], 0.0)
    x[0] = min(math.log1p(n_tok) / _LOG513, 1.0)
    x[1] = 1.0 if n_tok > 64 else 0.0
    x[2] = raw[3]
    x[3] = min(4.0 * raw[2] / raw[1], 1.0) if raw[1] > 0 else 0.0
    x[_QT0 + int(raw[4])] = 1.0
    st = embedding_stats(vec, proj)
    for i in range(st.shape[0]):
        x[_EMB0 + i] = st[i]
    n_hits = raw[5]
    top = _c01(raw[6])
    mean = _c01(raw[7])
    i = _R0
    x[i] = 1.0 if n_hits <= 0 else 0.0
    x[i + 1] = min(max(n_hits, 0.0), 16.0) / 16.0
    x[i + 2] = top
    x[i + 3] = mean
    x[i + 4] = _c01(4.0 * raw[8])
    x[i + 5] = _c01(top - mean)
    for k in range(5):
        x[i + 6 + k] = min(max(float(int(raw[9 + k])), 0.0), 8.0) / 8.0
    trusted = _c01(raw[14])
    x[i + 11] = trusted
    x[i + 12] = 1.0 if trusted >= TRUSTED_CLOSE_SIM and trusted >= top - TRUSTED_TOP_MARGIN \
        else 0.0
    x[i + 13] = _c01(raw[15])
    n_exp = float(int(raw[16]))
    x[i + 14] = min(math.log1p(n_exp) / _LOG33, 1.0) if n_exp > 0 else 0.0
    turn = max(raw[17], 0.0)
    x[i + 15] = min(math.log1p(turn) / _LOG33, 1.0)
    x[i + 16] = 1.0 if turn == 0 else 0.0
    x[i + 17] = _c01(raw[18])
    x[i + 18] = min(math.log1p(max(raw[19], 0.0)) / _LOG17, 1.0)
    x[i + 19] = raw[20]
    budget = raw[21]
    if budget > 0:
        x[i + 20] = 1.0
        x[i + 21] = _c01(math.log10(max(budget, 1.0) / 100.0) / 2.0)
    else:
        x[i + 21] = 1.0
    mt = raw[22]
    x[i + 22] = _c01(math.log2(max(mt, 1.0)) / _LOG2_4096) if mt > 0 else 1.0
    x[i + 23] = _c01(raw[23])
    x[i + 24] = 1.0
    return x


_QT0 = INDEX["qtype_what"]
_EMB0 = INDEX["emb_norm_dev"]
_R0 = INDEX["r_no_hits"]
_QTYPE_INDEX = {t: i for i, t in enumerate(QUESTION_TYPES)}
assert INDEX["bias"] == _R0 + 24 and N_FEATURES == _R0 + 25


def build_features(inp: FeatureInputs) -> np.ndarray:
    """(N_FEATURES,) float32, every entry bounded (see the module table).

    Gathers the raw numbers in Python and does every transform in one numba
    call, because this runs on every request inside the router's budget.
    """
    q = inp.query
    vec = inp.query_vec
    if vec is None or np.size(vec) != EMBED_DIM:
        raise ValueError(f"query_vec must have {EMBED_DIM} values, got {np.size(vec)}")
    r = inp.retrieval or {}
    k = r.get("hits_by_kind") or {}
    budget = inp.latency_budget_ms
    mt = inp.max_tokens
    try:
        raw = np.array((
            inp.query_tokens, len(q), len(q) - len(q.translate(_NO_DIGITS)), "?" in q,
            _QTYPE_INDEX[question_type(q)],
            r.get("n_hits") or 0, r.get("top_sim") or 0.0, r.get("mean_sim") or 0.0,
            r.get("sim_std") or 0.0, k.get("query") or 0, k.get("qa_pair") or 0,
            k.get("fact") or 0, k.get("document") or 0, k.get("concept") or 0,
            r.get("best_trusted_sim") or 0.0, r.get("graph_density") or 0.0,
            r.get("n_expanded") or 0, inp.turn_index, inp.memory_pressure, inp.queue_len,
            inp.model_loaded, -1.0 if budget is None else budget, -1.0 if mt is None else mt,
            inp.recent_quality), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature inputs must be numbers: {exc}") from None
    # A copy: a cached or batched embedding is a read-only view, and numba types
    # a read-only array apart, so it would JIT a second signature on a request.
    return _assemble(raw, np.array(vec, dtype=np.float32, order="C"), PROJECTION)
