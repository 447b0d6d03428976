"""`ruvllm-edge warm`: precompute at install time what every start would otherwise redo.

Why (issue 12, "Start fast"): a daemon's start must not pay for work whose
result is the same every time.
- numba kernels: compiled once into numba's on-disk cache (``NUMBA_CACHE_DIR``
  when set - the systemd unit sets it under its ``CacheDirectory=`` - else
  ``__pycache__`` beside the sources), by running every kernel with the
  argument types the daemon uses. The daemon then loads them instead of
  JIT-compiling (seconds on a Pi).
- the first-start router: trained once for this config and stored in the cache
  directory (``router/prior.py``), keyed by a hash of the config and the code it
  depends on; a fresh data dir then copies it instead of training (~2 s here).

It builds the real parts (``Components.build``) on a throwaway data dir, so it
warms exactly what ``serve`` loads. install.sh runs it; running it again is
cheap and idempotent. The report says what was compiled and what was already
cached, per kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import load_config


def warm(cfg: Any, cache_dir: Path) -> dict[str, Any]:
    """Warm numba's cache and install the first-start router for ``cfg``; returns the report."""
    import numba
    import numpy as np

    from .. import kernels
    from ..learning import trainer
    from ..learning.curriculum import curriculum_samples, initial_key
    from ..memory.db import Database
    from ..router import prior
    from ..server.components import Components

    t0 = time.monotonic()
    report: dict[str, Any] = {"cache_dir": str(cache_dir),
                              "numba_cache_dir": numba.config.CACHE_DIR or "(beside the sources)"}
    with tempfile.TemporaryDirectory(prefix="ruvllm-edge-warm-") as tmp:
        data_dir = Path(tmp)
        db = Database(data_dir / "memory.db")
        try:
            comps = Components.build(cfg, db, data_dir, cache_dir=cache_dir)
            if comps.router is None and cfg.router.enabled:
                raise SystemExit(f"ruvllm-edge warm: the router needs the embedder: "
                                 f"{comps.memory_error} (run `ruvllm-edge models fetch`)")
            if comps.router is not None:
                key = initial_key(cfg.router, cfg.learning)
                path = prior.prior_path(cache_dir, key)
                if comps.router_source == "trained":
                    path = prior.install(comps.router, cache_dir, key)
                # The idle-time trainer's kernels (not on the request path, but they
                # should not compile on a Pi's first idle minute either).
                layout = comps.router.layout
                rng = np.random.default_rng(0)
                tc = trainer.TrainConfig.from_configs(cfg.router, cfg.learning)
                seqs = trainer.build_sequences(curriculum_samples(rng, 4), tc.max_seq_len)
                trainer.evaluate(comps.router.state.theta, layout, seqs, tc.reg_weight)
                report["router"] = {"key": key, "path": str(path),
                                    "was": "already installed"
                                    if comps.router_source == "installed" else "trained now"}
            if comps.memory is not None:
                comps.memory.close()
        finally:
            db.close()
    report["kernels"] = kernels.per_kernel()
    report["totals"] = kernels.totals()
    report["seconds"] = round(time.monotonic() - t0, 2)
    return report


def cmd_warm(ns: argparse.Namespace) -> int:
    from .. import logs
    from ..router import prior

    cfg = load_config(ns)
    logs.setup("WARNING", False)
    cache_dir = Path(ns.cache_dir) if ns.cache_dir else prior.default_cache_dir()
    report = warm(cfg, cache_dir)
    if ns.json:
        print(json.dumps(report, indent=2))
        return 0
    t = report["totals"]
    print(f"numba cache: {report['numba_cache_dir']} ({t['compiled']} compiled now, "
          f"{t['from_cache']} already cached)")
    if "router" in report:
        r = report["router"]
        print(f"first-start router: {r['path']} ({r['was']})")
    print(f"warm: done in {report['seconds']} s")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set; byte-code is compiled by install.sh")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("warm", parents=[common],
                       help="precompute numba kernels and the first-start router (install.sh)")
    s.add_argument("--cache-dir", default=None,
                   help="where the first-start router goes (env RUVLLM_EDGE_CACHE, "
                        "default ~/.cache/ruvllm-edge)")
    s.add_argument("--json", action="store_true", help="the full report as JSON")
    s.set_defaults(func=cmd_warm)
