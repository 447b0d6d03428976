"""Fit the ranking's initial parameters (ranking.FITTED) on the development split only.

The initial ranking is one logistic model of "this candidate answers the
question" (every head identical, see ranking.py), over the features a live
query computes: cosine, lexical (in the BM25 pool), cover (idf-weighted word
coverage), trust, hop and propagated similarity. Fitted in two steps:

1. the direction: a grid over the weights, keeping the one with the best
   mean of LoCoMo-fit turn recall@10 and dev-notes recall@1 (a pointwise
   logistic fit ranked worse: 0.636 against 0.677 recall@10 on the fit split);
2. the calibration: a one-dimensional logistic fit of scale and bias on the
   same examples, so relevance is a probability.

Its examples are the candidates the real ``Retriever.gather`` returns for:

- the development house notes (benchmarks/data/notes-dev.json): a candidate
  is positive when it holds a gold value of a taught question; never-taught
  questions contribute only negatives (the sink must win for them);
- the LoCoMo ``fit`` conversations (conv-26, conv-30 of the development half;
  never conv-41/42/43, which bench_locomo reports on): a candidate is
  positive when its turn is in the question's evidence.

Nothing from a reported split is read. Prints the fitted weights (pasted into
ranking.FITTED, with the date) and saves benchmarks/results/fit_ranking.json
with the data, counts and the fit-split recall of the fitted against the
previous weights. Usage: python benchmarks/fit_ranking.py [--locomo PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS_DIR, ROOT, save_results
from _datasets import locomo_path, locomo_samples

from ruvllm_edge import ranking
from ruvllm_edge.config import MemoryConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.nodes import upsert_edge
from ruvllm_edge.memory.retrieval import features
from ruvllm_edge.memory.store import MemoryStore

FIT_CONVERSATIONS = ("conv-26", "conv-30")
NAMES = ("cosine", "lexical", "cover", "trust", "hop", "prop_sim")
L2 = 1e-4
GRID = {"cosine": (2, 4, 6, 8), "lexical": (0, 0.5, 1), "cover": (3, 6, 9, 12),
        "hop": (-2, -1, 0, 1), "prop_sim": (0, 1, 2)}
K = 10


def design(store: MemoryStore, emb: Embedder, q: str) -> tuple[Any, np.ndarray]:
    g = store._retriever.gather(emb.embed(q), K, query=q)
    E = features(g, time.time())
    X = np.column_stack([g.sims, E[:, ranking._F["lexical"]], E[:, ranking._F["cover"]],
                         E[:, ranking._F["trust"]], E[:, ranking._F["hop"]],
                         E[:, ranking._F["prop_sim"]]]) if g.ids else np.zeros((0, len(NAMES)))
    return g, X


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 50) -> np.ndarray:
    """Newton/IRLS with an L2 penalty (not on the bias). X (n, f), y (n,) -> w (f+1,), bias first."""
    A = np.column_stack([np.ones(len(X)), X])                          # (n, f+1)
    w = np.zeros(A.shape[1])
    reg = np.full(A.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(A @ w)))
        g = A.T @ (p - y) / len(y) + reg * w
        H = (A * (p * (1 - p))[:, None]).T @ A / len(y) + np.diag(reg + 1e-9)
        step = np.linalg.solve(H, g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def group_score(kind: str, s: np.ndarray, y: np.ndarray, units: list[Any]) -> float:
    """LoCoMo: share of evidence turns in the top 10 distinct turns; notes: top-1 correct."""
    order = np.argsort(-s)
    if kind == "notes":
        return float(y[order[0]])
    seen: list[Any] = []
    hit = 0.0
    n_gold = units[0][1] if units else 1
    for j in order:
        d = units[j][0]
        if d in seen:
            continue
        seen.append(d)
        hit += y[j]
        if len(seen) >= K:
            break
    return hit / n_gold


def grid_direction(groups: list[tuple[str, np.ndarray, np.ndarray, list[Any]]]) -> tuple[np.ndarray, float]:
    """The grid weights with the best mean of the LoCoMo and the notes objectives."""
    best = (-1.0, np.zeros(len(NAMES)))
    for combo in itertools.product(*GRID.values()):
        w = dict(zip(GRID, combo))
        d = np.array([w.get(n, 0.0) for n in NAMES])
        per = {"notes": [], "locomo": []}
        for kind, X, y, units in groups:
            per[kind].append(group_score(kind, X @ d, y, units))
        score = float(np.mean([np.mean(v) for v in per.values() if v]))
        if score > best[0]:
            best = (score, d)
    return best[1], best[0]


def recall_at(store: MemoryStore, emb: Embedder, items: list[tuple[str, set[str]]], k: int) -> float:
    hit = 0
    for q, gold in items:
        r = store.retrieve(q, emb.embed(q), k, min_relevance=0.0)
        got = [c.metadata.get("dia_id") for c in r.candidates]
        hit += bool(gold & set(got))
    return hit / max(len(items), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--locomo")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--out", default=str(RESULTS_DIR / "fit_ranking.json"))
    a = ap.parse_args()
    models = Path(a.models_dir)
    emb = Embedder(models / "minilm-l6-int8.onnx", models / "minilm-l6-int8.tokenizer.json", threads=2)
    cfg = MemoryConfig(min_relevance=0.0, writeback_flush_ms=10)
    Xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    groups: list[tuple[str, np.ndarray, np.ndarray, list[Any]]] = []   # (set, X, y, unit of each row)
    counts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # House notes (dev).
        db = Database(Path(tmp) / "notes.db")
        store = MemoryStore(db, cfg, emb)
        notes = json.loads((ROOT / "benchmarks" / "data" / "notes-dev.json").read_text())["notes"]
        for n in notes:
            store.add(n["text"])
        nq = 0
        for n in notes:
            for q in n["questions"]:
                g, X = design(store, emb, q["q"])
                gold = [v.lower() for v in q.get("answer_any", [])] if q["type"] == "taught" else []
                y = np.array([float(bool(gold) and any(v in g.rows[i][2].lower() for v in gold))
                              for i in g.ids])
                Xs.append(X)
                ys.append(y)
                if y.any():
                    groups.append(("notes", X, y, list(g.ids)))
                nq += 1
        counts["notes_dev_questions"] = nq
        store.close()
        db.close()
        # LoCoMo fit conversations.
        path = Path(a.locomo) if a.locomo else locomo_path()
        loc_items: list[tuple[str, set[str]]] = []
        if path.is_file():
            data = [s for s in locomo_samples(path) if s["sample_id"] in FIT_CONVERSATIONS]
            db = Database(Path(tmp) / "locomo.db")
            store = MemoryStore(db, cfg, emb)
            for s in data:
                prev = None
                for t in s["turns"]:
                    ids = store.add(f"{t['speaker']}: {t['text']}",
                                    metadata={"conv": s["sample_id"], "dia_id": t["dia_id"], "date": t["date"]})
                    if prev is not None:
                        with db.atomic() as conn:
                            upsert_edge(conn, prev, ids[0], "follows", 1.0, time.time())
                    prev = ids[-1]
                for qa in s["qa"]:
                    if qa["evidence"]:
                        loc_items.append((qa["question"], set(qa["evidence"])))
            for q, gold in loc_items:
                g, X = design(store, emb, q)
                dia = [json.loads(g.rows[i][3]).get("dia_id") for i in g.ids]
                y = np.array([float(d in gold) for d in dia])
                Xs.append(X)
                ys.append(y)
                groups.append(("locomo", X, y, [(d, len(gold)) for d in dia]))
            counts["locomo_fit_questions"] = len(loc_items)
        else:
            print(f"LoCoMo not found at {path}: fitting on the dev notes only")
        X = np.concatenate(Xs)
        y = np.concatenate(ys)
        direction, score = grid_direction(groups)
        s_all = X @ direction
        ab = fit_logistic(s_all[:, None], y)                     # (bias, scale)
        w = np.concatenate([[ab[0]], ab[1] * direction])
        fitted = {"bias": round(float(w[0]), 4), **{n: round(float(v), 4) for n, v in zip(NAMES, w[1:])}}
        counts["grid_objective"] = round(score, 4)
        counts.update(examples=int(len(y)), positives=int(y.sum()))
        result: dict[str, Any] = {"split": "dev (notes-dev + LoCoMo fit: conv-26, conv-30)",
                                  "features": list(NAMES), "l2": L2, "fitted": fitted,
                                  "previous": dict(ranking.FITTED), "counts": counts}
        if loc_items:
            before = recall_at(store, emb, loc_items, K)
            store._feedback.ranking.params = ranking.initial_params(cfg.attention_heads, fitted)
            after = recall_at(store, emb, loc_items, K)
            result["locomo_fit_recall_at_10"] = {"previous": round(before, 4), "fitted": round(after, 4)}
            store.close()
            db.close()
    print(json.dumps(result, indent=2))
    save_results(result, a.out, echo=False)


if __name__ == "__main__":
    main()
