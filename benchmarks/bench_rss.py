"""Resident memory: what each part of the daemon costs, and the daemon's RSS against its goals.

Goals (issue 12): <= 450 MB RSS with the model loaded and 100K memory nodes;
<= 250 MB idle with the model unloaded.

Two measurements, each repeated ``--runs`` times (medians reported):

1. ``staged``: a fresh interpreter builds the daemon's parts one at a time
   (the same classes and options the daemon uses) and reads /proc/self/status
   after each step. The delta of a step is what that part adds *in this order*
   (a library already imported by an earlier step is not counted again).
2. ``daemon``: a real ``ruvllm-edge serve`` on a data dir pre-filled with N
   synthetic nodes (vectors inserted through the store API, as bench_memory
   does, so 100K texts need not be embedded). RSS is read from
   /proc/PID/status: idle after start (model never loaded), loaded (just after
   one answered query), and after the keep-alive unload.

VmRSS = RssAnon + RssFile + RssShmem. RssFile counts pages of mapped files
(shared libraries, mmapped GGUF weights): the kernel can drop and re-read them
under pressure, and they are shared with other processes mapping the same file.
RssAnon is the process's own heap: the part that only exits with the process.

Usage: python benchmarks/bench_rss.py [--nodes 0 10000 100000] [--runs 3] [--quick]
Writes benchmarks/results/bench_rss.json. ``measure(models_dir, nodes=...)`` is
importable (bench_e2e calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import BenchDaemon, save_results  # noqa: E402
from ruvllm_edge import fsutil  # noqa: E402

DIM = 384
QUESTION = "Explain in two sentences why the sky is blue."
FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS / RssAnon / RssFile / RssShmem of a process, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in FIELDS:
                out[key] = int(rest.split()[0]) / 1024
    return out


# ---------------------------------------------------------------------------
# Data dir filled through the store API


def fill_data_dir(data: Path, nodes: int, seed: int = 0) -> None:
    """memory.db with ``nodes`` synthetic unit vectors around nodes/100 centres."""
    from ruvllm_edge.config import MemoryConfig
    from ruvllm_edge.memory.db import DB_NAME, Database
    from ruvllm_edge.memory import nodes as node_ops

    data.mkdir(parents=True, exist_ok=True)
    db = Database(data / DB_NAME)
    if nodes:
        rng = np.random.default_rng(seed)
        centres = rng.standard_normal((max(1, nodes // 100), DIM)).astype(np.float32)
        cfg = MemoryConfig(max_nodes=max(nodes * 2, 100))
        for s in range(0, nodes, 2000):
            m = min(nodes, s + 2000) - s
            x = centres[rng.integers(0, len(centres), m)] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            node_ops.add_embedded(db, cfg, [f"synthetic note {i} about topic {i % 97}" for i in range(s, s + m)],
                                  x, "document")
    db.checkpoint()
    db.close()


# ---------------------------------------------------------------------------
# 1. Staged in-process build (runs in a child interpreter)

STAGED = r"""
import gc, json, sys, time
from pathlib import Path
def st():
    out = {}
    for line in open('/proc/self/status'):
        k, _, v = line.partition(':')
        if k in ('VmRSS', 'RssAnon', 'RssFile', 'RssShmem'):
            out[k] = int(v.split()[0]) / 1024
    return out
rows = []
def mark(name):
    gc.collect()
    rows.append([name, st()])
args = json.loads(sys.argv[1])
mark('interpreter')
import numpy as np
mark('numpy')
import numba
mark('numba + llvmlite import')
from ruvllm_edge import config as config_mod
from ruvllm_edge.memory.db import DB_NAME, Database
mark('sqlean + sqlite-vec + project modules')
cfg = config_mod.load(args['config'], data_dir=args['data'], models_dir=args['models'])
db = Database(Path(args['data']) / DB_NAME, cfg.memory.sqlite_cache_mb)
mark('database open')
import onnxruntime
mark('onnxruntime import')
import tokenizers
from ruvllm_edge import models as catalogue
from ruvllm_edge.embedding import Embedder
mark('tokenizers import')
e = cfg.embedding
mp, _ = catalogue.resolve(e.model, cfg.models_dir)
tp, _ = catalogue.resolve(catalogue.EMBEDDER_TOKENIZER[e.model], cfg.models_dir)
emb = Embedder(mp, tp, threads=e.threads, cache_entries=e.cache_entries,
               max_seq_tokens=e.max_seq_tokens, batch_size=e.batch_size)
