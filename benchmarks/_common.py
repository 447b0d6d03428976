"""Shared by the benchmarks: a real daemon subprocess, percentiles, and saving figures.

Benchmarks import this module and ``_datasets``, never each other.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ruvllm_edge import fsutil  # noqa: E402
from ruvllm_edge.client import Client  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"


class BenchDaemon:
    """``ruvllm-edge serve`` on its own data dir and ipc socket, with a TOML config."""

    def __init__(self, data: Path, models_dir: Path, config_toml: str) -> None:
        self.data = data
        self.models_dir = models_dir
        self.cfg = data.parent / f"{data.name}.toml"
        self.log = data.parent / f"{data.name}.log"
        self.endpoint = f"ipc://{data}/ruvllm-edge.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.configure(config_toml)

    def configure(self, config_toml: str) -> None:
        self.cfg.write_text(config_toml)

    def spawn(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``ruvllm-edge serve`` and return at once (start-up timing polls on its own)."""
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ruvllm_edge.cli", "serve", "--config", str(self.cfg),
                 "--data-dir", str(self.data), "--models-dir", str(self.models_dir)],
                stdout=log, stderr=log, cwd=str(ROOT), env=env)
        return self.proc

    def start(self, wait_s: float = 120.0, until_loaded: bool = False) -> "BenchDaemon":
        self.spawn()
        assert self.proc is not None
        end = time.monotonic() + wait_s
        with Client(self.endpoint, timeout_s=1) as c:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise SystemExit(f"daemon exited with {self.proc.returncode}; see {self.log}")
                try:
                    h = c.health(timeout_s=1)
                    if not until_loaded or h["components"]["inference"]["state"] == "loaded":
                        return self
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                time.sleep(0.1)
        raise SystemExit(f"daemon not ready after {wait_s} s; see {self.log}")

    def client(self, timeout_s: float = 300.0) -> Client:
        return Client(self.endpoint, timeout_s=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(120)


def pct(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of xs."""
    return float(np.percentile(np.asarray(xs, dtype=float), q))


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays as plain JSON numbers and lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_results(results: dict[str, Any], out: str | Path, echo: bool = True) -> None:
    """Save the figures as JSON (benchmarks/results/ by default), atomically.

    ``echo`` prints the whole JSON too; a benchmark with a long per-item
    section prints its own summary instead.
    """
    text = json.dumps(results, indent=2, default=_plain) + "\n"
    if echo:
        print(text, end="")
    path = Path(out)
    fsutil.atomic_write(path, text, mode=0o644)   # results are meant to be shared
    print(f"saved {path}")


def pyplot() -> Any | None:
    """matplotlib.pyplot on the Agg backend, or None: it is a dev extra, so a
    benchmark without it saves its JSON and skips the PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e .[dev]); no PNG written")
        return None
    return plt


def save_figure(plt: Any, fig: Any, path: str | Path) -> None:
    """Lay out, write the PNG atomically beside the JSON, and close the figure."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    fsutil.atomic_write(Path(path), buf.getvalue(), mode=0o644)
    print(f"saved {path}")
