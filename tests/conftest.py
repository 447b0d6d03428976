"""Shared fixtures: a temporary data dir, the real models, a real daemon process.

The daemon fixture runs ``python -m ruvllm_edge.cli serve`` as a subprocess on
an ipc:// socket inside the test's data dir, with the real SmolLM2 GGUF and
MiniLM ONNX models that install.sh fetched into ./models.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ruvllm_edge import models as catalogue
from ruvllm_edge.client import Client
from ruvllm_edge.errors import ClientError

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("RUVLLM_EDGE_MODELS", ROOT / "models"))


def _require_models() -> Path:
    missing = [n for n in catalogue.REQUIRED if not catalogue.path_of(n, MODELS_DIR).is_file()]
    if missing:
        pytest.fail(f"models missing in {MODELS_DIR}: {missing}; run ./install.sh (it fetches "
                    "them) or `ruvllm-edge models fetch`", pytrace=False)
    return MODELS_DIR


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return _require_models()


@pytest.fixture(scope="session")
def llm_path(models_dir: Path) -> Path:
    return catalogue.path_of(catalogue.DEFAULT_LLM, models_dir)


@pytest.fixture(scope="session")
def embedder_paths(models_dir: Path) -> tuple[Path, Path]:
    return (catalogue.path_of("minilm-l6-int8", models_dir),
            catalogue.path_of("minilm-l6-int8-tokenizer", models_dir))


@pytest.fixture(scope="module")
def emb(embedder_paths: tuple[Path, Path]) -> Any:
    """The real int8 MiniLM embedder (one per test module: it keeps an LRU cache)."""
    from ruvllm_edge.embedding import Embedder
    return Embedder(*embedder_paths)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    """A fresh, migrated SQLite file."""
    from ruvllm_edge.memory.db import Database
    d = Database(tmp_path / "memory.db")
    yield d
    d.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def write_config(path: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in overrides.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# Defaults for test daemons: quiet learning (tests trigger it explicitly) and
# the model kept loaded between requests.
TEST_CONFIG: dict[str, dict[str, Any]] = {
    "system": {"log_level": "INFO"},
    "inference": {"keep_alive_s": -1, "n_ctx_tokens": 2048},
    "learning": {"idle_after_s": 3600.0},
}


_ROUTER_SEED: list[Path] = []
_ALL_DAEMONS: list["DaemonProcess"] = []


@pytest.fixture(scope="session", autouse=True)
def no_daemon_outlives_the_session() -> Iterator[None]:
    """Backstop: a daemon a test forgot to stop is stopped (or killed) at the end."""
    yield
    for dp in _ALL_DAEMONS:
        if dp.proc is not None and dp.proc.poll() is None:
            try:
                dp.stop(timeout_s=20)
            except RuntimeError:
                pass


@pytest.fixture(scope="session", autouse=True)
def router_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One first-start router per test session, copied into new data dirs.

    A fresh data dir otherwise spends ~5 s deriving the same deterministic
    initial policy (tests/test_router_policy.py covers that path itself).
    """
    from ruvllm_edge.config import LearningConfig, RouterConfig
    from ruvllm_edge.learning.curriculum import initial_router

    path = tmp_path_factory.getbasetemp() / "router-seed.npz"
    initial_router(RouterConfig(), LearningConfig()).save(path)
    _ROUTER_SEED[:] = [path]
    return path


class DaemonProcess:
    """A real daemon subprocess with helpers to talk to it, kill it and restart it."""

    def __init__(self, data_dir: Path, models_dir: Path, config: dict[str, dict[str, Any]],
                 log_path: Path) -> None:
        self.data_dir = data_dir
        self.models_dir = models_dir
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in TEST_CONFIG.items()}
        for section, values in config.items():
            merged.setdefault(section, {}).update(values)
        self.config_path = write_config(data_dir.parent / f"{data_dir.name}.toml", merged)
        self.endpoint = f"ipc://{data_dir / 'ruvllm-edge.sock'}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[Client] = []
        _ALL_DAEMONS.append(self)

    def start(self, wait_s: float = 60.0, seed_router: bool = True) -> "DaemonProcess":
        router = self.data_dir / "router.npz"
        if seed_router and _ROUTER_SEED and not router.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_ROUTER_SEED[0], router)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ruvllm_edge.cli", "serve", "--config", str(self.config_path),
             "--data-dir", str(self.data_dir), "--models-dir", str(self.models_dir)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        log.close()
        self.wait_ready(wait_s)
        return self

    def wait_ready(self, wait_s: float) -> None:
        end = time.monotonic() + wait_s
        with self.new_client(timeout_s=1.0) as c:
            while time.monotonic() < end:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    c.health(timeout_s=1.0)
                    return
                except ClientError:
                    time.sleep(0.1)
        raise RuntimeError(f"daemon not ready after {wait_s} s:\n{self.log()}")

    def new_client(self, timeout_s: float) -> Client:
        """A client for this daemon's endpoint (subclasses add transport security)."""
        return Client(self.endpoint, timeout_s=timeout_s)

    def client(self, timeout_s: float = 120.0) -> Client:
        """A client closed by the fixture's teardown."""
        c = self.new_client(timeout_s)
        self._clients.append(c)
        return c

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"daemon did not stop on SIGTERM within {timeout_s} s") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close_clients(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()


@pytest.fixture
def start_daemon(tmp_path: Path, models_dir: Path) -> Iterator[Any]:
    """Factory: start_daemon(config={...}, data_dir=...) -> running DaemonProcess."""
    started: list[DaemonProcess] = []

    def start(config: dict[str, dict[str, Any]] | None = None, data_dir: Path | None = None,
              name: str = "data") -> DaemonProcess:
        d = data_dir or tmp_path / name
        d.mkdir(parents=True, exist_ok=True)
        dp = DaemonProcess(d, models_dir, config or {}, tmp_path / f"{name}.log")
        started.append(dp)
        return dp.start()

    yield start
    for dp in started:
        dp.close_clients()
        try:
            dp.stop()
        except RuntimeError:
            pass


def module_daemon(tmp_path_factory: pytest.TempPathFactory,
                  config: dict[str, dict[str, Any]] | None = None) -> Iterator[DaemonProcess]:
    """The body of a module-scoped daemon fixture: start, yield, stop cleanly."""
    base = tmp_path_factory.mktemp("daemon")
    dp = DaemonProcess(base / "data", _require_models(), config or {}, base / "daemon.log")
    dp.data_dir.mkdir()
    dp.start()
    yield dp
    dp.close_clients()
    code = dp.stop()
    assert code == 0, f"daemon exited with {code} on SIGTERM:\n{dp.log()}"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon shared by a test module (starting one costs ~1 s plus model load)."""
    yield from module_daemon(tmp_path_factory)
