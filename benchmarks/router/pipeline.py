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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ruvllm_edge.config import LearningConfig
from ruvllm_edge.learning import trainer as T
from ruvllm_edge.learning.explore import candidate_grid
from ruvllm_edge.learning.utility import ReplaySample, honest_utility, is_decline, outcome_kind
from ruvllm_edge.router import policy as P

from .report import _best, _decision_name, routing_report, similarity_profile
from _datasets import PYCOUNTRY

from .workload import (PARAGRAPH_MIN_WORDS, Query, Workload, build_split_workload, mix,
                       quality_of)

ROOT = Path(__file__).resolve().parent.parent.parent
PREFILL_TOK_S = 330.0   # reference.md, SmolLM2-135M q4_1 on this machine, 2 threads
DECODE_TOK_S = 115.0

# The source files an outcome depends on: a change to any of them makes cached
# outcomes stale (the cache key includes their hash). An outcome row holds the
# answer (pipeline, answer/*, memory/*, ranking, inference, embedding, config,
# router/policy's decision_for, server/components which builds them) and its
# quality and utility (learning/utility, learning/explore, the workload's
# checks): listing them one by one missed config.py, router/policy.py and
# learning/explore.py before, so every module of the package is hashed, with
# the SQL migrations and the benchmark files that compute the outcome.
OUTCOME_SOURCES = ("ruvllm_edge/**/*.py", "ruvllm_edge/memory/migrations/*.sql",
                   "benchmarks/router/pipeline.py", "benchmarks/router/workload.py",
                   "benchmarks/_datasets.py")


