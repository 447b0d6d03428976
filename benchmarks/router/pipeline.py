"""Routing on the daemon's real query path, built in-process as server.Daemon builds it.

Config, Database, InferenceEngine, SessionStore, Components.build, Pipeline.
The memory is filled the way a user fills it (memory.add; a logged query plus a
rating-1 feedback correction) and every query is answered under each decision
of the explorer's grid by ``Pipeline.answer_with`` (real retrieval, prompt
packing, answer-from-memory, generation). Outcomes are cached keyed by the
memory contents and the hash of the source files an outcome depends on, so
re-runs only answer what changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ruvllm_edge.config import LearningConfig
from ruvllm_edge.learning import trainer as T
from ruvllm_edge.learning.explore import candidate_grid
from ruvllm_edge.learning.utility import ReplaySample, utility
from ruvllm_edge.router import policy as P

from .report import _best, _decision_name, routing_report, similarity_profile
from _datasets import PYCOUNTRY

from .workload import PARAGRAPH_MIN_WORDS, Query, Workload, build_workload, mix, quality_of

ROOT = Path(__file__).resolve().parent.parent.parent
PREFILL_TOK_S = 330.0   # reference.md, SmolLM2-135M q4_1 on this machine, 2 threads
DECODE_TOK_S = 115.0

# The source files an outcome depends on: a change to any of them makes cached
# outcomes stale (the cache key includes their hash). The whole memory package
# counts, whichever of its modules the retrieval and prompt code lives in.
OUTCOME_SOURCES = ("ruvllm_edge/pipeline.py", "ruvllm_edge/inference.py", "ruvllm_edge/ranking.py",
                   "ruvllm_edge/embedding.py", "ruvllm_edge/memory/*.py")


def code_fingerprint() -> str:
    h = hashlib.sha256()
    for pattern in OUTCOME_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


class MemoEngine:
    """The real InferenceEngine, with the generations of one benchmark run shared.

    Two decisions often hand the model the very same prompt (prompt packing
    keeps only records close to the best one, so k = 4, 8 and 16 frequently
    pack the same notes). The same prompt is generated once and its result
    reused; and a long-budget run reuses the short run of the same prompt when
    that one stopped on its own before the short budget (the same draws would
    give the same text). Everything else is the engine's own code. Each real
    generation starts from a KV cache that holds only the shared system prompt,
    as consecutive live requests do; the CPU and wall time a reused generation
    took is charged again to every decision that reuses it.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._memo: dict[tuple[Any, ...], list[tuple[Any, float, float]]] = {}
        self.sys_prefix = 0
        self.last: dict[str, Any] | None = None   # what the latest call cost

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def set_system_prefix(self, system: str) -> None:
        a = self._engine.plan(system, [], "a", 8).tokens
        b = self._engine.plan(f"{system}\n\nNotes", [], "b", 8).tokens
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        self.sys_prefix = n

    def generate(self, plan: Any, *, temperature: float, top_p: float, on_token: Any = None,
                 should_stop: Any = None) -> Any:
        key = (tuple(plan.tokens), round(temperature, 4), round(top_p, 4))
        for gen, cpu, wall in self._memo.get(key, []):
            if gen.max_tokens_budget == plan.max_tokens or (
                    gen.finish_reason == "stop" and gen.completion_tokens < plan.max_tokens
                    and gen.completion_tokens < gen.max_tokens_budget):
                self.last = {"gen": gen, "cpu_s": cpu, "wall_s": wall, "reused": True}
                return gen
        llm = getattr(self._engine, "_llm", None)
        if llm is not None:
            llm.n_tokens = min(int(llm.n_tokens), self.sys_prefix)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        gen = self._engine.generate(plan, temperature=temperature, top_p=top_p,
                                    on_token=on_token, should_stop=should_stop)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        gen.max_tokens_budget = plan.max_tokens   # type: ignore[attr-defined]
        self._memo.setdefault(key, []).append((gen, cpu, wall))
        self.last = {"gen": gen, "cpu_s": cpu, "wall_s": wall, "reused": False}
        return gen