mark('embedder (onnx session + 2 tokenizers)')
texts = [f'note {i}: ' + 'the quick brown fox jumps over the lazy dog ' * (1 + i % 12) for i in range(64)]
emb.embed_batch(texts)
mark('embedder after 64 texts (arena, cache)')
t1 = tokenizers.Tokenizer.from_file(str(tp)); t2 = tokenizers.Tokenizer.from_file(str(tp))
mark('2 more tokenizers (the embedder\'s tokenizer share)')
del t1, t2
from ruvllm_edge.learning.curriculum import initial_router
from ruvllm_edge.router.policy import Router
rp = Path(args['data']) / 'router.npz'
router = Router.load_usable(rp, cfg.router) or initial_router(cfg.router, cfg.learning)
from ruvllm_edge.router.features import N_FEATURES
router.predict(np.zeros(N_FEATURES, dtype=np.float32))
mark('router (numba kernels loaded)')
from ruvllm_edge.memory.store import MemoryStore
store = MemoryStore(db, cfg.memory, emb)
mark('memory store + bit index (sign codes)')
for q in ('what did I note about topic 3', 'the quick brown fox', 'where are my keys'):
    store.retrieve(q, emb.embed(q), cfg.memory.knn_k, min_relevance=0.0)
mark('3 retrievals (SQLite page cache, ranking kernel)')
import llama_cpp
mark('llama_cpp import')
from ruvllm_edge.inference import InferenceEngine
eng = InferenceEngine(cfg.inference, cfg.system, cfg.models_dir)
eng.info()
mark('llama vocab-only instance')
eng.ensure_loaded()
mark('model loaded (weights + KV cache)')
plan = eng.plan(cfg.inference.system_prompt, [], args['question'], 64)
eng.generate(plan, temperature=0.0, top_p=1.0)
mark('after one generation')
eng.unload()
mark('model unloaded')
import ctypes
ctypes.CDLL('libc.so.6').malloc_trim(0)
mark('malloc_trim(0)')
store.close(); db.close()
print(json.dumps(rows))
"""


def staged_once(models_dir: Path, data: Path, config_path: Path, env: dict[str, str] | None = None
                ) -> list[tuple[str, dict[str, float]]]:
    args = {"config": str(config_path), "data": str(data), "models": str(models_dir),
            "question": QUESTION}
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    out = subprocess.run([sys.executable, "-c", STAGED, json.dumps(args)], capture_output=True,
                         text=True, env=e, cwd=str(ROOT), timeout=300)
    if out.returncode != 0:
        raise SystemExit(f"staged build failed:\n{out.stderr[-3000:]}")
    return [(n, s) for n, s in json.loads(out.stdout.strip().splitlines()[-1])]


def summarise_staged(runs: list[list[tuple[str, dict[str, float]]]]) -> list[dict[str, Any]]:
    """Per stage: median absolute figures and median delta over the previous stage."""
    rows = []
    for i, (name, _) in enumerate(runs[0]):
        row: dict[str, Any] = {"stage": name}
        for f in FIELDS:
            row[f"{f}_mb"] = round(statistics.median(r[i][1].get(f, 0.0) for r in runs), 1)
            prev = [r[i - 1][1].get(f, 0.0) if i else 0.0 for r in runs]
            row[f"delta_{f}_mb"] = round(statistics.median(
                r[i][1].get(f, 0.0) - p for r, p in zip(runs, prev)), 1)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# 2. The real daemon


def toml_text(overrides: dict[str, dict[str, Any]], base: Path | None = None) -> str:
    """config/edge.toml (or ``base``) with section keys overridden, as TOML text."""
    raw = tomllib.loads((base or ROOT / "config" / "edge.toml").read_text())
    for sec, kv in overrides.items():
        raw.setdefault(sec, {}).update(kv)

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    return "".join(f"[{sec}]\n" + "".join(f"{k} = {val(v)}\n" for k, v in kv.items()) + "\n"
                   for sec, kv in raw.items())


def daemon_once(models_dir: Path, data: Path, overrides: dict[str, dict[str, Any]],
                settle_s: float = 2.0) -> dict[str, Any]:
    """idle / loaded / unloaded RSS of one daemon start on ``data``."""
    ov = {k: dict(v) for k, v in overrides.items()}
    ov.setdefault("inference", {}).setdefault("keep_alive_s", 3)
    d = BenchDaemon(data, models_dir, toml_text(ov))
    out: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        d.start()
        out["healthy_s"] = round(time.monotonic() - t0, 2)
        pid = d.proc.pid
        time.sleep(settle_s)
        out["idle"] = proc_status(pid)
        with d.client() as c:
            r = c.query(QUESTION, use_memory=True)
            out["loaded"] = proc_status(pid)
            out["route"] = (r.get("route") or {}).get("mode") if isinstance(r.get("route"), dict) else r.get("route")
            state = c.health()["components"]["inference"]["state"]
            out["loaded_state"] = state
            end = time.monotonic() + 30
            while time.monotonic() < end and c.health()["components"]["inference"]["state"] == "loaded":
                time.sleep(0.5)
            time.sleep(1.0)
            out["unloaded"] = proc_status(pid)
    finally:
        d.stop()
    return out


def med(xs: Sequence[float]) -> float:
    return round(statistics.median(xs), 1)


def summarise_daemon(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs), "healthy_s_median": med([r["healthy_s"] for r in runs]),
                           "loaded_state": [r["loaded_state"] for r in runs]}
    for phase in ("idle", "loaded", "unloaded"):
        for f in FIELDS:
            out[f"{phase}_{f}_mb"] = med([r[phase].get(f, 0.0) for r in runs])
        out[f"{phase}_VmRSS_mb_all"] = [round(r[phase]["VmRSS"], 1) for r in runs]
    return out


# ---------------------------------------------------------------------------


def measure(models_dir: str | Path, nodes: Sequence[int] = (0, 100_000), runs: int = 3,
            staged: bool = True, daemon: bool = True,
            overrides: dict[str, dict[str, Any]] | None = None,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """RSS figures per node count: the staged breakdown and the real daemon's idle/loaded/unloaded.

    ``overrides``: config keys changed from config/edge.toml, e.g.
    {"inference": {"n_ctx_tokens": 1024}}. ``env``: extra environment for the
    staged child (e.g. MALLOC_ARENA_MAX). Returns plain data (JSON-ready).
    """
    models_dir = Path(models_dir).resolve()
    overrides = overrides or {}
    res: dict[str, Any] = {"goal_loaded_100k_mb": 450, "goal_idle_unloaded_mb": 250,
                           "overrides": overrides, "runs": runs, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench_rss_") as tmp:
        for n in nodes:
            base = Path(tmp) / f"seed_{n}"
            t = time.perf_counter()
            fill_data_dir(base, n)
            entry: dict[str, Any] = {"nodes": n, "fill_s": round(time.perf_counter() - t, 1),
                                     "db_mb": round((base / "memory.db").stat().st_size / 2**20, 1)}
            cfg_path = Path(tmp) / "staged.toml"
            fsutil.atomic_write(cfg_path, toml_text(overrides))
            if staged:
                srun = []
                for i in range(runs):
                    data = Path(tmp) / f"staged_{n}_{i}"
                    subprocess.run(["cp", "-a", str(base), str(data)], check=True)
                    srun.append(staged_once(models_dir, data, cfg_path, env))
                entry["staged"] = summarise_staged(srun)
            if daemon:
                druns = []
                for i in range(runs):
                    data = Path(tmp) / f"daemon_{n}_{i}"
                    subprocess.run(["cp", "-a", str(base), str(data)], check=True)
                    druns.append(daemon_once(models_dir, data, overrides))
                entry["daemon"] = summarise_daemon(druns)
            res["sizes"][str(n)] = entry
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[0, 10_000, 100_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="nodes 0 and 10000, one run")
    ap.add_argument("--no-staged", action="store_true")
    ap.add_argument("--no-daemon", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override (TOML value), e.g. inference.n_ctx_tokens=1024")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_rss.json"))
    a = ap.parse_args()
    nodes, runs = ([0, 10_000], 1) if a.quick else (a.nodes, a.runs)
    overrides: dict[str, dict[str, Any]] = {}
    for s in a.set:
        key, _, v = s.partition("=")
        sec, _, k = key.partition(".")
        overrides.setdefault(sec, {})[k] = tomllib.loads(f"v = {v}")["v"]
    res = measure(ROOT / "models", nodes=nodes, runs=runs, staged=not a.no_staged,
                  daemon=not a.no_daemon, overrides=overrides)
    res["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                      "python": platform.python_version(),
                      "loadavg_at_end": os.getloadavg()}
    for n, e in res["sizes"].items():
        print(f"--- {n} nodes (db {e['db_mb']} MB)")
        for r in e.get("staged", []):
            print(f"  {r['stage']:<52} RSS {r['VmRSS_mb']:7.1f}  +{r['delta_VmRSS_mb']:6.1f}  "
                  f"(anon +{r['delta_RssAnon_mb']:6.1f}, file +{r['delta_RssFile_mb']:6.1f})")
        dm = e.get("daemon")
        if dm:
            for phase in ("idle", "loaded", "unloaded"):
                print(f"  daemon {phase:<9} VmRSS {dm[f'{phase}_VmRSS_mb']:7.1f}  anon "
                      f"{dm[f'{phase}_RssAnon_mb']:7.1f}  file {dm[f'{phase}_RssFile_mb']:7.1f}  "
                      f"all {dm[f'{phase}_VmRSS_mb_all']}")
    save_results(res, a.out, echo=False)


if __name__ == "__main__":
    main()
