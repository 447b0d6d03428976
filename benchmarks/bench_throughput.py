"""Throughput from one local app: unique memory.search/s and answers from memory/s.

Issue 12, item 3. A real daemon (``ruvllm-edge serve``) on a fresh data dir
with the default config, a few hundred notes added, then one pipelined DEALER
client keeping ``--in-flight`` requests outstanding:

1. ``memory.search`` with a unique query string each time (the embedding
   cache cannot help), and the cached case (a small set of queries repeated);
2. ``query`` for questions answered straight from a user record (the answer
   policy quotes it: finish_reason "memory", plan "answer", no generation);
3. the same against the old defaults in the same run, interleaved repeat by
   repeat: rate limit 50/s with burst 100, ``max_queue`` 16, no fast lane
   (memory reads on the single ``aux`` thread, queries on ``gen``); and
   against the new limits with the old lanes (``fast_workers = 0``), which
   shows what the fast lane and the embedding batches add on their own.

A refused request (``rate_limited`` or ``busy``) is counted and sent again
after its ``retry_after_ms``, as the examples do; the rate counts completed
requests only. Medians over ``--repeats``.

Usage: python benchmarks/bench_throughput.py [--quick] [--notes 300] [--repeats 3]
``measure(models_dir, ...)`` is the importable entry point (bench_e2e.py).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import msgpack
import psutil
import zmq

from _common import ROOT, BenchDaemon, pct, save_results

from ruvllm_edge import protocol  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "bench_throughput.json"
OLD_SERVER = {"max_queue": 16, "rate_limit_per_s": 50.0, "rate_limit_burst": 100,
              "fast_workers": 0}
SERVER_KEYS = ("max_queue", "rate_limit_per_s", "rate_limit_burst", "fast_workers")
ITEMS = ["kayak", "ladder", "drill", "tent", "bicycle", "lantern", "toolbox", "guitar",
         "telescope", "sewing machine", "camera", "printer", "heater", "fan", "globe", "vase"]
PLACES = ["the garage", "the attic", "shed four", "the cellar", "the hallway closet",
          "the spare room", "the loft", "the workshop"]
# Ways to ask for a gate code: unique question strings without numbers that
# would match other notes (the embedding cache must not answer them).
ASK = ["What is the gate code for unit {u}?", "What's the gate code for unit {u}?",
       "Which gate code does unit {u} have?", "What gate code does unit {u} use?",
       "Do you know the gate code for unit {u}?", "what is the gate code of unit {u}",
       "Gate code for unit {u}?", "Remind me of the gate code for unit {u}.",
       "What was the gate code for unit {u}?", "I need the gate code for unit {u}."]
GOAL = {"unique_search_per_s": 300, "answers_from_memory_per_s": 100}


def edge_toml(server: dict[str, Any] | None) -> str:
    """config/edge.toml with ``server`` keys set; None keeps the keys this part changed
    at config.py's defaults (the shipped edge.toml must not pin them lower)."""
    text = (ROOT / "config" / "edge.toml").read_text()
    text = "\n".join(line for line in text.splitlines()
                     if not re.match(rf"\s*({'|'.join(SERVER_KEYS)})\s*=", line))
    text = text.replace("preload = false", "preload = true")
    if server:
        extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in server.items())
        text = text.replace("[server]\n", "[server]\n" + extra, 1)
    return text