class DaemonPipeline:
    """The daemon's own parts, built in-process the way server.Daemon builds them."""

    def __init__(self, data_dir: Path, n_threads: int) -> None:
        from ruvllm_edge.server.components import Components
        from ruvllm_edge.config import Config, InferenceConfig, LearningConfig
        from ruvllm_edge.inference import InferenceEngine
        from ruvllm_edge.memory.db import Database
        from ruvllm_edge.pipeline import Pipeline
        from ruvllm_edge.sessions import SessionStore

        data_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = Config(data_dir=str(data_dir), models_dir=str(ROOT / "models"),
                          inference=InferenceConfig(n_threads=n_threads, seed=42, keep_alive_s=-1),
                          learning=LearningConfig(idle_after_s=86_400.0))
        self.db = Database(data_dir / "ruvllm-edge.db", self.cfg.memory.sqlite_cache_mb)
        self.engine = InferenceEngine(self.cfg.inference, self.cfg.system, self.cfg.models_dir)
        self.comp = Components.build(self.cfg, self.db, data_dir)
        if self.comp.memory is None or self.comp.router is None:
            raise SystemExit(f"memory/router unavailable: {self.comp.memory_error}")
        self.memo = MemoEngine(self.engine)
        engine: Any = self.memo   # duck-types InferenceEngine (it wraps the real one)
        self.pipe = Pipeline(self.cfg, self.db, engine, SessionStore(self.db),
                             memory=self.comp.memory, embedder=self.comp.embedder,
                             router=self.comp.router, replay=self.comp.replay)
        self.memo.set_system_prefix(self.cfg.inference.system_prompt)

    @property
    def router(self) -> P.Router:
        return self.comp.router

    def teach(self, wl: Workload) -> dict[str, Any]:
        """Fill the memory the way a user would: memory.add, and feedback corrections."""
        from ruvllm_edge.pipeline import QueryContext, new_request_id

        mem = self.comp.memory
        t0 = time.perf_counter()
        knew = 0
        for doc in wl.documents:
            mem.add(doc, kind="document")
        for f in wl.facts:
            if f["via"] == "memory.add":
                mem.add(f["text"], kind="fact")
                continue
            r = self.pipe.query({"query": f["question"], "use_memory": False,
                                 "constraints": {"max_tokens": 24, "temperature": 0.0}},
                                QueryContext(request_id=new_request_id()))
            knew += int(f["text"].split()[-1].rstrip(".") in r["text"])
            self.pipe.feedback({"request_id": r["request_id"], "rating": 1,
                                "correction": f["text"]})
        mem.flush()
        return {"seconds": time.perf_counter() - t0, "memory": {
            k: v for k, v in mem.stats().items() if k in ("nodes", "nodes_by_kind", "archived",
                                                           "corrections", "edges")},
            "corrections_known_before": knew}

    def observe(self, q: Query) -> dict[str, Any]:
        """What the live query path sees before routing: the retrieval and the features."""
        from ruvllm_edge.pipeline import trusted_hit

        qvec = self.pipe._embed(q.query)
        assert qvec is not None   # the embedder exists: Components.build checked it
        retrieval = self.pipe._retrieve(q.query, qvec, True)
        x = self.pipe._features(q.query, qvec, retrieval, 0, 0, {})
        stats = dict(retrieval.stats) if retrieval else {}
        hit = trusted_hit(retrieval.candidates) if retrieval else None
        return {"features": x, "stats": {k: stats.get(k) for k in (
            "n_hits", "top_sim", "mean_sim", "sim_std", "best_trusted_sim", "hits_by_kind",
            "graph_density", "n_expanded", "n_candidates")},
            "trusted_hit_sim": hit.similarity if hit else None,
            "trusted_hit_correct": bool(hit and quality_of(q, hit.text) >= 0.5)}

    def answer(self, q: Query, dec: P.Decision) -> dict[str, Any]:
        """One decision's outcome through ``Pipeline.answer_with``, with its measured costs."""
        self.memo.last = None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out = self.pipe.answer_with(q.query, dec)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        g = self.memo.last
        if g is None:             # answered from memory: nothing generated
            latency, prompt, finish, reused = 0.0, 0, "memory", False
        else:
            gen = g["gen"]
            if g["reused"]:       # charge the generation as if it had run here
                cpu += g["cpu_s"]
                wall += g["wall_s"]
            prompt, finish, reused = gen.prompt_tokens, gen.finish_reason, g["reused"]
            # Steady state of live traffic: the shared system prompt is in the KV cache.
            latency = ((prompt - self.memo.sys_prefix) / PREFILL_TOK_S
                       + gen.completion_tokens / DECODE_TOK_S)
        return {"text": out.text, "tokens": out.completion_tokens, "prompt_tokens": prompt,
                "finish": finish, "latency_s": latency, "cpu_s": cpu, "wall_s": wall,
                "reused_generation": reused}

    def close(self) -> None:
        self.pipe.close()
        self.engine.unload()
        self.db.close()


