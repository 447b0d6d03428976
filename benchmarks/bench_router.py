"""Router benchmark: decision latency, model size, forgetting, and routing on the real model.

Prints every figure and saves them to benchmarks/results/bench_router.json.
This file is the command line; the sections live in benchmarks/router/:
latency.py (1, 2), forgetting.py (3), workload.py and pipeline.py (4, the
workload and its run through the daemon's pipeline), report.py (accuracy and
cost against always-max and the oracle, and the printout).

Sections
1. latency   - p50/p90 of features + decision (the production path) against
               the numpy reference of the same maths, measured in this run.
2. size      - the deployable model (CSR W + float32 rest) and the full
               training-state file.
3. forgetting - synthetic and said so (benchmarks/router/forgetting.py): task
               A = "household" traffic, task B = "developer" traffic, an input
               shift and a rule shift; run through the daemon's own
               ReplayBuffer (SQLite), RouterLearningJob and accept gate via
               IdleScheduler.run_now, 20 idle runs while B arrives (quick: 4),
               against the unprotected optimiser and the old fixed gate.
4. pipeline  - the daemon's real query path, built in-process as server.Daemon
               builds it (Config, Database, InferenceEngine, SessionStore,
               Components.build, Pipeline). The memory is filled the way a
               user fills it (memory.add; a logged query plus a rating-1
               feedback correction) and every query is answered under each
               decision of the explorer's grid by ``Pipeline.answer_with``
               (real retrieval, prompt packing, answer-from-memory,
               generation). The workload (see ``build_workload``) mixes
               questions about taught facts (ISO codes from pycountry's data
               files), about added documents, general knowledge, chat and
               long-form requests. Reports router accuracy (exact best,
               equally good, within the tie epsilon; and on the queries some
               decision answers), answer accuracy, and generated tokens /
               CPU / wall seconds against always-max settings (k=16, long)
               and the oracle, for the start-up policy and after training
               (two folds by topic, the real trainer and accept gate), plus
               the real similarity distributions the curriculum is
               calibrated to. Outcomes are cached in
               benchmarks/.cache/bench_router_outcomes.json keyed by the
               memory contents and the hash of the source files an outcome
               depends on, so re-runs only answer what changed.
               ``--workload FILE`` replaces the built-in workload
               (``Workload.to_json`` format).
               Splits (issue 10): the queries the first-start thresholds were
               calibrated on, plus hard negatives on their entities, are the
               *dev* split; router labels come from dev only. The *heldout*
               split (other entities, phrasings not in the templates, other
               general/chat/long-form items, its own hard negatives) is what
               the figures are reported on; every figure names its split.
               Utility: learning.utility.honest_utility (a wrong answer never
               beats an honest decline; a memory-mode reply that does not
               answer pays a risk cost). Training seeds change the curriculum
               (init_seed), the label order and the minibatches.

Usage: python benchmarks/bench_router.py [--quick] [--skip-pipeline]
       [--skip-forgetting] [--workload FILE] [--max-queries N]
       [--outcomes-cache FILE] [--threads N] [--seed N] [--train-seeds N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import RESULTS_DIR, save_results  # noqa: E402
from router import forgetting, latency, pipeline, report  # noqa: E402
from ruvllm_edge.config import LearningConfig, RouterConfig  # noqa: E402
from ruvllm_edge.learning import curriculum as C  # noqa: E402

RESULTS = RESULTS_DIR / "bench_router.json"
CACHE_FILE = ROOT / "benchmarks" / ".cache" / "bench_router_outcomes.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and updates")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-forgetting", action="store_true")
    ap.add_argument("--forgetting-runs", type=int, default=0,
                    help="idle training runs while task B arrives (default 20, quick 4)")
    ap.add_argument("--quick-per-category", type=int, default=2,
                    help="--quick: queries per (split, category)")
    ap.add_argument("--workload", default="")
    ap.add_argument("--max-queries", type=int, default=10_000)
    ap.add_argument("--outcomes-cache", default=str(CACHE_FILE),
                    help="JSON of every (query, decision) outcome; re-runs reuse it ('' = off)")
    ap.add_argument("--threads", type=int, default=1, help="llama n_threads (1 on a busy box)")
    ap.add_argument("--seed", type=int, default=7, help="workload sampling seed")
    ap.add_argument("--train-seeds", type=int, default=3,
                    help="training runs (minibatch seeds) per fold; the median one is reported")
    ap.add_argument("--out", default="",
                    help=f"default {RESULTS.relative_to(ROOT)}; a --quick run goes to the temp dir")
    args = ap.parse_args()

    res: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                       "python": platform.python_version()},
                           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    router = C.initial_router(RouterConfig(), LearningConfig())
    res["init_seconds"] = time.perf_counter() - t0
    print(f"router init (curriculum): {res['init_seconds']:.2f} s")

    res["latency"] = latency.bench_latency(router, 2000 if args.quick else 20000)
    res["size"] = latency.size_figures(router)
    report.print_latency(res["latency"], res["size"])
    if not args.skip_forgetting:
        print("forgetting (synthetic tasks, see the docstring):")
        res["forgetting"] = forgetting.bench_forgetting(
            args.forgetting_runs or (4 if args.quick else 20),
            tuple(range(1, 1 + (1 if args.quick else args.train_seeds))))
    if not args.skip_pipeline:
        print("routing on the real daemon pipeline:")
        res["pipeline"] = pipeline.bench_pipeline(args)
        report.print_pipeline(res["pipeline"])
    res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = Path(args.out or (Path(tempfile.gettempdir()) / "bench_router.quick.json" if args.quick
                            else RESULTS))
    if not args.quick:
        report.carry_over(res, out, ("forgetting", "pipeline"))
        if "n_heldout" not in res.get("pipeline", {"n_heldout": 0}):
            res.pop("pipeline")   # from before the dev/heldout splits and the honest utility
            res["carried_over"] = [c for c in res.get("carried_over", [])
                                   if not c.startswith("pipeline")]
    save_results(res, out, echo=False)   # per-query decisions: the lines above summarise


if __name__ == "__main__":
    main()
