"""Installed first-start routers: where they live and how a bad one is handled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning.curriculum import initial_router
from ruvllm_edge.router import prior


def test_cache_dir_resolution() -> None:
    """RUVLLM_EDGE_CACHE (the unit sets it) > XDG_CACHE_HOME > ~/.cache."""
    assert prior.default_cache_dir({"RUVLLM_EDGE_CACHE": "/var/cache/ruvllm-edge",
                                    "XDG_CACHE_HOME": "/x", "HOME": "/h"}) == \
        Path("/var/cache/ruvllm-edge")
    assert prior.default_cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == \
        Path("/x/ruvllm-edge")
    assert prior.default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/ruvllm-edge")
    assert prior.default_cache_dir({"RUVLLM_EDGE_CACHE": "", "HOME": "/h"}) == \
        Path("/h/.cache/ruvllm-edge")


def test_install_then_load_round_trips_by_key(tmp_path: Path) -> None:
    r = initial_router(RouterConfig(), LearningConfig())
    path = prior.install(r, tmp_path, "k1")
    assert path == tmp_path / "router" / "initial-k1.npz"
    assert os.stat(path).st_mode & 0o777 == 0o640
    got = prior.load_installed(tmp_path, "k1", RouterConfig())
    assert got is not None and got.version == 0
    assert (got.state.theta == r.state.theta).all()
    assert prior.load_installed(tmp_path, "k2", RouterConfig()) is None   # another key


@pytest.mark.parametrize("damage", ["garbage", "other_shape", "trained_on"])
def test_an_unusable_installed_router_is_ignored_and_left_alone(tmp_path: Path,
                                                                damage: str) -> None:
    r = initial_router(RouterConfig(), LearningConfig())
    path = prior.install(r, tmp_path, "k")
    cfg = RouterConfig()
    if damage == "garbage":
        path.write_bytes(b"nope")
    elif damage == "other_shape":
        cfg = RouterConfig(hidden_dim=16, low_rank=4)
    else:
        r.install(r.state)            # version 1: learned from real use, not a first start
        r.save(path)
    before = path.read_bytes()
    assert prior.load_installed(tmp_path, "k", cfg) is None
    assert path.read_bytes() == before
