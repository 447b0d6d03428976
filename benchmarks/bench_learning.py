"""Learning curve from the real loop: does the daemon get better as it is used?

A real daemon (``ruvllm-edge serve``, subprocess, ipc socket) starts with an
empty memory and is fed a stream built from the development half of LoCoMo
(``locomo-dev.json``; $RUVLLM_EDGE_LOCOMO or ../shared/data; the benchmark
skips with a message when it is absent and never copies the data):

1. every conversation turn is added with ``memory.add`` (kind document,
   "<speaker> (<session date>): <text>", metadata dia_id);
2. the questions of each conversation are split once by a hash of the
   question text into a *feed* set and a disjoint *held-out* set;
3. feed questions are asked through ``query`` in a seeded order; feedback is
   simulated from the gold answer: rating = 1 + round(4 x token F1), and on a
   poor answer (F1 < 0.5) a ``correction`` carrying the gold answer;
4. every ``--learn-every`` feedback events the ``learn`` op runs the idle
   learning jobs (judge, exploration, router training with its accept gate);
5. after 0, 50, 100, 200, 400 feedback events the daemon is stopped, its data
   dir copied, and a second daemon on the copy answers the held-out questions
   (so evaluating writes nothing into the learning daemon). Quality = token F1
   against the gold answer (the LoCoMo paper's metric), the share of honest
   declines, and evidence recall@10 of ``memory.search``.

Variants (``--variants``): ``full`` (ratings + corrections + learn),
``memory_only`` (ratings + corrections, the learn op never runs: memory
learns, the router does not), ``router_only`` (ratings only, no corrections,
learn runs). At the last checkpoint of ``full`` the held-out questions are
also answered with the graph-attention ranking reset to its initial weights
(same memory, same router), so learned ranking stands beside its initial one.

Every figure is on the held-out questions (split "locomo-dev held-out
questions"); the curve's 0-event point is the baseline measured in the same
run. ``--quick`` is the smallest run (1 conversation, 20 feedback events, 8
answered / 30 searched held-out questions) and says so in the JSON; it was
meant to take ~10 minutes, and took 39 on this shared 2-core machine under
load (7-80 s per query).

Usage: python benchmarks/bench_learning.py [--quick] [--variants full,memory_only]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import RESULTS_DIR, BenchDaemon, pyplot, save_figure, save_results  # noqa: E402
from _datasets import locomo_path, locomo_samples, token_f1  # noqa: E402
from ruvllm_edge.learning.utility import is_decline  # noqa: E402

POOR_F1 = 0.5          # below this the simulated user sends a correction
RANKING_KEY = "ranking_params"   # memory_meta key of the learned ranking (memory/feedback.py)


def config_toml(threads: int, explore_per_run: int, explore_max_candidates: int) -> str:
    """The daemon's defaults, except: no per-client rate limit (one client adds hundreds of
    turns in a burst), the model stays loaded, learning runs only when the benchmark sends
    ``learn`` (never on its own idle timer), and exploration is bounded so a learn run
    takes seconds, not minutes, on this machine."""
    return ("[server]\nrate_limit_per_s = 10000.0\nrate_limit_burst = 10000\n"
            "[inference]\nkeep_alive_s = -1\n"
            f"n_threads = {threads}\n"
            "[learning]\nidle_after_s = 86400.0\n"
            f"explore_per_run = {explore_per_run}\n"
            f"explore_max_candidates = {explore_max_candidates}\n")


def split_questions(samples: list[dict[str, Any]], eval_per_conv: int, feed_per_conv: int,
                    seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(feed, held-out): one question is in one set only, chosen by a hash of its text
    (fixed across seeds: the held-out set never changes); the seed orders the feed."""
    feed, held = [], []
    for s in samples:
        qs = [dict(q, sample_id=s["sample_id"]) for q in s["qa"]]
        h = [q for q in qs if zlib.crc32(q["question"].encode()) % 4 == 0][:eval_per_conv]
        hq = {q["question"] for q in h}
        f = [q for q in qs if q["question"] not in hq]
        random.Random(seed * 1000 + len(feed)).shuffle(f)
        held += h
        feed += f[:feed_per_conv]
    random.Random(seed).shuffle(feed)
    return feed, held


