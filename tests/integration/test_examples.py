"""The Node and C example clients, run against a real daemon.

examples/node: `npm ci` (skipped when node_modules already matches the lock),
then its own `node --test` suite with RUVLLM_EDGE_ENDPOINT pointing at this
module's daemon. examples/c: built with its Makefile, then run for a streamed
answer, an error reply and a daemon that is not there.

Each half skips with the reason when its toolchain is missing (node/npm;
cc/make/pkg-config with libzmq and msgpack-c). CI installs them (.ci/run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, DaemonProcess, module_daemon

NODE_DIR = ROOT / "examples" / "node"
C_DIR = ROOT / "examples" / "c"
FINISH_REASONS = {"stop", "length", "deadline", "memory"}
# The Node suite checks that its client honours rate_limited: 160 requests at
# once must go over the burst, so this module's daemon runs with the limit a
# deployment might set for untrusted apps (the defaults are far above 160).
TIGHT_LIMIT = {"server": {"rate_limit_per_s": 50.0, "rate_limit_burst": 100}}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """This module's daemon: the default config with TIGHT_LIMIT."""
    yield from module_daemon(tmp_path_factory, TIGHT_LIMIT)


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def _lock_installed() -> bool:
    """Does node_modules hold exactly what package-lock.json pins? (npm keeps a copy.)"""
    try:
        want = json.loads((NODE_DIR / "package-lock.json").read_text())["packages"]
        have = json.loads((NODE_DIR / "node_modules" / ".package-lock.json").read_text())["packages"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return False
    want.pop("", None)
    return want == have


@pytest.fixture(scope="module")
def node_modules() -> Path:
    if missing := _missing("node", "npm"):
        pytest.skip(f"{' and '.join(missing)} not found: the Node example needs Node 20 and npm")
    if not _lock_installed():
        proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert _lock_installed()
    return NODE_DIR / "node_modules"


def _msgpack_module() -> str | None:
    for name in ("msgpack-c", "msgpack"):   # Debian 13 / Debian 12 names
        if subprocess.run(["pkg-config", "--exists", name]).returncode == 0:
            return name
    return None


@pytest.fixture(scope="module")
def c_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if missing := _missing("cc", "make", "pkg-config"):
        pytest.skip(f"{', '.join(missing)} not found: the C example needs a compiler, make and "
                    "pkg-config")
    if subprocess.run(["pkg-config", "--exists", "libzmq"]).returncode != 0:
        pytest.skip("libzmq not found by pkg-config: apt-get install libzmq3-dev")
    if _msgpack_module() is None:
        pytest.skip("msgpack-c not found by pkg-config: apt-get install libmsgpack-c-dev "
                    "(Debian 12: libmsgpack-dev)")
    exe = tmp_path_factory.mktemp("c-example") / "ruvllm-query"
    proc = subprocess.run(["make", "-s", "-C", str(C_DIR), f"BIN={exe}",
                           "CFLAGS=-O2 -Wall -Wextra -Werror -std=c11"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return exe


def _tap_counts(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail|skipped|cancelled) (\d+)$",
                                             out, re.M)}


def test_node_client_suite_passes_against_the_daemon(node_modules: Path,
                                                     daemon: DaemonProcess) -> None:
    env = dict(os.environ, RUVLLM_EDGE_ENDPOINT=daemon.endpoint)
    proc = subprocess.run(["node", "--test", "--test-reporter=tap"], cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    counts = _tap_counts(proc.stdout)
    assert proc.returncode == 0, out[-6000:] + "\n--- daemon log ---\n" + daemon.log()
    # Nothing skipped (the suite skips itself without an endpoint) and every case ran.
    assert counts.get("pass", 0) >= 9 and counts.get("fail") == 0, counts
    assert counts.get("skipped") == 0 and counts.get("cancelled") == 0, counts


def _run_c(exe: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout_s)


def test_c_client_prints_a_streamed_answer_and_the_finish_reason(c_client: Path,
                                                                 daemon: DaemonProcess) -> None:
    proc = _run_c(c_client, "-e", daemon.endpoint, "-n", "12", "What is the capital of France?")
    assert proc.returncode == 0, proc.stderr + daemon.log()
    answer, sep, finish = proc.stdout.rpartition("\nfinish_reason: ")
    assert sep, proc.stdout
    assert answer.strip(), proc.stdout
    assert finish.strip() in FINISH_REASONS
    assert proc.stderr == ""


def test_c_client_reads_the_endpoint_from_the_environment(c_client: Path,
                                                          daemon: DaemonProcess) -> None:
    proc = subprocess.run([str(c_client), "-n", "4", "Say hi."], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, RUVLLM_EDGE_ENDPOINT=daemon.endpoint))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\nfinish_reason: (stop|length|deadline|memory)\n$", proc.stdout), proc.stdout


def test_c_client_exits_1_with_the_code_of_an_error_reply(c_client: Path,
                                                         daemon: DaemonProcess) -> None:
    proc = _run_c(c_client, "-e", daemon.endpoint, "-n", "0", "hi")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert re.match(r"ruvllm-query: error bad_request: .*max_tokens", proc.stderr), proc.stderr
    proc = _run_c(c_client, "-e", daemon.endpoint, "")
    assert proc.returncode == 1 and "error bad_request: " in proc.stderr


def test_c_client_gives_up_when_no_daemon_answers(c_client: Path, tmp_path: Path) -> None:
    proc = _run_c(c_client, "-t", "1", "-e", f"ipc://{tmp_path}/absent.sock", "hi", timeout_s=30)
    assert proc.returncode == 3
    assert "no reply" in proc.stderr
    assert _run_c(c_client, timeout_s=30).returncode == 2   # usage
