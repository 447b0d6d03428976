"""Start-up after `ruvllm-edge warm`: nothing is trained or JIT-compiled on the way to
the first answers (issue 12, "Start fast"). Not timed: the speed figures are
benchmarks/bench_startup.py's; here the facts behind them are checked.

The warm step runs on an empty numba cache and an empty cache dir of this
test's own (the same two environment variables the systemd unit sets), so it
has to compile every kernel and train the first-start router - and its report
must say so, which shows the counters the daemon is then checked with do see
a compilation when there is one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, TEST_CONFIG, DaemonProcess, write_config

KERNELS_ON_THE_REQUEST_PATH = (
    "ruvllm_edge.router.features._assemble", "ruvllm_edge.router.fastgrnn.infer_step",
    "ruvllm_edge.memory.bitindex.nearest_kernel", "ruvllm_edge.ranking._forward_kernel")


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("warm")
    env = {"RUVLLM_EDGE_CACHE": str(base / "cache"), "NUMBA_CACHE_DIR": str(base / "numba")}
    config = write_config(base / "config.toml", TEST_CONFIG)
    r = subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", "warm", "--json",
                        "--config", str(config)],
                       env={**os.environ, **env}, cwd=str(ROOT), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return {"env": env, "config": config, "report": json.loads(r.stdout), "base": base}


def test_warm_compiles_every_kernel_and_installs_the_router(warmed: dict[str, Any]) -> None:
    rep = warmed["report"]
    assert rep["numba_cache_dir"] == warmed["env"]["NUMBA_CACHE_DIR"]
    assert rep["router"]["was"] == "trained now"
    assert Path(rep["router"]["path"]).is_file()
    assert Path(rep["router"]["path"]).parent.parent == Path(warmed["env"]["RUVLLM_EDGE_CACHE"])
    for name in KERNELS_ON_THE_REQUEST_PATH + ("ruvllm_edge.router.fastgrnn.loss_and_grad_kernel",
                                               "ruvllm_edge.router.fastgrnn.forward_kernel"):
        assert rep["kernels"][name]["compiled"] >= 1, (name, rep["kernels"])
    assert list(Path(warmed["env"]["NUMBA_CACHE_DIR"]).rglob("*.nbi"))   # numba's index files


def test_a_second_warm_finds_everything_done(warmed: dict[str, Any]) -> None:
    r = subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", "warm", "--json",
                        "--config", str(warmed["config"])],
                       env={**os.environ, **warmed["env"]}, cwd=str(ROOT), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["router"]["was"] == "already installed"
    assert rep["totals"]["compiled"] == 0 and rep["totals"]["from_cache"] > 0, rep["totals"]


def test_first_start_after_warm_neither_trains_nor_compiles(
        warmed: dict[str, Any], models_dir: Path, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """A fresh data dir: the router is the installed one, and the first requests
    (a query through the router, a memory write and search) find every kernel
    already loaded from numba's cache - none is compiled, before or after them."""
    for key, value in warmed["env"].items():
        monkeypatch.setenv(key, value)
    data = tmp_path / "fresh"
    assert not (data / "router.npz").exists()
    data.mkdir()
    dp = DaemonProcess(data, models_dir, {}, tmp_path / "fresh.log")   # TEST_CONFIG, like warm's
    dp.start(seed_router=False)
    try:
        c = dp.client()
        comps = c.health()["components"]
        assert comps["router"]["source"] == "installed", dp.log()
        assert comps["kernels"]["compiled"] == 0, comps["kernels"]
        loaded_at_start = comps["kernels"]["from_cache"]
        assert loaded_at_start >= len(KERNELS_ON_THE_REQUEST_PATH)

        c.memory_add("The garage door code is 4711.", kind="fact")
        assert c.memory_search("garage door code", k=3)
        res = c.query("How do I reset the router?", max_tokens=8)
        assert res["routing_info"]["router_version"] == 0, res["routing_info"]

        k = c.health()["components"]["kernels"]
        assert k["compiled"] == 0, k            # nothing was JIT-compiled for these requests
        assert k["from_cache"] == loaded_at_start, k   # ... nor loaded late, on their path
        assert "source" in dp.log() and '"installed"' in dp.log()
    finally:
        dp.close_clients()
        assert dp.stop() == 0
