"""End-to-end report (issue 12): start-up, RSS, search and memory-answer speed of one daemon.

Everything goes through the daemon's public protocol (a real ``ruvllm-edge
serve`` subprocess, ZeroMQ + msgpack through ``ruvllm_edge.client.Client``),
on the shipped edge profile (config/edge.toml) with only the overrides listed
in the JSON's ``setup.config_overrides``. What it measures:

1. start-up: wall time from spawning ``serve`` to the first ``health`` reply,
   on a fresh data dir and on a reused one (interleaved, median of N), plus
   one fresh start with an empty numba cache (what a start costs when nobody
   warmed the cache); the status the health reply gave;
2. at each memory size (0 / 10K / 100K nodes, 1M with --full; the data dir is
   filled before start through the store's own write path with synthetic
   clustered unit vectors, and texts drawn from the word frequencies of
   CPython's pydoc sentences, so FTS5 matches as in a memory of real text):
   - daemon RSS (psutil, plus RssAnon/RssFile/RssShmem from /proc/PID/status):
     just after start, idle after the searches and memory answers with the
     model unloaded, and after one generated query loaded the model;
   - ``memory.search`` latency p50/p99 from one sequential client, and unique
     searches per second from one pipelined DEALER client (``--depth`` in
     flight; ``rate_limited``/``busy`` refusals counted and retried after
     their ``retry_after_ms``; the client holds all sends until then);
   - questions answered straight from memory (a few short notes added with
     ``memory.add``; each question asked once sequentially, then cycled
     through the pipelined client): latency, answers per second, and how many
     were quoted from memory (finish_reason ``memory``), declined or generated;
   - in-process KNN (``MemoryStore.knn``, no daemon) over the same file, the
     figure issue 12's "≤ 20 ms p50 at 1M" goal is about;
3. baselines in the same run: raw llama-cpp-python with the same model and
   the same n_ctx / n_batch / threads loaded alone in a fresh process (RSS
   after load and after 8 generated tokens), and a bare interpreter;
4. the goals of issue 12 with ``met`` true/false (null when not measured).

Usage:
  python benchmarks/bench_e2e.py --quick    # sizes 0/10K, 2 starts each, no cold start (< 3 min)
  python benchmarks/bench_e2e.py            # sizes 0/10K/100K (< 20 min)
  python benchmarks/bench_e2e.py --full     # also 1M nodes (+10 min or more: the fill alone took
                                            # 282 s and 2.3 GB of temp space on a loaded 2-core box)
  python benchmarks/bench_e2e.py --table benchmarks/results/e2e.json   # README table, runs nothing
Writes benchmarks/results/e2e.json (e2e.quick.json with --quick) and a PNG
chart beside it (matplotlib, a dev extra; skipped without it).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import heapq
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import BenchDaemon, pyplot, save_figure, save_results  # noqa: E402
from ruvllm_edge import config as rconfig  # noqa: E402
from ruvllm_edge import fsutil  # noqa: E402
from ruvllm_edge import models as catalogue  # noqa: E402
from ruvllm_edge.client import Client  # noqa: E402
from ruvllm_edge.errors import ClientError, ClientTimeout  # noqa: E402

DIM = 384
MB = 1024 * 1024
EDGE_TOML = ROOT / "config" / "edge.toml"
RETRY_CODES = ("rate_limited", "busy")

# Issue 12's goals: (key, what, limit, unit, direction). "le": measured <= limit.
GOALS: list[tuple[str, str, float, str, str]] = [
    ("start_warm_s", "healthy after `serve` on a warm install (reused data dir), median", 2.0, "s", "le"),
    ("start_first_s", "healthy after `serve` on the very first start (fresh data dir), median", 3.0, "s", "le"),
    ("rss_loaded_100k_mb", "daemon RSS with the model loaded and 100K nodes", 450.0, "MB", "le"),
    ("rss_idle_unloaded_mb", "daemon RSS idle, model unloaded (100K nodes)", 250.0, "MB", "le"),
    ("search_per_s", "unique memory.search per second, one pipelined client, default settings (100K nodes)",
     300.0, "1/s", "ge"),
    ("memory_answers_per_s", "questions answered straight from memory per second, one pipelined client "
     "(100K nodes)", 100.0, "1/s", "ge"),
    ("knn_p50_1m_ms", "KNN p50 at 1M nodes (in-process MemoryStore.knn)", 20.0, "ms", "le"),
]

NOTES = [  # (note, question, a value a quoted answer must contain)
    ("The shed padlock code is 4417.", "What is the shed padlock code?", "4417"),
    ("The guest wifi password is amber-finch-19.", "What is the guest wifi password?", "amber-finch-19"),
    ("Our plumber is Mr. Okafor from Tidewater Plumbing.", "Who is our plumber?", "Okafor"),
    ("The spare house key is under the blue flowerpot.", "Where is the spare house key?", "flowerpot"),
    ("Bins go out on Wednesday evenings.", "Which day do the bins go out?", "Wednesday"),
    ("The water meter is behind the garage door.", "Where is the water meter?", "garage"),
    ("My library card number is 2208 5531.", "What is my library card number?", "2208 5531"),
    ("The boiler was serviced by Nina Holt in May.", "Who serviced the boiler?", "Holt"),
]
NEVER_TAUGHT = ["What is my passport number?", "Who is our electrician?",
                "What is the alarm code for the office?", "When is my dentist appointment?"]
GENERAL_Q = "What is the capital of France?"


# ---------------------------------------------------------------------------
# Pure helpers (tested in tests/test_bench_e2e.py)


IDLE_S = 4.0   # seconds without requests before "idle" RSS is read: past the daemon's 2 s idle trim

def lat_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p99/mean in ms of latencies given in seconds (None for an empty list)."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(seconds, dtype=float) * 1e3
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3)}


def median_or_none(xs: Sequence[float]) -> float | None:
    return round(float(statistics.median(xs)), 4) if xs else None


def goal_check(measured: dict[str, float | None], against: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each of issue 12's goals with the measured figure and met true/false (None: not measured)."""
    out: dict[str, dict[str, Any]] = {}
    for key, what, limit, unit, direction in GOALS:
        v = measured.get(key)
        met = None if v is None else bool(v <= limit if direction == "le" else v >= limit)
        out[key] = {"goal": what, "limit": limit, "unit": unit,
                    "direction": "<=" if direction == "le" else ">=", "measured": v, "met": met,
                    "measured_against": against.get(key, "")}
    return out