def code_fingerprint() -> str:
    h = hashlib.sha256()
    for pattern in OUTCOME_SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if "__pycache__" in path.parts:
                continue
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
            declined = is_decline(o["text"])
            # answered in memory mode with a stored record (nothing generated): if it does
            # not answer, it pays the honest utility's risk cost
            from_memory = c.mode_class == P.MEMORY and o["finish"] == "memory"
            row = {"context_class": c.context_class, "mode_class": c.mode_class, "quality": q,
                   "correct": q >= 0.5 and not declined, "declined": declined,
                   "kind": outcome_kind(q, declined),
                   "utility": honest_utility(q, o["latency_s"], o["tokens"],
                                             lcfg.utility_latency_per_s,
                                             lcfg.utility_cost_per_token, declined=declined,
                                             from_memory=from_memory),
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


def _quick_items(items: list[Query], per: int) -> list[Query]:
    """A smoke run: the first ``per`` queries of each (split, category)."""
    taken: dict[tuple[str, str], int] = {}
    out = []
    for q in items:
        k = (q.split, q.category)
        if taken.get(k, 0) < per:
            taken[k] = taken.get(k, 0) + 1
            out.append(q)
    return out


def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """Outcomes of every decision for every query of both splits; the router's priors and
    training use the dev split only, and every reported figure says its split."""
    from ruvllm_edge.config import RouterConfig
    from ruvllm_edge.learning import curriculum as C

    lcfg = LearningConfig()
    wl = (Workload.from_json(json.loads(Path(args.workload).read_text())) if args.workload
          else build_split_workload(args.seed))
    items = wl.queries[:args.max_queries]
    if args.quick:
        items = _quick_items(items, getattr(args, "quick_per_category", 2))
    fp = wl.fingerprint()
    cache_prefix = f"{wl.memory_fingerprint()}-{code_fingerprint()}|t{args.threads}"
    cache_path = Path(args.outcomes_cache) if args.outcomes_cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else {}

    def checkpoint() -> None:
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
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
    dev_idx = [i for i, it in enumerate(items) if it.split == "dev"]
    held_idx = [i for i, it in enumerate(items) if it.split == "heldout"]

    def tagged(rep: dict[str, Any], split: str) -> dict[str, Any]:
        return {"split": split, **rep}

    before = {"dev": tagged(routing_report([(router0, dev_idx)], items, feats, grid), "dev"),
              "heldout": tagged(routing_report([(router0, held_idx)], items, feats, grid),
                                "heldout")}
    # Seeds change what matters: the first-start curriculum's data and initial weights
    # (RouterConfig.init_seed), the order of the dev labels and the minibatch draws.
    runs = []
    for seed in range(args.train_seeds):
        rcfg = dataclasses.replace(router0.cfg, init_seed=router0.cfg.init_seed + seed)
        r_init = router0 if seed == 0 else C.initial_router(rcfg, lcfg)
        labels = _labelled(feats, grid, dev_idx)
        np.random.default_rng(seed).shuffle(labels)   # type: ignore[arg-type]
        tr, ho = T.split_holdout(labels, lcfg.holdout_fraction)
        state, rep = T.train(r_init.state, r_init.layout, tr, ho,
                             dataclasses.replace(T.TrainConfig.from_configs(rcfg, lcfg),
                                                 min_train_samples=min(16, max(1, len(tr)))),
                             np.random.default_rng(1000 + seed))
        r1 = P.Router(r_init.layout, r_init.state, rcfg, version=r_init.version)
        if rep.accepted:
            r1.install(state)
        runs.append((tagged(routing_report([(r1, held_idx)], items, feats, grid), "heldout"),
                     tagged(routing_report([(r_init, held_idx)], items, feats, grid), "heldout"),
                     {k: v for k, v in rep.to_dict().items() if k != "extra"}
                     | {"gate": rep.extra.get("gate")}))
    keys = ("router_accuracy_exact", "router_accuracy_equivalent", "router_accuracy_within_tie",
            "token_reduction", "cpu_reduction", "wall_reduction")
    per_seed = [{"seed": i, "init_seed": router0.cfg.init_seed + i,
                 **{k: rep[k] for k in keys},
                 "answer_accuracy": rep["router"]["answer_accuracy"],
                 "initial_policy_exact": init["router_accuracy_exact"],
                 "fallbacks": rep["fallbacks"], "accepted": tr_rep["accepted"]}
                for i, (rep, init, tr_rep) in enumerate(runs)]
    order = sorted(range(len(runs)), key=lambda i: per_seed[i]["router_accuracy_exact"])
    median_i = order[len(order) // 2]
    after, _, train_report = runs[median_i]
    seeds_summary = {"split": "heldout", "seeds": args.train_seeds, "reported_seed": median_i,
                     "per_seed": per_seed,
                     **{f"{k}_median": float(np.median([p[k] or 0.0 for p in per_seed]))
                        for k in keys},
                     **{f"{k}_range": [float(min(p[k] or 0.0 for p in per_seed)),
                                       float(max(p[k] or 0.0 for p in per_seed))] for k in keys}}
    dist: dict[str, dict[str, int]] = {}
    unanswerable: dict[str, int] = {}
    for i, rows in enumerate(grid):
        key = _decision_name(_best(rows)[0])
        sp = items[i].split
        dist.setdefault(sp, {})[key] = dist.setdefault(sp, {}).get(key, 0) + 1
        if not any(r["correct"] for r in rows):
            unanswerable[sp] = unanswerable.get(sp, 0) + 1
    return {
        "workload": {
            "description": "personal edge assistant traffic: questions about facts the user "
                           "taught (ISO 3166-1 numeric, ISO 4217 and ISO 639-3 codes from "
                           "pycountry's data, half via memory.add kind=fact, half via a "
                           "rating-1 feedback correction), questions answered by an added "
                           "document (country profiles from ISO 3166-1/3166-2), general "
                           "knowledge, chat, long-form, and hard negatives (same entity, other "
                           "attribute; same attribute, untaught entity)",
            "dataset": f"{PYCOUNTRY} wheel (sha256-checked, read not installed)",
            "mix": {"dev": mix([items[i] for i in dev_idx]),
                    "heldout": mix([items[i] for i in held_idx])},
            "n_facts": len(wl.facts), "n_documents": len(wl.documents),
            "fingerprint": fp, "seed": args.seed, "outcome_cache_prefix": cache_prefix,
            "outcome_cache_sources": list(OUTCOME_SOURCES),
            "quality": {"taught_fact/document/general/neg_*": "gold regex in the answer (1/0)",
                        "chat": "at least two words (1/0)",
                        "long_form": f">= {PARAGRAPH_MIN_WORDS} words and on topic (1/0)"},
            "split": "dev = the queries the first-start thresholds were calibrated on "
                     "(build_workload(7)) plus hard negatives on their entities: router labels "
                     "come from dev only; heldout = other entities, phrasings not in the "
                     "templates, other general/chat/long-form items, own hard negatives: "
                     "reported, never fitted or trained on",
            "quick": bool(args.quick),
        },
        "pipeline": "ruvllm_edge.pipeline.Pipeline.answer_with (real retrieval, prompt "
                    "packing, answer-from-memory, generation); llama n_threads "
                    f"{args.threads}",
        "utility": "learning.utility.honest_utility: correct > honest decline > wrong; a "
                   "memory-mode reply that does not answer pays MEMORY_RISK_COST; latency "
                   "modelled from token counts (uncached prompt tokens / 330 + generated / "
                   "115 tok/s); cpu_s and wall_s are measured",
        "teach": taught, "n_queries": len(items),
        "n_dev": len(dev_idx), "n_heldout": len(held_idx),
        "unanswerable": unanswerable,
        "grid_size": len(grid[0]) if grid else 0, "grid_seconds": grid_s,
        "generations_run": sum(1 for rows in grid for r in rows
                               if r["finish"] != "memory" and not r["reused_generation"]),
        "similarity_profile": {"dev": {"split": "dev", **similarity_profile(
            [items[i] for i in dev_idx], [obs[i] for i in dev_idx])},
            "heldout": {"split": "heldout", **similarity_profile(
                [items[i] for i in held_idx], [obs[i] for i in held_idx])}},
        "best_decision_distribution": dist,
        "initial_policy": before, "after_training": after, "training_report": train_report,
        "after_training_seeds": seeds_summary,
    }
