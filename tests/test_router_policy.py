"""The decision layer: decisions, fallback, hidden state, atomic persistence."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge import fsutil
from ruvllm_edge.config import LearningConfig, RouterConfig
from ruvllm_edge.learning.curriculum import initial_router
from ruvllm_edge.router import policy as P
from ruvllm_edge.router.features import N_FEATURES, FeatureInputs, build_features

DEFAULTS = {"max_tokens": 256, "temperature": 0.7, "top_p": 0.9}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def router() -> P.Router:
    return initial_router(RouterConfig(), LearningConfig())


def _inp(query: str = "What is the wifi password?", **kw: object) -> FeatureInputs:
    v = np.random.default_rng(11).standard_normal(384).astype(np.float32)
    return dataclasses.replace(FeatureInputs(query=query, query_tokens=8,
                                             query_vec=v / np.linalg.norm(v)), **kw)


def test_decide_returns_decision_and_next_hidden(router: P.Router) -> None:
    x = build_features(_inp(retrieval={"n_hits": 5, "top_sim": 0.6, "mean_sim": 0.4}))
    d, h1 = router.decide(x, None, DEFAULTS)
    assert h1.shape == (router.layout.hidden,) and np.abs(h1).sum() > 0
    d2, h2 = router.decide(x, h1, DEFAULTS)
    assert not np.allclose(h1, h2)  # the state moves on with the session
    info = d.to_info()
    assert set(info) >= {"context_k", "mode", "max_tokens", "temperature", "top_p",
                         "confidence", "fallback", "router_version"}
    assert d.context_k in P.CONTEXT_CLASSES and d.mode in P.MODES
    assert 0.0 <= d.confidence <= 1.0 and 0 < d.temperature <= 2 and 0 < d.top_p <= 1
    assert d.max_tokens <= DEFAULTS["max_tokens"]


def test_low_confidence_falls_back_to_defaults(router: P.Router) -> None:
    strict = P.Router(router.layout, router.state, RouterConfig(confidence_threshold=1.0))
    x = build_features(_inp())
    d, _ = strict.decide(x, None, DEFAULTS)
    assert d.fallback
    assert (d.max_tokens, d.temperature, d.top_p) == (256, 0.7, 0.9)
    assert d.context_k == RouterConfig().fallback_context_k and d.mode == "long"
    d, _ = strict.decide(x, None, {**DEFAULTS, "context_k": 2, "mode": "short"})
    assert (d.context_k, d.mode) == (2, "short")
    off = P.Router(router.layout, router.state, RouterConfig(enabled=False))
    assert off.decide(x, None, DEFAULTS)[0].fallback


def test_decide_rejects_bad_input(router: P.Router) -> None:
    with pytest.raises(ValueError, match="shape"):
        router.decide(np.zeros(N_FEATURES + 1, dtype=np.float32), None, DEFAULTS)
    with pytest.raises(ValueError, match="hidden"):
        router.decide(np.zeros(N_FEATURES, dtype=np.float32), np.zeros(3, np.float32), DEFAULTS)
    with pytest.raises(ValueError, match="max_tokens"):
        router.decide(np.zeros(N_FEATURES, dtype=np.float32), None, {"temperature": 0.5})
    with pytest.raises(ValueError, match="decision class"):
        router.decision_for(7, 0, 0.5, 0.9, 100)


def test_hidden_state_blob_round_trip(router: P.Router) -> None:
    _, h = router.decide(build_features(_inp()), None, DEFAULTS)
    back = P.decode_hidden(P.encode_hidden(h), router.layout.hidden)
    np.testing.assert_array_equal(back, h)
    assert P.decode_hidden(P.encode_hidden(h), router.layout.hidden + 1) is None
    assert P.decode_hidden(None, router.layout.hidden) is None


def test_model_bytes_round_trip(router: P.Router) -> None:
    layout, theta = P.params_from_model_bytes(router.model_bytes())
    assert layout == router.layout
    np.testing.assert_allclose(theta, router.state.theta, rtol=1e-6, atol=1e-7)


def _modified(router: P.Router) -> P.Router:
    r = P.Router(router.layout, router.state, RouterConfig(), router.version)
    s = r.state
    s.theta[router.layout.block("bc")] += 0.5
    s.m += 0.01
    s.t = 17
    s.fisher[:] = 0.25
    r.install(s)
    return r


def test_save_and_load_round_trip(router: P.Router, tmp_path: Path) -> None:
    r = _modified(router)
    path = tmp_path / "router.npz"
    r.save(path)
    back = P.Router.load(path, RouterConfig())
    assert back.version == r.version == router.version + 1
    for a, b in zip(dataclasses.astuple(back.state), dataclasses.astuple(r.state)):
        np.testing.assert_array_equal(a, b)
    x = build_features(_inp())
    assert back.decide(x, None, DEFAULTS)[0] == r.decide(x, None, DEFAULTS)[0]


def test_exception_after_temp_write_keeps_previous_file(router: P.Router, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "router.npz"
    router.save(path)
    newer = _modified(router)

    def boom(src: object, dst: object) -> None:
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(fsutil.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        newer.save(path)
    monkeypatch.undo()
    back = P.Router.load(path, RouterConfig())
    assert back.version == router.version
    np.testing.assert_array_equal(back.state.theta, router.state.theta)
    assert [p.name for p in tmp_path.iterdir()] == ["router.npz"]


def test_kill_during_save_keeps_previous_file(router: P.Router, tmp_path: Path) -> None:
    """A real SIGKILL after the temp file is written and synced, before the rename."""
    path = tmp_path / "router.npz"
    router.save(path)
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from ruvllm_edge.config import RouterConfig
        from ruvllm_edge.router import policy as P
        r = P.Router.load(Path({str(path)!r}), RouterConfig())
        s = r.state
        s.theta *= 1.5
        r.install(s)
        real_fsync = os.fsync
        def die(fd):
            real_fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = die
        r.save(Path({str(path)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = list(tmp_path.glob(".tmp-router.npz.*"))
    assert leftovers, "the child should have died mid-save"
    back = P.Router.load(path, RouterConfig())
    assert back.version == router.version
    np.testing.assert_array_equal(back.state.theta, router.state.theta)
    router.save(path)        # a fresh leftover may be a live writer's: it is kept
    assert list(tmp_path.glob(".tmp-router.npz.*")) == leftovers
    old = time.time() - 2 * 3600
    for f in leftovers:
        os.utime(f, (old, old))
    router.save(path)        # an hour-old one is a crashed writer's: it goes
    assert [p.name for p in tmp_path.iterdir()] == ["router.npz"]


def test_save_is_private_whatever_the_umask(router: P.Router, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        router.save(tmp_path / "router.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "router.npz").stat().st_mode) == 0o600


def test_concurrent_saves_never_leave_a_torn_file(router: P.Router, tmp_path: Path) -> None:
    """Training, a backup's before() and shutdown may save at once; a reader loads meanwhile.

    Every load must succeed, the file left last must hold the newest installed
    state, and no temporary file may be left behind.
    """
    path = tmp_path / "router.npz"
    r = P.Router(router.layout, router.state, RouterConfig(), router.version)
    r.save(path)
    errors: list[BaseException] = []
    loads = [0]
    stop = threading.Event()

    def trainer() -> None:           # installs new states and saves, like the idle job
        try:
            for _ in range(12):
                s = r.state
                s.theta[r.layout.block("bc")] += 0.01
                r.install(s)
                r.save(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def saver() -> None:              # backup before() / shutdown: save whatever is current
        try:
            for _ in range(12):
                r.save(path)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            try:
                P.Router.load(path, RouterConfig())
                loads[0] += 1
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    rd = threading.Thread(target=reader)
    rd.start()
    writers = [threading.Thread(target=trainer)] + [threading.Thread(target=saver)
                                                    for _ in range(3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(120)
    stop.set()
    rd.join(60)
    assert not errors, errors[:3]
    assert loads[0] > 0
    back = P.Router.load(path, RouterConfig())
    assert back.version == r.version == router.version + 12
    np.testing.assert_array_equal(back.state.theta, r.state.theta)
    assert [p.name for p in tmp_path.iterdir()] == ["router.npz"]


def test_unusable_file_is_kept_aside(router: P.Router, tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    path.write_bytes(b"not a zip file at all")
    assert P.Router.load_usable(path, RouterConfig()) is None   # the caller starts afresh
    assert list(tmp_path.glob("router.npz.unusable-*")) and not path.exists()
    assert P.Router.load_usable(path, RouterConfig()) is None   # no file: nothing to keep aside
    router.save(path)
    other = RouterConfig(hidden_dim=16, low_rank=4)
    with pytest.raises(ValueError, match="hidden"):
        P.Router.load(path, other)


def test_router_never_imports_learning() -> None:
    """learning/ trains the router; the router itself must not depend on it (no cycle)."""
    import importgraph

    g = importgraph.graph()
    for mod in (m for m in g if m.startswith("ruvllm_edge.router")):
        assert not any(d.startswith("ruvllm_edge.learning")
                       for d in importgraph.reachable(g, mod)), mod


def test_a_router_not_ready_falls_back_never_saves_nor_installs_until_initialised(
        router: P.Router, tmp_path: Path) -> None:
    """The placeholder served while the first-start weights train in the background."""
    placeholder = P.Router(router.layout, router.state, router.cfg, version=0, ready=False)
    x = np.zeros(N_FEATURES, dtype=np.float32)
    defaults = {"max_tokens": 50, "temperature": 0.5, "top_p": 0.8}
    d, h = placeholder.decide(x, None, defaults)
    assert d.fallback and d.confidence == 0.0 and not h.any()
    placeholder.save(tmp_path / "r.npz")
    assert not (tmp_path / "r.npz").exists()
    assert placeholder.install(router.state) == 0          # a training run's result: dropped
    placeholder.install_initial(router.state)
    assert placeholder.ready and placeholder.version == 0
    assert placeholder.decide(x, None, defaults)[0] == router.decide(x, None, defaults)[0]
    placeholder.save(tmp_path / "r.npz")
    assert (tmp_path / "r.npz").exists()