def add_turns(c: Any, samples: list[dict[str, Any]]) -> dict[int, str]:
    """memory.add every turn; returns node id -> "<sample>/<dia_id>"."""
    ids: dict[int, str] = {}
    for s in samples:
        for t in s["turns"]:
            r = c.memory_add(f"{t['speaker']} ({t['date']}): {t['text']}", kind="document",
                             metadata={"dia_id": t["dia_id"], "sample": s["sample_id"]})
            for i in r["ids"]:
                ids[int(i)] = f"{s['sample_id']}/{t['dia_id']}"
    return ids


def evaluate(d: BenchDaemon, held: list[dict[str, Any]], node_turn: dict[int, str],
             n_generate: int, max_tokens: int) -> dict[str, Any]:
    """On daemon ``d``: memory.search recall@10 for every held-out question (cheap), and
    the answer's token F1 / declines / latency for the first ``n_generate`` of them."""
    rows = []
    with d.client(timeout_s=600) as c:
        for i, q in enumerate(held):
            hits = c.memory_search(q["question"], k=10)
            got = {node_turn.get(int(h["id"])) for h in hits}
            ev = {f"{q['sample_id']}/{e}" for e in q["evidence"]}
            row: dict[str, Any] = {"question": q["question"], "category": q["category"],
                                   "recall_at_10": len(ev & got) / len(ev) if ev else None}
            if i < n_generate:
                r = c.query(q["question"], max_tokens=max_tokens)
                row.update({"f1": token_f1(r["text"], q["answer"]),
                            "declined": is_decline(r["text"], r.get("finish_reason", "")),
                            "mode": (r.get("routing_info") or {}).get("mode"),
                            "latency_ms": r["latency_ms"]["total"], "answer": r["text"][:160]})
            rows.append(row)
    gen = [r for r in rows if "f1" in r]
    rec = [r["recall_at_10"] for r in rows if r["recall_at_10"] is not None]
    return {"n_answered": len(gen), "n_searched": len(rows),
            "f1_mean": statistics.fmean(r["f1"] for r in gen) if gen else None,
            "declined_share": sum(r["declined"] for r in gen) / max(len(gen), 1),
            "recall_at_10": statistics.fmean(rec) if rec else None,
            "latency_ms_p50": statistics.median(r["latency_ms"] for r in gen) if gen else None,
            "modes": {m: sum(r.get("mode") == m for r in gen)
                      for m in sorted({str(r.get("mode")) for r in gen})},
            "rows": rows}


def snapshot(src: Path, dst: Path, reset_ranking: bool = False) -> Path:
    """A copy of a stopped daemon's data dir; optionally with the ranking at its initial
    weights (the stored parameters removed, so the daemon loads ranking.initial_params)."""
    shutil.copytree(src, dst)
    for sock in dst.glob("*.sock"):
        sock.unlink()
    if reset_ranking:
        from ruvllm_edge.memory.db import Database
        db = Database(dst / "ruvllm-edge.db", 16)
        try:
            with db.atomic() as conn:
                conn.execute("DELETE FROM memory_meta WHERE key = ?", (RANKING_KEY,))
        finally:
            db.close()
    return dst