def toml_text(raw: dict[str, dict[str, Any]]) -> str:
    """A config as TOML: tables of scalars (str, bool, int, float) or lists of them, nothing deeper."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")
    lines: list[str] = []
    for table, keys in raw.items():
        if not isinstance(keys, dict):
            raise TypeError(f"top-level key {table!r} must be a table")
        lines.append(f"[{table}]")
        lines += [f"{k} = {val(v)}" for k, v in keys.items()]
        lines.append("")
    return "\n".join(lines)


def bench_config(overrides: dict[str, dict[str, Any]], base: Path = EDGE_TOML) -> str:
    """The shipped edge profile with ``overrides`` applied, as TOML text."""
    raw = tomllib.loads(base.read_text(encoding="utf-8")) if base.is_file() else {}
    for table, keys in overrides.items():
        raw.setdefault(table, {}).update(keys)
    return toml_text(raw)


def clustered_unit_vectors(n: int, seed: int, spread: float = 0.6) -> np.ndarray:
    """(n, 384) float32 unit rows around n/100 random centres (as bench_memory draws them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), DIM)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@functools.cache
def word_model() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words of CPython's pydoc sentences, their frequencies, and which are content words.

    Synthetic node texts and search queries are drawn from this real Zipf
    curve, so the FTS5 half of memory.search matches as many rows as it would
    in a memory of real sentences: common words many, rare words few.
    """
    from _datasets import python_doc_sentences
    from ruvllm_edge.answer.text import STOP

    counts = Counter(w for t in python_doc_sentences(1_000_000) for w in re.findall(r"[a-z]{2,}", t.lower()))
    words = sorted(counts)
    freq = np.array([counts[w] for w in words], dtype=float)
    content = np.array([w not in STOP for w in words])
    return words, freq / freq.sum(), content


def synthetic_texts(start: int, stop: int, seed: int, words: int = 12, block: int = 1000) -> list[str]:
    """Texts of rows start..stop-1; row i's text depends on (seed, i) only, however the rows are batched."""
    vocab, p, _ = word_model()
    out: list[str] = []
    for b in range(start // block, (stop + block - 1) // block):
        picks = np.random.default_rng([seed, b]).choice(len(vocab), size=(block, words), p=p)
        for i in range(max(start, b * block), min(stop, (b + 1) * block)):
            out.append(f"record {i}: " + " ".join(vocab[j] for j in picks[i - b * block]))
    return out


def unique_queries(n: int, seed: int, tag: str = "") -> list[str]:
    """n distinct questions with three content words each (a running number keeps the embedder's cache out)."""
    vocab, p, content = word_model()
    idx = np.flatnonzero(content)
    picks = np.random.default_rng(seed).choice(idx, size=(n, 3), p=p[idx] / p[idx].sum())
    return [f"what about the {vocab[a]} {vocab[b]} and {vocab[c]} {tag}{i}"
            for i, (a, b, c) in enumerate(picks)]


def fill_data_dir(data_dir: Path, n: int, memory_cfg: Any, seed: int = 12, batch: int = 5000) -> dict[str, Any]:
    """Put n synthetic nodes into data_dir's memory.db before the daemon starts.

    The store's own write path (memory.nodes.add_embedded, one transaction per
    ``batch``) on a file created private, as the daemon would create it; the
    daemon then opens it and builds its in-RAM codes from it like any other.
    """
    from ruvllm_edge.memory import nodes
    from ruvllm_edge.memory.db import DB_NAME, Database

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DB_NAME
    fsutil.private_file(path, fsutil.FILE_MODE)
    db = Database(path, memory_cfg.sqlite_cache_mb)
    t = time.perf_counter()
    try:
        for s in range(0, n, batch):
            e = min(n, s + batch)
            nodes.add_embedded(db, memory_cfg, synthetic_texts(s, e, seed),
                               clustered_unit_vectors(e - s, seed + s) if n >= 100 else
                               clustered_unit_vectors(e - s, seed + s, spread=1.0))
        db.checkpoint()
    finally:
        db.close()
    return {"nodes": n, "insert_s": round(time.perf_counter() - t, 2),
            "db_mb": round(path.stat().st_size / MB, 2)}


# ---------------------------------------------------------------------------
# Process measurements


def proc_rss(pid: int) -> dict[str, float]:
    """RSS of a process in MB: psutil's, and the kernel's split from /proc/PID/status."""
    out = {"rss_mb": round(psutil.Process(pid).memory_info().rss / MB, 1)}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def machine_load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except OSError:
        return None


@dataclasses.dataclass
class Drive:
    """What one client saw driving a list of requests."""

    latencies_s: list[float]                  # last send to final reply, successful requests
    results: list[dict[str, Any] | None]      # per request, in input order (None: error)
    refused: dict[str, int]                   # rate_limited / busy refusals (each retried)
    errors: dict[str, int]                    # other error codes (not retried)
    wall_s: float
    depth: int

    @property
    def ok(self) -> int:
        return sum(r is not None for r in self.results)

    def summary(self) -> dict[str, Any]:
        return {**lat_summary(self.latencies_s), "requests": len(self.results), "ok": self.ok,
                "per_s": round(self.ok / self.wall_s, 1) if self.wall_s > 0 else None,
                "wall_s": round(self.wall_s, 3), "in_flight": self.depth,
                "refused": dict(self.refused), "refusals_per_request": round(
                    sum(self.refused.values()) / max(1, len(self.results)), 3),
                "errors": dict(self.errors)}


def drive(client: Client, op: str, args_list: Sequence[dict[str, Any]], depth: int,
          timeout_s: float = 120.0) -> Drive:
    """Send every request with up to ``depth`` in flight on one DEALER connection.

    A ``rate_limited`` or ``busy`` refusal is re-sent after its
    ``retry_after_ms``, and the client sends nothing new before then (a
    well-behaved app). depth 1 is a sequential client.
    """
    n = len(args_list)
    results: list[dict[str, Any] | None] = [None] * n
    lat: list[float] = []
    refused: dict[str, int] = {}
    errors: dict[str, int] = {}
    todo = list(range(n))[::-1]              # a stack: pop() takes the next in order
    retry: list[tuple[float, int]] = []      # heap of (due, index)
    inflight: dict[str, tuple[int, float]] = {}
    hold_until = 0.0
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + timeout_s * max(1, n / max(1, depth))
    while done < n:
        now = time.perf_counter()
        if now > deadline:
            raise ClientTimeout(f"{op}: {n - done} of {n} requests unanswered")
        while retry and retry[0][0] <= now:
            todo.append(heapq.heappop(retry)[1])
        while todo and len(inflight) < depth and now >= hold_until:
            i = todo.pop()
            inflight[client.send(op, dict(args_list[i]))] = (i, time.perf_counter())
        waits = [0.5]
        if retry:
            waits.append(retry[0][0] - now)
        if hold_until > now:
            waits.append(hold_until - now)
        wait = max(0.0005, min(waits))
        if not inflight:
            time.sleep(wait)
            continue
        try:
            msg = client.recv_any(timeout_s=wait)
        except ClientTimeout:
            continue
        got = inflight.pop(msg.get("id"), None) if isinstance(msg.get("id"), str) else None
        if got is None:
            continue                          # a stray token event or a reply to nothing we track
        if "ok" not in msg:
            inflight[msg["id"]] = got         # a streaming event: the final reply is still to come
            continue
        i, sent = got
        if msg["ok"]:
            lat.append(time.perf_counter() - sent)
            results[i] = dict(msg.get("result") or {})
            done += 1
            continue
        err = msg.get("error") or {}
        code = str(err.get("code"))
        if code in RETRY_CODES:
            refused[code] = refused.get(code, 0) + 1
            due = time.perf_counter() + float((err.get("details") or {}).get("retry_after_ms", 100)) / 1000
            hold_until = max(hold_until, due)
            heapq.heappush(retry, (due, i))
            continue
        errors[code] = errors.get(code, 0) + 1
        done += 1
    return Drive(lat, results, refused, errors, time.perf_counter() - t0, depth)


def wait_healthy(d: BenchDaemon, t0: float, wait_s: float = 120.0) -> dict[str, Any]:
    """Seconds from ``t0`` (just before spawn) to the socket file and to the first ``health`` reply.

    The socket file is polled every 5 ms and a client connects only once it
    exists, so ZeroMQ's reconnect interval does not add to the figure.
    """
    sock = d.data / "ruvllm-edge.sock"
    end = t0 + wait_s
    assert d.proc is not None
    while not sock.exists():
        if d.proc.poll() is not None:
            raise SystemExit(f"daemon exited with {d.proc.returncode}; see {d.log}")
        if time.perf_counter() > end:
            raise SystemExit(f"no socket after {wait_s} s; see {d.log}")
        time.sleep(0.005)
    bound = time.perf_counter() - t0
    with Client(d.endpoint, timeout_s=1) as c:
        while True:
            if d.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {d.proc.returncode}; see {d.log}")
            try:
                h = c.health(timeout_s=0.5)
                return {"healthy_s": round(time.perf_counter() - t0, 3), "socket_s": round(bound, 3),
                        "status": h.get("status"),
                        "inference": h.get("components", {}).get("inference", {}).get("state")}
            except ClientTimeout:
                if time.perf_counter() > end:
                    raise SystemExit(f"no health reply after {wait_s} s; see {d.log}") from None


def timed_start(d: BenchDaemon, env: dict[str, str] | None = None) -> dict[str, Any]:
    stale = d.data / "ruvllm-edge.sock"
    if stale.exists():
        stale.unlink()                        # a stale file would let the client connect too early
    t0 = time.perf_counter()
    d.spawn(env)
    r = wait_healthy(d, t0)
    assert d.proc is not None
    r["rss"] = proc_rss(d.proc.pid)
    return r


# ---------------------------------------------------------------------------
# The measurements


def measure_startup(tmp: Path, models_dir: Path, toml: str, repeats: int, cold: bool) -> dict[str, Any]:
    """Fresh vs reused data dir, interleaved; one fresh start with an empty numba cache."""
    reused = BenchDaemon(tmp / "start-reused", models_dir, toml)
    print("start-up: one untimed start (warms the numba cache, creates the reused data dir)", flush=True)
    reused.start()
    reused.stop()
    fresh_runs: list[dict[str, Any]] = []
    reused_runs: list[dict[str, Any]] = []
    for i in range(repeats):
        f = BenchDaemon(tmp / f"start-fresh-{i}", models_dir, toml)
        try:
            fresh_runs.append(timed_start(f))
        finally:
            f.stop()
        shutil.rmtree(f.data, ignore_errors=True)
        try:
            reused_runs.append(timed_start(reused))
        finally:
            reused.stop()
        print(f"  start {i + 1}/{repeats}: fresh {fresh_runs[-1]['healthy_s']} s "
              f"({fresh_runs[-1]['status']}), reused {reused_runs[-1]['healthy_s']} s "
              f"({reused_runs[-1]['status']})", flush=True)

    def summ(runs: list[dict[str, Any]], what: str) -> dict[str, Any]:
        return {"what": what, "healthy_s_median": median_or_none([r["healthy_s"] for r in runs]),
                "socket_s_median": median_or_none([r["socket_s"] for r in runs]),
                "rss_mb_median": median_or_none([r["rss"]["rss_mb"] for r in runs]),
                "statuses": sorted({str(r["status"]) for r in runs}), "runs": runs}

    out = {"fresh_data_dir": summ(fresh_runs, "new empty data dir, numba cache warm (as after install.sh)"),
           "reused_data_dir": summ(reused_runs, "data dir of an earlier start (router file, DB exist)"),
           "measured_against": "wall time from spawning `ruvllm-edge serve` to the first `health` reply; "
                               "fresh and reused starts interleaved"}
    if cold:
        cache = tmp / "numba-cold"
        cache.mkdir()
        c = BenchDaemon(tmp / "start-cold", models_dir, toml)
        try:
            run = timed_start(c, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
        finally:
            c.stop()
        out["fresh_data_dir_cold_numba"] = {
            "what": "new data dir and an empty NUMBA_CACHE_DIR (nobody warmed the cache)", **run}
        print(f"  cold numba cache: {run['healthy_s']} s ({run['status']})", flush=True)
    return out


def measure_knn(data_dir: Path, memory_cfg: Any, n_queries: int, seed: int) -> dict[str, Any]:
    """In-process MemoryStore.knn over the filled file: no daemon, no embedding."""
    from ruvllm_edge.memory.db import DB_NAME, Database
    from ruvllm_edge.memory.store import MemoryStore

    db = Database(data_dir / DB_NAME, memory_cfg.sqlite_cache_mb)
    store = MemoryStore(db, memory_cfg, None)  # type: ignore[arg-type]  # knn needs no embedder
    try:
        qs = clustered_unit_vectors(n_queries, seed)
        store.knn(qs[0], 10)
        lat = []
        for q in qs:
            t = time.perf_counter()
            store.knn(q, 10)
            lat.append(time.perf_counter() - t)
    finally:
        store.close()
        db.close()
    return {**lat_summary(lat), "k": 10,
            "measured_against": "in-process MemoryStore.knn (binary coarse pass + exact rescoring), "
                                "synthetic clustered queries; recall is bench_memory's"}


def wait_state(c: Client, want: str, wait_s: float = 60.0) -> str:
    end = time.monotonic() + wait_s
    state = ""
    while time.monotonic() < end:
        state = c.health()["components"]["inference"]["state"]
        if state == want:
            break
        time.sleep(0.2)
    return state


def measure_size(n: int, tmp: Path, models_dir: Path, toml: str, memory_cfg: Any, *, n_seq: int,
                 n_pipe: int, n_answers: int, depth: int, knn_queries: int) -> dict[str, Any]:
    """One daemon on a data dir pre-filled with n nodes: RSS, search, memory answers."""
    print(f"size {n}: filling", flush=True)
    d = BenchDaemon(tmp / f"size-{n}", models_dir, toml)
    out: dict[str, Any] = {"nodes": n, "fill": fill_data_dir(d.data, n, memory_cfg)}
    out["knn_in_process"] = measure_knn(d.data, memory_cfg, knn_queries, seed=n + 7) if n else None
    out["start_fresh"] = timed_start(d)
    assert d.proc is not None
    pid = d.proc.pid
    try:
        # Each phase on a connection of its own: the rate limit's bucket is per
        # connection, so one phase's requests do not eat the next one's burst.
        with d.client(timeout_s=120) as c:
            time.sleep(1.0)
            out["rss_after_start"] = {**proc_rss(pid), "inference": wait_state(c, "unloaded", 1)}
            for note, _, _ in NOTES:
                c.memory_add(note)
            drive(c, "memory.search", [{"query": q, "k": 10} for q in unique_queries(10, n, "w")], 1)
        # -- memory.search: sequential latency, then pipelined unique throughput
        with d.client(timeout_s=120) as c:
            seq = drive(c, "memory.search", [{"query": q, "k": 10} for q in unique_queries(n_seq, n + 1, "s")], 1)
        with d.client(timeout_s=120) as c:     # one query again and again: its embedding is cached
            same = unique_queries(1, n + 3, "c")[0]
            cached = drive(c, "memory.search", [{"query": same, "k": 10}] * max(10, n_seq // 2), 1)
        out["search_sequential_cached"] = {**cached.summary(), "measured_against":
                                           "one client, one request at a time, the same query every time "
                                           "(embedding cached: the rest of memory.search alone)"}
        with d.client(timeout_s=120) as c:
            out["search_sequential"] = {**seq.summary(), "measured_against":
                                        "one client, one request at a time, unique queries, k=10"}
            pipe = drive(c, "memory.search",
                         [{"query": q, "k": 10} for q in unique_queries(n_pipe, n + 2, "p")], depth)
            out["search_pipelined"] = {**pipe.summary(), "measured_against":
                                       f"one DEALER client, {depth} in flight, unique queries, k=10, "
                                       "default rate limit and queue"}
        print(f"  search: p50 {out['search_sequential']['p50_ms']} ms, "
              f"{out['search_pipelined']['per_s']}/s pipelined, refused {pipe.refused}", flush=True)
        # -- questions answered from memory: each once, then cycled through the pipelined client
        with d.client(timeout_s=120) as c:
            qs = [q for _, q, _ in NOTES] + NEVER_TAUGHT
            once = drive(c, "query", [{"query": q} for q in qs], 1)
            kinds = [r.get("finish_reason") if r else "error" for r in once.results]
            right = [bool(r and r.get("finish_reason") == "memory" and v.lower() in r.get("text", "").lower())
                     for r, (_, _, v) in zip(once.results, NOTES)]
            # only questions the daemon answers without the model go into the throughput run
            cheap = [q for q, k in zip(qs, kinds) if k in ("memory", "declined")]
            cyc = (cheap * (n_answers // max(1, len(cheap)) + 1))[:n_answers] if cheap else []
        with d.client(timeout_s=120) as c:
            ans = drive(c, "query", [{"query": q} for q in cyc], depth) if cyc else None
            ans_kinds = [r.get("finish_reason") if r else "error" for r in ans.results] if ans else []
            out["memory_answers"] = {
                "sequential": {**once.summary(), "finish_reasons": {k: kinds.count(k) for k in set(kinds)},
                               "taught_quoted_with_value": sum(right), "taught": len(NOTES),
                               "never_taught": len(NEVER_TAUGHT),
                               "measured_against": "each question once, one at a time"},
                "pipelined": ({**ans.summary(), "finish_reasons": {k: ans_kinds.count(k) for k in set(ans_kinds)},
                               "distinct_questions": len(cheap),
                               "measured_against": f"one DEALER client, {depth} in flight, the questions "
                                                   "answered without generation in the sequential pass, cycled "
                                                   "(embedding cache warm after the first round)"}
                              if ans else None),
            }
        print(f"  memory answers: {out['memory_answers']['sequential']['finish_reasons']}, "
              f"{ans.summary()['per_s'] if ans else None}/s pipelined", flush=True)
        with d.client(timeout_s=120) as c:
            time.sleep(IDLE_S)
            out["rss_idle_unloaded"] = {**proc_rss(pid), "inference": wait_state(c, "unloaded", 1),
                                        "measured_against": f"after the searches and memory answers, "
                                                            f"{IDLE_S:g} s idle (past the daemon's idle trim)"}
            # -- one generated answer loads the model
            t = time.perf_counter()
            c.query(GENERAL_Q, max_tokens=8, use_memory=False)
            out["first_generation_s"] = round(time.perf_counter() - t, 3)
            state = wait_state(c, "loaded", 30)
            time.sleep(1.0)
            out["rss_loaded_active"] = {**proc_rss(pid), "inference": state,
                                        "measured_against": "1 s after one generated query (8 tokens) "
                                                            "loaded the model, before the idle trim"}
            time.sleep(IDLE_S - 1.0)
            out["rss_loaded"] = {**proc_rss(pid), "inference": wait_state(c, "loaded", 1),
                                 "measured_against": f"{IDLE_S:g} s after one generated query loaded the "
                                                     "model: loaded and idle (keep_alive_s keeps it)"}
            print(f"  RSS MB: start {out['rss_after_start']['rss_mb']}, idle unloaded "
                  f"{out['rss_idle_unloaded']['rss_mb']}, loaded {out['rss_loaded']['rss_mb']} "
                  f"(active {out['rss_loaded_active']['rss_mb']})", flush=True)
        d.stop()
        # -- start-up again on the now-used data dir with n nodes (issue 12 item 4: start-up vs size)
        out["start_reused"] = timed_start(d)
        print(f"  start: fresh {out['start_fresh']['healthy_s']} s, reused {out['start_reused']['healthy_s']} s",
              flush=True)
    finally:
        d.stop()
        shutil.rmtree(d.data, ignore_errors=True)
    return out


RAW_SCRIPT = r"""
import json, sys, time, psutil
from pathlib import Path
def rss():
    out = {"rss_mb": round(psutil.Process().memory_info().rss / 1048576, 1)}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[k + "_mb"] = round(int(v.split()[0]) / 1024, 1)
    return out
a = json.loads(sys.argv[1])
res = {"interpreter": rss()}
if a.get("model"):
    import llama_cpp
    res["after_import"] = rss()
    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path=a["model"], n_ctx=a["n_ctx"], n_batch=a["n_batch"],
                          n_threads=a["n_threads"], n_threads_batch=a["n_threads"], verbose=False)
    res["load_s"] = round(time.perf_counter() - t, 3)
    res["loaded"] = rss()
    llm.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    res["after_generation"] = rss()
print(json.dumps(res))
"""


def measure_raw(models_dir: Path, toml_path: Path) -> dict[str, Any]:
    """Raw llama-cpp-python alone in a fresh process with the daemon's model settings; a bare interpreter."""
    cfg = rconfig.load(toml_path, models_dir=str(models_dir), env={})
    ic = cfg.inference
    model = catalogue.path_of(ic.model, models_dir) if not ic.model.endswith(".gguf") else Path(ic.model)
    threads = ic.n_threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    args = {"model": str(model), "n_ctx": ic.n_ctx_tokens, "n_batch": ic.n_batch_tokens, "n_threads": threads}

    def run(a: dict[str, Any]) -> dict[str, Any]:
        p = subprocess.run([sys.executable, "-c", RAW_SCRIPT, json.dumps(a)], capture_output=True, text=True,
                           timeout=300, cwd=str(ROOT))
        if p.returncode != 0:
            return {"error": p.stderr[-500:]}
        return dict(json.loads(p.stdout.strip().splitlines()[-1]))

    raw = run(args)
    bare = run({})
    return {"llama_cpp_python": {**raw, "settings": {**args, "model": model.name},
                                 "measured_against": "a fresh python process: import llama_cpp, load the same "
                                                     "GGUF with the daemon's n_ctx/n_batch/threads, 8 tokens"},
            "bare_interpreter": {**bare.get("interpreter", {}), "measured_against": "python -c with psutil only"}}


def machine(load_start: dict[str, float]) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {"cpus_logical": os.cpu_count(), "cpus_physical": psutil.cpu_count(logical=False),
            "mem_total_mb": round(vm.total / MB), "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine(),
            "load_average_start": load_start, "load_average_end": machine_load(),
            "note": "shared machine: other processes ran during the measurement; figures are medians "
                    "and same-run comparisons"}


def plain_or_str(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def optional_parts(models_dir: Path, quick: bool) -> dict[str, Any]:
    """The other benchmarks' richer figures, when their modules exist (--parts); never required."""
    import importlib

    calls: dict[str, Callable[[Any], Any]] = {
        "bench_startup": lambda m: m.measure(models_dir, 2 if quick else 5),
        "bench_rss": lambda m: m.measure(models_dir, nodes=10_000 if quick else 100_000),
        "bench_throughput": lambda m: m.measure(models_dir),
        "bench_memory": lambda m: m.measure_size(10_000 if quick else 100_000),
    }
    out: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        fn_name = "measure_size" if name == "bench_memory" else "measure"
        if not hasattr(mod, fn_name):
            continue
        print(f"part: {name}.{fn_name}", flush=True)
        try:
            # through JSON here, so a part's odd type cannot fail the save of the whole report
            out[name] = json.loads(json.dumps(call(mod), default=plain_or_str))
        except Exception as exc:  # noqa: BLE001 - a part's failure must not lose the core report
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# ---------------------------------------------------------------------------
# Report


def goals_from(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sizes = {s["nodes"]: s for s in res["sizes"]}
    at100k = sizes.get(100_000)
    at1m = sizes.get(1_000_000)
    st = res.get("startup", {})
    m: dict[str, float | None] = {
        "start_warm_s": st.get("reused_data_dir", {}).get("healthy_s_median"),
        "start_first_s": st.get("fresh_data_dir", {}).get("healthy_s_median"),
        "rss_loaded_100k_mb": at100k["rss_loaded"]["rss_mb"] if at100k else None,
        "rss_idle_unloaded_mb": at100k["rss_idle_unloaded"]["rss_mb"] if at100k else None,
        "search_per_s": at100k["search_pipelined"]["per_s"] if at100k else None,
        "memory_answers_per_s": ((at100k["memory_answers"]["pipelined"] or {}).get("per_s")
                                 if at100k else None),
        "knn_p50_1m_ms": (at1m["knn_in_process"] or {}).get("p50_ms") if at1m else None,
    }
    against = {
        "start_warm_s": "startup.reused_data_dir (baseline: issue 12 measured 3.9 s)",
        "start_first_s": "startup.fresh_data_dir (baseline: issue 12 measured 8.0 s cold, 3.9 s warm)",
        "rss_loaded_100k_mb": "sizes[100000].rss_loaded; raw llama-cpp-python alone: baselines.llama_cpp_python",
        "rss_idle_unloaded_mb": "sizes[100000].rss_idle_unloaded; bare interpreter: baselines.bare_interpreter",
        "search_per_s": "sizes[100000].search_pipelined (baseline: issue 12 measured 75/s)",
        "memory_answers_per_s": "sizes[100000].memory_answers.pipelined",
        "knn_p50_1m_ms": "sizes[1000000].knn_in_process (run with --full)",
    }
    return goal_check(m, against)


def plot(res: dict[str, Any], path: Path) -> bool:
    """Latency, throughput and RSS against memory size, as a PNG (matplotlib is a dev extra)."""
    plt = pyplot()
    if plt is None:
        return False
    sizes = res["sizes"]
    xs = list(range(len(sizes)))
    labels = [f"{s['nodes'] // 1000}K" if s["nodes"] >= 1000 else str(s["nodes"]) for s in sizes]

    def col(f: Callable[[dict[str, Any]], Any]) -> list[float]:
        vals = []
        for s in sizes:
            try:
                v = f(s)
            except (KeyError, TypeError):
                v = None
            vals.append(float("nan") if v is None else float(v))
        return vals

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4.2))
    a1.plot(xs, col(lambda s: s["search_sequential"]["p50_ms"]), marker="o", label="memory.search p50")
    a1.plot(xs, col(lambda s: s["search_sequential"]["p99_ms"]), marker="o", ls="--", label="memory.search p99")
    a1.plot(xs, col(lambda s: s["search_sequential_cached"]["p50_ms"]), marker="o", ls=":",
            label="memory.search p50, embedding cached")
    a1.plot(xs, col(lambda s: s["memory_answers"]["sequential"]["p50_ms"]), marker="s",
            label="answer from memory p50")
    a1.plot(xs, col(lambda s: s["knn_in_process"]["p50_ms"]), marker="^", label="KNN p50 (in-process)")
    a1.set(ylabel="ms (one client, sequential)", title="latency")
    a2.plot(xs, col(lambda s: s["search_pipelined"]["per_s"]), marker="o", label="unique searches/s")
    a2.plot(xs, col(lambda s: s["memory_answers"]["pipelined"]["per_s"]), marker="s", label="memory answers/s")
    a2.axhline(300, color="C0", ls=":", lw=1, label="goal 300 searches/s")
    a2.axhline(100, color="C1", ls=":", lw=1, label="goal 100 answers/s")
    depth = sizes[0]["search_pipelined"]["in_flight"] if sizes else "?"
    a2.set(ylabel=f"per second (one client, {depth} in flight)", title="throughput")
    a3.plot(xs, col(lambda s: s["rss_idle_unloaded"]["rss_mb"]), marker="o", label="daemon idle, model unloaded")
    a3.plot(xs, col(lambda s: s["rss_loaded"]["rss_mb"]), marker="s", label="daemon, model loaded")
    raw = res["baselines"]["llama_cpp_python"].get("after_generation", {}).get("rss_mb")
    if raw:
        a3.axhline(raw, color="k", ls="-.", lw=1, label=f"raw llama-cpp-python alone ({raw:.0f})")
    a3.axhline(250, color="C0", ls=":", lw=1, label="goal 250 idle")
    a3.axhline(450, color="C1", ls=":", lw=1, label="goal 450 loaded")
    a3.set(ylabel="RSS MB", title="memory")
    for a in (a1, a2, a3):
        a.set_xticks(xs, labels)
        a.set_xlabel("memory nodes")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
        a.set_ylim(bottom=0)
    mc = res["machine"]
    fig.suptitle(f"ruvllm-edge end to end ({'quick; ' if res['quick'] else ''}{res['commit'] or ''}; "
                 f"{mc['cpus_logical']} CPUs {mc['machine']}, load {mc['load_average_start']['1m']}"
                 f"→{mc['load_average_end']['1m']}; {res['when']})", fontsize=10)
    save_figure(plt, fig, path)
    return True


def print_summary(res: dict[str, Any]) -> None:
    st = res["startup"]
    print(f"\nstart-up (median): fresh {st['fresh_data_dir']['healthy_s_median']} s, "
          f"reused {st['reused_data_dir']['healthy_s_median']} s")
    raw = res["baselines"]["llama_cpp_python"].get("after_generation", {}).get("rss_mb")
    print(f"raw llama-cpp-python RSS {raw} MB; bare interpreter "
          f"{res['baselines']['bare_interpreter'].get('rss_mb')} MB")
    print(f"{'nodes':>8} {'idle MB':>8} {'loaded MB':>9} {'search p50':>10} {'p99':>7} {'search/s':>8} "
          f"{'answers/s':>9} {'knn p50':>7}")
    for s in res["sizes"]:
        ap = (s["memory_answers"]["pipelined"] or {}).get("per_s")
        kn = (s["knn_in_process"] or {}).get("p50_ms")
        print(f"{s['nodes']:>8} {s['rss_idle_unloaded']['rss_mb']:>8} {s['rss_loaded']['rss_mb']:>9} "
              f"{s['search_sequential']['p50_ms']:>10} {s['search_sequential']['p99_ms']:>7} "
              f"{s['search_pipelined']['per_s']:>8} {str(ap):>9} {str(kn):>7}")
    print("goals:")
    for k, g in res["goals"].items():
        print(f"  {k:<22} {g['direction']} {g['limit']:<6} {g['unit']:<4} measured {g['measured']}  met {g['met']}")


def markdown_table(res: dict[str, Any]) -> str:
    """The README's short table from a saved e2e.json: each figure beside its goal and baseline."""
    mc = res["machine"]
    raw = res["baselines"]["llama_cpp_python"].get("after_generation", {}).get("rss_mb")
    st = res["startup"]
    rows = [f"Measured {res['when']} at {res.get('commit') or '?'} on {mc['cpus_logical']} CPUs "
            f"({mc['machine']}, {mc['mem_total_mb']} MB, Python {mc['python']}), load average "
            f"{mc['load_average_start']['1m']} → {mc['load_average_end']['1m']}"
            f"{' (quick mode)' if res['quick'] else ''}; `benchmarks/bench_e2e.py`, "
            "`results/e2e.json`.", "",
            "| nodes | RSS idle, model unloaded (MB) | RSS loaded (MB) | search p50 / p99 (ms) "
            "| searches/s | memory answers/s |",
            "|---|---|---|---|---|---|"]
    for s in res["sizes"]:
        ap = (s["memory_answers"]["pipelined"] or {}).get("per_s")
        rows.append(f"| {s['nodes']:,} | {s['rss_idle_unloaded']['rss_mb']:.0f} | {s['rss_loaded']['rss_mb']:.0f} "
                    f"| {s['search_sequential']['p50_ms']:.1f} / {s['search_sequential']['p99_ms']:.1f} "
                    f"| {s['search_pipelined']['per_s']:.0f} | {ap if ap is None else round(ap)} |")
    rows += ["", f"Baselines from the same run: raw llama-cpp-python with the same model alone "
                 f"{raw} MB RSS; start-up {st['fresh_data_dir']['healthy_s_median']} s on a fresh data dir, "
                 f"{st['reused_data_dir']['healthy_s_median']} s on a reused one (median of "
                 f"{len(st['reused_data_dir']['runs'])}).", "",
             "| goal (issue 12) | limit | measured | met |", "|---|---|---|---|"]
    for g in res["goals"].values():
        met = {True: "yes", False: "no", None: "not measured"}[g["met"]]
        rows.append(f"| {g['goal']} | {g['direction']} {g['limit']:g} {g['unit']} | {g['measured']} | {met} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 0/10K, 2 starts, no cold start, fewer requests (< 3 min)")
    ap.add_argument("--full", action="store_true", help="also 1M nodes (adds 10+ min; 2.3 GB temp space)")
    ap.add_argument("--sizes", type=int, nargs="+", help="memory sizes in nodes (overrides the mode's)")
    ap.add_argument("--starts", type=int, help="start-ups per kind (fresh/reused); default 2 quick, 5 full")
    ap.add_argument("--depth", type=int, default=16, help="requests in flight for the pipelined client")
    ap.add_argument("--cold", action=argparse.BooleanOptionalAction, default=None,
                    help="one start with an empty numba cache (default: on, off with --quick)")
    ap.add_argument("--parts", action="store_true",
                    help="also run the other benchmarks' measure() functions when importable")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--out", help="JSON path (default benchmarks/results/e2e[.quick].json; PNG beside it)")
    ap.add_argument("--table", metavar="JSON", help="print the README's markdown table from a saved "
                                                    "e2e.json and exit (runs nothing)")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text(encoding="utf-8"))))
        return 0
    quick = bool(args.quick)
    sizes = args.sizes or ([0, 10_000] if quick else [0, 10_000, 100_000])
    if args.full and not args.sizes:
        sizes.append(1_000_000)
    starts = args.starts or (2 if quick else 5)
    n_seq, n_pipe, n_answers, knn_q = (60, 300, 200, 30) if quick else (300, 1500, 600, 100)
    models_dir = Path(args.models_dir).resolve()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"e2e{'.quick' if quick else ''}.json"
    load_start = machine_load()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t_all = time.perf_counter()

    # Overrides of the edge profile, each for a reason the JSON keeps:
    overrides = {
        "learning": {"idle_after_s": 86_400.0},   # idle learning would load the model between phases
        "memory": {"max_nodes": max(100_000, 2 * max(sizes))},   # no eviction of the filled nodes
    }
    toml = bench_config(overrides)
    res: dict[str, Any] = {"quick": quick, "when": when, "commit": git_commit()}
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmpname:
        tmp = Path(tmpname)
        toml_path = tmp / "bench.toml"
        fsutil.atomic_write(toml_path, toml)
        bench_cfg = rconfig.load(toml_path, models_dir=str(models_dir), env={})
        memory_cfg = bench_cfg.memory
        print("baselines: raw llama-cpp-python and a bare interpreter, fresh processes", flush=True)
        res["baselines"] = measure_raw(models_dir, toml_path)
        res["startup"] = measure_startup(tmp, models_dir, toml, starts, cold=(not quick) if args.cold is None else args.cold)
        res["sizes"] = [measure_size(n, tmp, models_dir, toml, memory_cfg, n_seq=n_seq, n_pipe=n_pipe,
                                     n_answers=n_answers, depth=args.depth, knn_queries=knn_q) for n in sizes]
    raw_mb = res["baselines"]["llama_cpp_python"].get("after_generation", {}).get("rss_mb")
    bare_mb = res["baselines"]["bare_interpreter"].get("rss_mb")
    for s in res["sizes"]:
        s["rss_loaded"]["over_raw_llama_mb"] = round(s["rss_loaded"]["rss_mb"] - raw_mb, 1) if raw_mb else None
        s["rss_idle_unloaded"]["over_bare_interpreter_mb"] = (
            round(s["rss_idle_unloaded"]["rss_mb"] - bare_mb, 1) if bare_mb else None)
    if args.parts:
        res["parts"] = optional_parts(models_dir, quick)
    res["goals"] = goals_from(res)
    res["machine"] = machine(load_start)
    res["setup"] = {"sizes": sizes, "starts_per_kind": starts, "in_flight": args.depth,
                    "search_sequential_requests": n_seq, "search_pipelined_requests": n_pipe,
                    "memory_answer_requests": n_answers, "knn_queries": knn_q,
                    "config": "config/edge.toml (the shipped edge profile) with config_overrides",
                    "config_overrides": overrides,
                    "server_limits": {k: getattr(bench_cfg.server, k) for k in
                                      ("rate_limit_per_s", "rate_limit_burst", "max_queue",
                                       "max_concurrent_requests")},
                    "connections": "each phase on a new connection: its first rate_limit_burst requests "
                                   "ride the burst, the rest the sustained rate",
                    "synthetic_nodes": "clustered unit vectors (n/100 centres, noise 0.6) written through "
                                       "memory.nodes.add_embedded before start; texts of 12 words drawn from "
                                       "the word frequencies of CPython's pydoc sentences "
                                       f"({len(word_model()[0])} words), as are the queries' 3 content words",
                    "notes_added": len(NOTES), "never_taught_questions": len(NEVER_TAUGHT),
                    "seconds": round(time.perf_counter() - t_all, 1)}
    save_results(res, out, echo=False)
    plot(res, out.with_suffix(".png"))
    print_summary(res)
    print("\n" + markdown_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
