"""Start-up: seconds from `ruvllm-edge serve` to the first `health` answer.

Scenarios, each started N times, interleaved round by round (so load from other
processes on a shared machine hits them alike), every one on its own numba
cache directory and start-up cache directory (``NUMBA_CACHE_DIR``,
``RUVLLM_EDGE_CACHE``), the default config and the real models:

- ``restart``: a warm install restarting on its data dir (router.npz saved);
- ``first_start``: a warm install (``ruvllm-edge warm`` ran) on a fresh data dir;
- ``first_start_unwarmed``: warm numba cache but no installed router for the
  config: the daemon serves the fallback while the curriculum router trains
  in the background (health ``router.status`` ``starting``);
- ``cold``: nothing warmed (empty numba cache, no installed router): a fresh
  install that skipped the warm step; the kernels JIT-compile before the
  first answer. Slow; ``--cold`` runs (default 3).

Byte-code is compiled first (install.sh does; the unit sets
PYTHONDONTWRITEBYTECODE). Also timed once: the warm step itself on the empty caches. With ``--baseline
SRC`` another checkout (e.g. the previous version) is measured in the same
rounds (``baseline_restart``, ``baseline_first_start``) for a before/after.
Each start records what health said: the router's source and how many kernels
numba compiled in that process (0 = nothing JIT-compiled).

Goals (issue 12): healthy in <= 2 s warm, <= 3 s on the very first start.

Usage: python benchmarks/bench_startup.py [--n 5] [--cold 3] [--baseline /path/to/old/checkout]
``measure(models_dir, n)`` is importable (bench_e2e).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import RESULTS_DIR, save_results  # noqa: E402
from ruvllm_edge.client import Client  # noqa: E402

GOALS_S = {"restart": 2.0, "first_start": 3.0}


def _env(src: Path, numba_dir: Path, cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUVLLM_EDGE_CONFIG", "RUVLLM_EDGE_DATA", "RUVLLM_EDGE_ENDPOINT")}
    env.update(PYTHONPATH=str(src), NUMBA_CACHE_DIR=str(numba_dir),
               RUVLLM_EDGE_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
    return env


def start_once(src: Path, models_dir: Path, data_dir: Path, env: dict[str, str],
               timeout_s: float = 180.0) -> dict[str, Any]:
    """Start `serve`, time the first health answer, stop it (SIGTERM, waited for)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    endpoint = f"ipc://{data_dir}/bench.sock"
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ruvllm_edge.cli", "serve", "--data-dir",
                             str(data_dir), "--endpoint", endpoint, "--models-dir",
                             str(models_dir)], stdout=log, stderr=log, env=env, cwd=str(src))
    log.close()
    health: dict[str, Any] | None = None
    try:
        with Client(endpoint, timeout_s=1.0) as c:
            while time.monotonic() - t0 < timeout_s:
                if proc.poll() is not None:
                    raise SystemExit(f"daemon exited with {proc.returncode}; see {log.name}")
                try:
                    health = c.health(timeout_s=0.25)
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.01)
        seconds = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if health is None:
        raise SystemExit(f"daemon not healthy after {timeout_s} s; see {log.name}")
    comps = health.get("components", {})
    return {"s": round(seconds, 3), "status": health.get("status"),
            "router_source": comps.get("router", {}).get("source"),
            "kernels_compiled": comps.get("kernels", {}).get("compiled")}


def _warm(src: Path, models_dir: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", "warm", "--models-dir",
                    str(models_dir)], env=env, cwd=str(src), check=True,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def _compile_bytecode(src: Path) -> None:
    """What install.sh does: the service never writes byte-code, so it must exist."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "ruvllm_edge")],
                   check=True, stdout=subprocess.DEVNULL)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    xs = [r["s"] for r in runs]
    return {"median_s": round(statistics.median(xs), 3), "min_s": min(xs), "max_s": max(xs),
            "n": len(xs), "router_source": sorted({str(r["router_source"]) for r in runs}),
            "kernels_compiled": sorted({str(r["kernels_compiled"]) for r in runs}), "runs": xs}


def measure(models_dir: Path | str, n: int = 5, *, n_cold: int = 3,
            baseline: Path | str | None = None) -> dict[str, Any]:
    """Medians over ``n`` starts per scenario (``n_cold`` for ``cold``); see the module doc."""
    models_dir = Path(models_dir).resolve()
    base_src = Path(baseline).resolve() if baseline else None
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        t = Path(tmp)
        warm_env = _env(ROOT, t / "numba", t / "cache")
        unwarmed_env = _env(ROOT, t / "numba", t / "cache-empty")
        _compile_bytecode(ROOT)
        warm_s = _warm(ROOT, models_dir, warm_env)          # on empty caches: the full cost
        plans: dict[str, tuple[Path, dict[str, str], bool]] = {
            "restart": (ROOT, warm_env, False),
            "first_start": (ROOT, warm_env, True),
            "first_start_unwarmed": (ROOT, unwarmed_env, True),
        }
        if base_src is not None:
            benv = _env(base_src, t / "numba-baseline", t / "cache-baseline")
            _compile_bytecode(base_src)
            start_once(base_src, models_dir, t / "baseline-prime", benv)   # its kernels cached
            plans["baseline_restart"] = (base_src, benv, False)
            plans["baseline_first_start"] = (base_src, benv, True)
        for name, (src, env, _) in plans.items():   # the restart scenarios' data dirs
            start_once(src, models_dir, t / f"{name}-0", env)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plans}
        runs["cold"] = []
        for i in range(n):
            for name, (src, env, fresh) in plans.items():
                d = t / f"{name}-{i + 1 if fresh else 0}"
                runs[name].append(start_once(src, models_dir, d, env))
                if fresh:
                    shutil.rmtree(d, ignore_errors=True)
            if i < n_cold:
                cold = _env(ROOT, t / f"numba-cold-{i}", t / f"cache-cold-{i}")
                runs["cold"].append(start_once(ROOT, models_dir, t / f"cold-{i}", cold))
                shutil.rmtree(t / f"numba-cold-{i}", ignore_errors=True)
    out: dict[str, Any] = {name: _summary(r) for name, r in runs.items() if r}
    out["warm_step_s"] = round(warm_s, 2)
    out["goals_s"] = GOALS_S
    out["meets_goals"] = {k: out[k]["median_s"] <= v for k, v in GOALS_S.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5, help="starts per scenario")
    ap.add_argument("--cold", type=int, default=3, help="starts with empty caches")
    ap.add_argument("--baseline", default=None, help="another checkout, measured alongside")
    ap.add_argument("--baseline-label", default=None, help="what the baseline is (e.g. a commit)")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--out", default=str(RESULTS_DIR / "bench_startup.json"))
    a = ap.parse_args()
    res = measure(a.models_dir, a.n, n_cold=a.cold, baseline=a.baseline)
    load = os.getloadavg()
    save_results({"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "python": platform.python_version(),
                              "loadavg_at_end": [round(x, 2) for x in load]},
                  "baseline_src": a.baseline, "baseline_label": a.baseline_label, **res}, a.out)


if __name__ == "__main__":
    main()