def run_grid(items: list[Query], dp: DaemonPipeline, lcfg: LearningConfig, max_tokens: int,
             cache: dict[str, Any], prefix: str,
             checkpoint: Callable[[], None] | None = None) -> list[list[dict[str, Any]]]:
    """Every candidate decision for every query: outcome, quality, utility, CPU and wall s."""
    grid = candidate_grid(64)
    out = []
    t0 = time.perf_counter()
    for n, it in enumerate(items):
        rows = []
        for c in grid:
            key = f"{prefix}|{it.query}|{c.context_class}|{c.mode_class}|{max_tokens}"
            if key in cache:
                rows.append(cache[key])
                continue
            dec = dp.router.decision_for(c.context_class, c.mode_class, c.temperature, c.top_p,
                                         max_tokens)
            o = dp.answer(it, dec)
            q = quality_of(it, o["text"])
            row = {"context_class": c.context_class, "mode_class": c.mode_class, "quality": q,
                   "correct": q >= 0.5,
                   "utility": utility(q, o["latency_s"], o["tokens"], lcfg.utility_latency_per_s,
                                      lcfg.utility_cost_per_token),
                   **{k: v for k, v in o.items() if k != "text"}, "answer": o["text"][:300]}
            rows.append(row)
            cache[key] = row
        out.append(rows)
        if checkpoint is not None:
            checkpoint()
        print(f"  grid {n + 1}/{len(items)} [{it.category}] best "
              f"{_decision_name(_best(rows)[0])}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def _labelled(feats: list[np.ndarray], grid: list[list[dict[str, Any]]],
              idx: list[int]) -> list[ReplaySample]:
    """What the explorer would write into the replay buffer: the best decision as label."""
    out = []
    for i in idx:
        best, _ = _best(grid[i])
        out.append(ReplaySample(
            request_id=f"q{i}", features=feats[i], context_class=best.context_class,
            mode_class=best.mode_class, temperature=0.2, top_p=0.9,
            target_context=best.context_class, target_mode=best.mode_class,
            target_temperature=0.2, target_top_p=0.9, label_source="explored"))
    return out


