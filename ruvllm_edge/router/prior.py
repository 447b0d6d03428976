"""Installed first-start routers: precomputed once by ``ruvllm-edge warm``, found by key.

Why: the first-start router (``learning/curriculum.py``) is deterministic for
a given config and code, and training it costs ~2 s on two x86 cores (far
more on a Pi). ``install.sh`` runs ``ruvllm-edge warm``, which trains it once
and stores it here; a daemon starting on a fresh data dir copies it instead of
training it. The file name carries ``curriculum.initial_key`` (a hash of the
config and the code it depends on), so a different config, or a changed
curriculum, never loads a router that does not match: it trains its own, as
before.

Where: ``RUVLLM_EDGE_CACHE`` when set (the systemd unit sets it to its
``CacheDirectory=``, /var/cache/ruvllm-edge), else ``$XDG_CACHE_HOME/ruvllm-edge``,
else ``~/.cache/ruvllm-edge``. Only ``warm`` writes here; the daemon only reads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from ..config import RouterConfig
from .policy import Router

log = logging.getLogger(__name__)

ENV_CACHE = "RUVLLM_EDGE_CACHE"
PRIOR_DIR = "router"


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The cache directory ``warm`` writes and the daemon reads (see the module doc)."""
    env = os.environ if env is None else env
    if env.get(ENV_CACHE):
        return Path(env[ENV_CACHE])
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".cache"
    return base / "ruvllm-edge"


def prior_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / PRIOR_DIR / f"initial-{key}.npz"


def load_installed(cache_dir: Path, key: str, cfg: RouterConfig) -> Router | None:
    """The installed first-start router for ``key``, or None (absent or unusable: train it).

    Never raises: a damaged cache file costs a training run, not the start.
    The file is read, never renamed or removed (it may be shared and read-only).
    """
    path = prior_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        router = Router.load(path, cfg)
    except (ValueError, OSError, KeyError) as exc:
        log.warning("installed first-start router unusable; training one",
                    extra={"path": str(path), "error": str(exc)})
        return None
    if router.version != 0:
        log.warning("installed first-start router is not version 0; training one",
                    extra={"path": str(path), "version": router.version})
        return None
    return router


def install(router: Router, cache_dir: Path, key: str, mode: int = 0o640) -> Path:
    """Store a freshly trained first-start router under ``key`` (``warm`` only).

    0640: the service group may read it when an operator warms as another user.
    """
    path = prior_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    router.save(path, mode=mode)
    return path