def notes(n: int) -> list[dict[str, Any]]:
    """``n`` distinct user notes: where things are, and codes (the quote questions)."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append({"text": f"The gate code for unit {i} is {1000 + 7 * i}.", "kind": "fact"})
        else:
            out.append({"text": f"The {ITEMS[i % len(ITEMS)]} number {i} is stored in "
                                f"{PLACES[i % len(PLACES)]}.", "kind": "document"})
    return out


class Pipelined:
    """One DEALER keeping ``in_flight`` requests outstanding; refusals are retried."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.n = 0

    def run(self, make: Callable[[int], tuple[str, dict[str, Any]]], total: int,
            in_flight: int, check: Callable[[dict[str, Any]], bool] | None = None,
            timeout_s: float = 120.0, pid: int | None = None) -> dict[str, Any]:
        """Send ``total`` requests (``make(i)`` -> op, args), ``in_flight`` at a time.

        With the daemon's ``pid``, also its CPU time per request: on a shared,
        noisy machine that is the figure that does not depend on the neighbours.
        """
        proc = psutil.Process(pid) if pid else None
        cpu0 = sum(proc.cpu_times()[:2]) if proc else 0.0
        pending: dict[str, tuple[int, float]] = {}      # id -> (i, sent at)
        retry: list[tuple[float, int]] = []             # (due, i)
        lat_ms: list[float] = []
        refused = {"rate_limited": 0, "busy": 0}
        errors: dict[str, int] = {}
        bad = 0
        next_i = done = 0
        t0 = time.perf_counter()
        end = time.monotonic() + timeout_s

        def send(i: int) -> None:
            self.n += 1
            rid = f"r{self.n}"
            op, args = make(i)
            self.sock.send(protocol.pack(protocol.make_request(rid, op, args)))
            pending[rid] = (i, time.perf_counter())

        while done < total:
            if time.monotonic() > end:
                raise SystemExit(f"timed out with {done}/{total} done")
            now = time.monotonic()
            retry.sort()
            while retry and retry[0][0] <= now and len(pending) < in_flight:
                send(retry.pop(0)[1])
            while next_i < total and len(pending) < in_flight:
                send(next_i)
                next_i += 1
            wait_ms = 50 if not retry else max(0, int((retry[0][0] - now) * 1000))
            if not self.sock.poll(min(wait_ms, 50) if pending else min(wait_ms, 5)):
                continue
            while True:
                try:
                    data = self.sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = msgpack.unpackb(data, raw=False)
                if "ok" not in msg:
                    continue                              # a stream event
                i, sent = pending.pop(msg["id"])
                if not msg["ok"]:
                    code = msg["error"]["code"]
                    if code in refused:
                        refused[code] += 1
                        due = time.monotonic() + msg["error"]["details"]["retry_after_ms"] / 1000
                        retry.append((due, i))
                        continue
                    errors[code] = errors.get(code, 0) + 1
                elif check is not None and not check(msg["result"]):
                    bad += 1
                lat_ms.append((time.perf_counter() - sent) * 1000)
                done += 1
        dt = time.perf_counter() - t0
        cpu_ms = (sum(proc.cpu_times()[:2]) - cpu0) * 1000 / total if proc else None
        return {"per_s": round(total / dt, 1), "seconds": round(dt, 3),
                "daemon_cpu_ms_per_request": round(cpu_ms, 2) if cpu_ms is not None else None,
                "p50_ms": round(pct(lat_ms, 50), 2), "p99_ms": round(pct(lat_ms, 99), 2),
                "refused": refused, "errors": errors, "unexpected": bad}

    def close(self) -> None:
        self.sock.close(0)


def from_memory(r: dict[str, Any]) -> bool:
    """Answered from a user record with no generation (the quote path)."""
    return (r["finish_reason"] in ("memory", "stop") and r["context"]["plan"] == "answer"
            and r["usage"]["completion_tokens"] == 0)