def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    lcfg = LearningConfig()
    wl = (Workload.from_json(json.loads(Path(args.workload).read_text())) if args.workload
          else build_workload(args.seed))
    items = wl.queries[:args.max_queries]
    if args.quick:   # a smoke run: the first two queries of each category
        taken: dict[str, int] = {}
        quick = []
        for q in items:
            if taken.get(q.category, 0) < 2:
                taken[q.category] = taken.get(q.category, 0) + 1
                quick.append(q)
        items = quick
    fp = wl.fingerprint()
    cache_prefix = f"{wl.memory_fingerprint()}-{code_fingerprint()}|t{args.threads}"
    cache_path = Path(args.outcomes_cache) if args.outcomes_cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}

    def checkpoint() -> None:
        if cache_path:
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_path)

    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        dp = DaemonPipeline(Path(tmp) / "data", args.threads)
        try:
            router0 = dp.router
            taught = dp.teach(wl)
            print(f"  memory filled in {taught['seconds']:.1f} s: {taught['memory']}", flush=True)
            obs = [dp.observe(q) for q in items]
            feats = [o["features"] for o in obs]
            t0 = time.perf_counter()
            grid = run_grid(items, dp, lcfg, dp.cfg.inference.max_tokens, cache,
                            cache_prefix, checkpoint)
            grid_s = time.perf_counter() - t0
        finally:
            dp.close()
    # Two folds by topic group: every query is scored by a router that never saw its topic.
    fold_of = {g: zlib.crc32(g.encode()) % 2 for g in {it.group for it in items}}
    folds_idx = [[i for i, it in enumerate(items) if fold_of[it.group] == f] for f in (0, 1)]
    before = routing_report([(router0, folds_idx[0] + folds_idx[1])], items, feats, grid)
    # The trainer shuffles minibatches; with a few dozen labels per fold the result
    # depends on that draw, so it is repeated over several seeds and all are reported.
    runs = []
    for seed in range(args.train_seeds):
        trained: list[tuple[P.Router, list[int]]] = []
        reports = []
        for f in (0, 1):
            test_idx, train_idx = folds_idx[f], folds_idx[1 - f]
            # The daemon's path: train on the explored labels, accept only if no worse
            # on the hash-chosen held-out slice of the training split.
            tr, ho = T.split_holdout(_labelled(feats, grid, train_idx), lcfg.holdout_fraction)
            state, rep = T.train(router0.state, router0.layout, tr, ho,
                                 dataclasses.replace(T.TrainConfig.from_configs(router0.cfg, lcfg),
                                                     min_train_samples=min(16, max(1, len(tr)))),
                                 np.random.default_rng(1000 * seed + f))
            r1 = P.Router(router0.layout, router0.state, router0.cfg, version=router0.version)
            if rep.accepted:
                r1.install(state)
            trained.append((r1, test_idx))
            reports.append({k: v for k, v in rep.to_dict().items() if k != "extra"})
        runs.append((routing_report(trained, items, feats, grid), reports))
    keys = ("router_accuracy_exact", "router_accuracy_equivalent", "router_accuracy_within_tie",
            "token_reduction", "cpu_reduction", "wall_reduction")
    per_seed = [{**{k: rep[k] for k in keys},
                 "answer_accuracy": rep["router"]["answer_accuracy"], "fallbacks": rep["fallbacks"],
                 "accepted": [r["accepted"] for r in reps]} for rep, reps in runs]
    order = sorted(range(len(runs)), key=lambda i: per_seed[i]["router_accuracy_exact"])
    median_i = order[len(order) // 2]
    after, reports = runs[median_i]
    seeds_summary = {"seeds": args.train_seeds, "reported_seed": median_i,
                     "per_seed": per_seed,
                     **{f"{k}_median": float(np.median([p[k] or 0.0 for p in per_seed]))
                        for k in keys},
                     **{f"{k}_range": [float(min(p[k] or 0.0 for p in per_seed)),
                                       float(max(p[k] or 0.0 for p in per_seed))] for k in keys}}
    dist: dict[str, int] = {}
    for rows in grid:
        key = _decision_name(_best(rows)[0])
        dist[key] = dist.get(key, 0) + 1
    return {
        "workload": {
            "description": "personal edge assistant traffic: questions about facts the user "
                           "taught (ISO 3166-1 numeric, ISO 4217 and ISO 639-3 codes from "
                           "pycountry's data, half via memory.add kind=fact, half via a "
                           "rating-1 feedback correction; asked in other words), questions "
                           "answered by an added multi-sentence document (country profiles "
                           "from ISO 3166-1/3166-2), general knowledge, chat, long-form",
            "dataset": f"{PYCOUNTRY} wheel (sha256-checked, read not installed)",
            "mix": mix(items), "n_facts": len(wl.facts), "n_documents": len(wl.documents),
            "fingerprint": fp, "seed": args.seed, "outcome_cache_prefix": cache_prefix,
            "quality": {"taught_fact/document/general": "gold regex in the answer (1/0)",
                        "chat": "at least two words (1/0)",
                        "long_form": f">= {PARAGRAPH_MIN_WORDS} words and on topic (1/0)"},
            "split": "two folds by topic group (crc32); each query routed by a router "
                     "trained on the other fold's explored labels",
        },
        "pipeline": "ruvllm_edge.pipeline.Pipeline.answer_with (real retrieval, prompt "
                    "packing, answer-from-memory, generation); llama n_threads "
                    f"{args.threads}",
        "utility_latency": "modelled from token counts (uncached prompt tokens / 330 + "
                           "generated / 115 tok/s); cpu_s and wall_s are measured",
        "teach": taught, "n_queries": len(items), "folds": [len(f) for f in folds_idx],
        "grid_size": len(grid[0]) if grid else 0, "grid_seconds": grid_s,
        "generations_run": sum(1 for rows in grid for r in rows
                               if r["finish"] != "memory" and not r["reused_generation"]),
        "similarity_profile": similarity_profile(items, obs),
        "best_decision_distribution": dist,
        "initial_policy": before, "after_training": after, "training_reports": reports,
        "after_training_seeds": seeds_summary,
    }