def run_variant(name: str, args: argparse.Namespace, samples: list[dict[str, Any]],
                feed: list[dict[str, Any]], held: list[dict[str, Any]], tmp: Path,
                toml: str) -> dict[str, Any]:
    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    learn = name != "memory_only"
    corrections = name != "router_only"
    d = BenchDaemon(tmp / f"{name}-data", Path(args.models_dir), toml)
    curve: list[dict[str, Any]] = []
    learn_reports: list[dict[str, Any]] = []
    feed_rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"variant": name, "learn_op": learn, "corrections": corrections}
    t0 = time.perf_counter()

    def checkpoint(events: int, last: bool) -> None:
        d.stop()
        ev_dir = snapshot(d.data, tmp / f"{name}-eval-{events}")
        e = BenchDaemon(ev_dir, Path(args.models_dir), toml)
        try:
            e.start()
            res = evaluate(e, held, node_turn, args.eval_generate, args.max_tokens)
        finally:
            e.stop()
        point = {"events": events, **{k: v for k, v in res.items() if k != "rows"},
                 "split": "locomo-dev held-out questions"}
        curve.append(point)
        print(f"  [{name}] after {events:>3} feedback events: F1 {res['f1_mean']:.3f}  "
              f"declined {res['declined_share']:.2f}  recall@10 {res['recall_at_10']:.3f}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if last:
            out["final_rows"] = res["rows"]
            if name == "full":
                init_dir = snapshot(d.data, tmp / f"{name}-eval-init-ranking", reset_ranking=True)
                e = BenchDaemon(init_dir, Path(args.models_dir), toml)
                try:
                    e.start()
                    ri = evaluate(e, held, node_turn, args.eval_generate, args.max_tokens)
                finally:
                    e.stop()
                out["ranking"] = {
                    "split": "locomo-dev held-out questions",
                    "events": events,
                    "learned": {k: v for k, v in res.items() if k != "rows"},
                    "initial_weights": {k: v for k, v in ri.items() if k != "rows"}}
                print(f"  [{name}] same memory and router, initial ranking weights: "
                      f"F1 {ri['f1_mean']:.3f}  recall@10 {ri['recall_at_10']:.3f}", flush=True)
        if not last:
            d.start()

    try:
        d.start()
        with d.client(timeout_s=600) as c:
            node_turn = add_turns(c, samples)
        out["memory_nodes_added"] = len(node_turn)
        out["add_seconds"] = time.perf_counter() - t0
        print(f"  [{name}] {len(node_turn)} turns added in {out['add_seconds']:.0f} s",
              flush=True)
        events = 0
        if 0 in checkpoints:
            checkpoint(0, last=checkpoints[-1] == 0)
        for q in feed:
            if events >= checkpoints[-1]:
                break
            with d.client(timeout_s=600) as c:
                r = c.query(q["question"], max_tokens=args.max_tokens)
                f1 = token_f1(r["text"], q["answer"])
                rating = 1 + round(4 * f1)
                corr = q["answer"] if (corrections and f1 < POOR_F1) else None
                c.feedback(r["request_id"], rating=rating, correction=corr)
                feed_rows.append({"f1": f1, "rating": rating, "corrected": corr is not None,
                                  "declined": is_decline(r["text"], r.get("finish_reason", ""))})
                events += 1
                if learn and events % args.learn_every == 0:
                    time.sleep(1.0)   # let the feedback finish applying: a request pre-empts
                    lr = c.learn(wait=True, timeout_s=1800)
                    job = (lr.get("jobs") or {}).get("router_training", {})
                    tr = (job.get("report") or {}).get("train", {})
                    learn_reports.append({
                        "events": events, "status": job.get("status"),
                        "duration_s": job.get("duration_s"),
                        "explored": (job.get("report") or {}).get("explored"),
                        "accepted": tr.get("accepted"), "reason": tr.get("reason"),
                        "n_train": tr.get("n_train"), "n_holdout": tr.get("n_holdout")})
            if events in checkpoints:
                checkpoint(events, last=events == checkpoints[-1])
        if curve and curve[-1]["events"] != events:   # the feed ran out before the last point
            checkpoint(events, last=True)
    finally:
        d.stop()
    out.update({"curve": curve, "learn_runs": learn_reports,
                "feed": {"events": len(feed_rows),
                         "f1_mean": statistics.fmean(r["f1"] for r in feed_rows)
                         if feed_rows else None,
                         "corrections": sum(r["corrected"] for r in feed_rows),
                         "declined": sum(r["declined"] for r in feed_rows)},
                "seconds": time.perf_counter() - t0})
    return out


def plot(res: dict[str, Any], path: Path) -> bool:
    """The curve as a PNG next to the JSON (matplotlib is a dev extra: skipped without it)."""
    plt = pyplot()
    if plt is None:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, v in res["variants"].items():
        xs = [p["events"] for p in v["curve"]]
        a1.plot(xs, [p["f1_mean"] for p in v["curve"]], marker="o", label=name)
        a2.plot(xs, [p["recall_at_10"] for p in v["curve"]], marker="o", label=name)
    rk = res["variants"].get("full", {}).get("ranking")
    if rk:
        a1.scatter([rk["events"]], [rk["initial_weights"]["f1_mean"]], marker="x", color="k",
                   label="full, initial ranking weights")
        a2.scatter([rk["events"]], [rk["initial_weights"]["recall_at_10"]], marker="x",
                   color="k", label="full, initial ranking weights")
    a1.set(xlabel="feedback events", ylabel="token F1 (held-out questions)",
           title="answer quality")
    a2.set(xlabel="feedback events", ylabel="evidence recall@10", title="memory.search")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"ruvllm-edge learning curve, LoCoMo dev held-out questions "
                 f"({'quick mode; ' if res['quick'] else ''}{res['conversations']} "
                 f"conversation(s); F1 on {res['eval_generate']}, recall on {res['n_heldout']})",
                 fontsize=10)
    save_figure(plt, fig, path)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 conversation, 8 answered / 30 searched held-out questions, "
                         "checkpoints 0,10,20 (the smallest run; 39 min on a loaded 2-core machine)")
    ap.add_argument("--conversations", type=int, default=5)
    ap.add_argument("--eval-per-conv", type=int, default=12)
    ap.add_argument("--eval-generate", type=int, default=60,
                    help="held-out questions answered (all are searched)")
    ap.add_argument("--max-tokens", type=int, default=48,
                    help="answer budget (LoCoMo answers are a few words)")
    ap.add_argument("--feed-per-conv", type=int, default=100)
    ap.add_argument("--checkpoints", default="0,50,100,200,400")
    ap.add_argument("--learn-every", type=int, default=25)
    ap.add_argument("--variants", default="full,memory_only,router_only")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--explore-per-run", type=int, default=4)
    ap.add_argument("--explore-max-candidates", type=int, default=6)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--out", default=str(RESULTS_DIR / "bench_learning.json"))
    args = ap.parse_args()
    if args.quick:
        args.conversations, args.eval_per_conv, args.eval_generate = 1, 30, 8
        args.checkpoints, args.learn_every, args.max_tokens = "0,10,20", 10, 32
        args.explore_per_run, args.explore_max_candidates = 1, 3
        if args.variants == ap.get_default("variants"):
            args.variants = "full"
    path = locomo_path()
    if not path.is_file():
        print("LoCoMo dev data not found (set RUVLLM_EDGE_LOCOMO or put locomo-dev.json in "
              "../shared/data/); skipping bench_learning")
        return 0
    samples = locomo_samples(path)[:args.conversations]
    feed, held = split_questions(samples, args.eval_per_conv, args.feed_per_conv, args.seed)
    toml = config_toml(args.threads, args.explore_per_run, args.explore_max_candidates)
    res: dict[str, Any] = {
        "dataset": f"LoCoMo development half ({path.name}: {', '.join(s['sample_id'] for s in samples)}"
                   "), categories 1-4; read in place, not copied",
        "split": {"heldout": "questions with crc32(question) % 4 == 0, at most "
                             f"{args.eval_per_conv} per conversation; never fed, never corrected",
                  "feed": "the other questions of the same conversations, seeded order"},
        "quick": args.quick, "conversations": len(samples), "seed": args.seed, "n_heldout": len(held), "n_feed": len(feed),
        "checkpoints": args.checkpoints, "learn_every": args.learn_every,
        "max_tokens": args.max_tokens, "eval_generate": min(args.eval_generate, len(held)),
        "explore_per_run": args.explore_per_run,
        "explore_max_candidates": args.explore_max_candidates,
        "daemon_config": toml,
        "feedback_model": f"rating = 1 + round(4 * token F1); correction = gold answer when "
                          f"F1 < {POOR_F1}",
        "quality": "token F1 against the gold answer (LoCoMo's metric), mean over held-out "
                   "questions; declined_share = honest declines; recall_at_10 = share of the "
                   "evidence turns among memory.search's top 10",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "variants": {}}
    print(f"bench_learning: {len(samples)} conversations, {len(feed)} feed / {len(held)} "
          f"held-out questions{' (quick mode)' if args.quick else ''}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
            res["variants"][name] = run_variant(name, args, samples, feed, held, Path(tmp), toml)
            shutil.rmtree(Path(tmp), ignore_errors=True)
            Path(tmp).mkdir(exist_ok=True)
    res["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = Path(args.out)
    if args.quick and out == Path(ap.get_default("out")):
        out = out.with_name("bench_learning.quick.json")
    res["png"] = out.with_suffix(".png").name if plot(res, out.with_suffix(".png")) else None
    save_results(res, out, echo=False)
    for name, v in res["variants"].items():
        pts = ", ".join(f"{p['events']}: {p['f1_mean']:.3f}" for p in v["curve"])
        print(f"{name}: F1 by feedback events (held-out) {pts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