def one_round(endpoint: str, tag: str, searches: int, answers: int, in_flight: int,
              n_notes: int, rep: int = 0, pid: int | None = None) -> dict[str, Any]:
    """Unique searches, cached searches, answers from memory: one pass on one daemon."""
    c = Pipelined(endpoint)
    try:
        unique = c.run(lambda i: ("memory.search", {
            "query": f"where is the {ITEMS[i % len(ITEMS)]} number {i} {tag}", "k": 10}),
            searches, in_flight, pid=pid)
        hot = [f"where do I keep the {it}" for it in ITEMS[:8]]
        c.run(lambda i: ("memory.search", {"query": hot[i % len(hot)]}), len(hot), 1)  # warm
        cached = c.run(lambda i: ("memory.search", {"query": hot[i % len(hot)], "k": 10}),
                       searches, in_flight, pid=pid)
        units = list(range(0, n_notes, 2))

        def ask(i: int) -> tuple[str, dict[str, Any]]:
            j = i + rep * answers                 # each repeat asks other strings
            u = units[j % len(units)]
            return "query", {"query": ASK[(j // len(units)) % len(ASK)].format(u=u)}

        stages: list[dict[str, float]] = []

        def check(r: dict[str, Any]) -> bool:
            stages.append(r["latency_ms"])
            return from_memory(r)

        answered = c.run(ask, answers, in_flight, check=check, pid=pid)
        # Where an answer's time goes, as the daemon timed it (ms, median; "generation"
        # is the answer policy and the quote here, "total" excludes the queue wait).
        answered["stages_ms"] = {k: round(statistics.median(x.get(k, 0.0) for x in stages), 2)
                                 for k in stages[0]} if stages else {}
    finally:
        c.close()
    return {"unique_search": unique, "cached_search": cached, "answers_from_memory": answered}


def med(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    xs = [r[key] for r in rounds]
    refused = {code: sum(x["refused"][code] for x in xs) for code in xs[0]["refused"]}
    errors: dict[str, int] = {}
    for x in xs:
        for k, v in x["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return {"per_s_median": statistics.median(x["per_s"] for x in xs),
            "per_s_runs": [x["per_s"] for x in xs],
            "p50_ms_median": statistics.median(x["p50_ms"] for x in xs),
            "p99_ms_median": statistics.median(x["p99_ms"] for x in xs),
            "daemon_cpu_ms_per_request_median": statistics.median(
                x["daemon_cpu_ms_per_request"] or 0.0 for x in xs),
            "refused_total": refused, "errors_total": errors,
            "not_from_memory": sum(x["unexpected"] for x in xs),
            **({"stages_ms_median": {k: statistics.median(x["stages_ms"][k] for x in xs)
                                     for k in xs[0]["stages_ms"]}}
               if xs[0].get("stages_ms") else {})}


def measure(models_dir: Path | str, *, n_notes: int = 300, searches: int = 600,
            answers: int = 300, repeats: int = 3, in_flight: int = 24,
            baseline: bool = True) -> dict[str, Any]:
    """Both configs, interleaved repeat by repeat; medians, refusals and ratios."""
    configs = {"new": edge_toml(None)}
    if baseline:
        configs["old"] = edge_toml(OLD_SERVER)
        # The new limits with the old lanes: what the fast lane and batching add.
        configs["old_lanes"] = edge_toml({"fast_workers": 0})
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        daemons = {name: BenchDaemon(Path(tmp) / name, Path(models_dir), toml)
                   for name, toml in configs.items()}
        try:
            for d in daemons.values():
                d.start(until_loaded=True)
                with d.client() as c:
                    items = notes(n_notes)
                    for s in range(0, len(items), 50):
                        c.call("memory.add", {"items": items[s:s + 50]})
                    c.call("query", {"query": "What is the gate code for unit 0?"})  # warm
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in daemons}
            for rep in range(repeats):
                for name, d in daemons.items():
                    r = one_round(d.endpoint, f"{name}{rep}", searches, answers, in_flight,
                                  n_notes, rep, pid=d.proc.pid if d.proc else None)
                    rounds[name].append(r)
                    print(f"  repeat {rep + 1}/{repeats} {name:>3}: unique search "
                          f"{r['unique_search']['per_s']:7.1f}/s  cached "
                          f"{r['cached_search']['per_s']:7.1f}/s  answers "
                          f"{r['answers_from_memory']['per_s']:7.1f}/s  daemon CPU ms/req "
                          f"{r['unique_search']['daemon_cpu_ms_per_request']}/"
                          f"{r['cached_search']['daemon_cpu_ms_per_request']}/"
                          f"{r['answers_from_memory']['daemon_cpu_ms_per_request']}  refused "
                          f"{r['unique_search']['refused']}", flush=True)
            for name, d in daemons.items():
                with d.client() as c:
                    stats = c.call("memory.stats", {})
                out[name] = {k: med(rounds[name], k) for k in
                             ("unique_search", "cached_search", "answers_from_memory")}
                out[name]["embedding_cache"] = stats.get("embedding_cache")
                out[name]["embed_batches"] = stats.get("embed_batches")
        finally:
            for d in daemons.values():
                d.stop()
    if baseline:
        for base in ("old", "old_lanes"):
            out[f"new_vs_{base}"] = {
                k: round(out["new"][k]["per_s_median"] / max(out[base][k]["per_s_median"], 1e-9), 2)
                for k in ("unique_search", "cached_search", "answers_from_memory")}
            out[f"new_vs_{base}_cpu_per_request"] = {
                k: round(out["new"][k]["daemon_cpu_ms_per_request_median"]
                         / max(out[base][k]["daemon_cpu_ms_per_request_median"], 1e-9), 2)
                for k in ("unique_search", "cached_search", "answers_from_memory")}
    out["goal"] = GOAL
    out["goal_met"] = {
        "unique_search_per_s": out["new"]["unique_search"]["per_s_median"]
        >= GOAL["unique_search_per_s"],
        "answers_from_memory_per_s": out["new"]["answers_from_memory"]["per_s_median"]
        >= GOAL["answers_from_memory_per_s"]}
    out["settings"] = {"notes": n_notes, "searches": searches, "answers": answers,
                       "repeats": repeats, "in_flight": in_flight,
                       "old_server": OLD_SERVER,
                       "old_lanes_server": {"fast_workers": 0, "note": "new limits, old lanes"},
                       "new_server": "config.py defaults (edge.toml without these keys)"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--notes", type=int, default=300)
    ap.add_argument("--searches", type=int, default=600)
    ap.add_argument("--answers", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--in-flight", type=int, default=24)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--quick", action="store_true", help="100 notes, 200 requests, 1 repeat")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    a = ap.parse_args()
    if a.quick:
        a.notes, a.searches, a.answers, a.repeats = 100, 200, 100, 1
    res = measure(a.models_dir, n_notes=a.notes, searches=a.searches, answers=a.answers,
                  repeats=a.repeats, in_flight=a.in_flight, baseline=not a.no_baseline)
    res["machine"] = {"note": "shared, noisy 2-core machine; new and old daemons measured "
                              "alternately in the same run"}
    save_results(res, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
